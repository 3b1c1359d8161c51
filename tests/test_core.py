"""The autograd engine: gradients, graph life-cycle, dtypes, gradcheck, graph view."""
import time

import numpy as np
import pytest

import minigrad as mg
from minigrad import Function, GradcheckError, Tensor


def leaf(a):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=True)


# ---- broadcasting and accumulation --------------------------------------------
def test_broadcasting_gradients_sum_over_stretched_axes():
    rng = np.random.default_rng(0)
    a, b, c = rng.standard_normal((3, 1)), rng.standard_normal((4,)), rng.standard_normal((2, 3, 4))
    x, y, z = leaf(a), leaf(b), leaf(c)
    out = (x * y + z) * 2.0        # (2, 3, 4)
    out.sum().backward()
    # d/dx = Σ over (batch, last axis) of 2*y; d/dy = Σ over (batch, rows) of 2*x
    np.testing.assert_allclose(x.grad.numpy(), np.full((3, 1), 2 * 2 * b.sum()))
    np.testing.assert_allclose(y.grad.numpy(), np.full((4,), 2 * 2 * a.sum()))
    np.testing.assert_allclose(z.grad.numpy(), np.full((2, 3, 4), 2.0))
    assert x.grad.shape == (3, 1) and y.grad.shape == (4,)


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, -2.0, 3.0]) + 3)
    x.zero_grad()
    assert x.grad is None


def test_shared_input_gradients_add_up():
    x = leaf([2.0])
    y = x * x * x            # x used three times
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [12.0])


# ---- graph control -------------------------------------------------------------
def test_no_grad_records_nothing():
    x = leaf([1.0, 2.0])
    with mg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert mg.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_detach_cuts_the_graph_and_shares_memory():
    x = leaf([1.0, 2.0])
    d = (x * 3).detach()
    assert not d.requires_grad and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0])   # d treated as a constant
    e = x.detach()
    e.data[0] = 10.0
    assert x.data[0] == 10.0


def test_retain_grad_keeps_intermediate_gradient():
    x = leaf([1.0, 2.0])
    h = x * 3
    h.retain_grad()
    k = x * 5                # no retain_grad: its gradient is not kept
    (h * h + k).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * np.array([3.0, 6.0]))
    assert k.grad is None


def test_register_hook_sees_and_can_replace_gradient():
    x = leaf([1.0, 2.0])
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    h.register_hook(lambda g: g * 0 + 1.0)      # replace dL/dh by ones
    (h * h).sum().backward()
    np.testing.assert_allclose(seen[0], [6.0, 12.0])
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 3.0])   # 1 * dh/dx


def test_hook_removal():
    x = leaf([1.0])
    handle = x.register_hook(lambda g: g * 10)
    handle.remove()
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0])


class _Record(Function):
    """y = 2x that notes in ``log`` when its backward runs."""

    def __init__(self, log, name):
        self.log, self.label = log, name

    def forward(self, x):
        return 2 * x

    def backward(self, g):
        self.log.append(("backward", self.label))
        return 2 * g


def test_post_accumulate_hook_fires_once_with_the_final_grad_right_after_the_last_user():
    # x0 -> [layer 1: W1 used twice] -> [layer 2: W2] -> loss.  W2's hook must run
    # before layer 1's backward (the last layer is done first), W1's after its
    # last use, each once per backward, seeing .grad complete.
    log = []
    x0 = leaf([1.0, -2.0])
    w1, w2 = leaf([0.5, 0.25]), leaf([3.0, -1.0])
    for name, w in (("w1", w1), ("w2", w2)):
        w.register_post_accumulate_grad_hook(
            lambda t, name=name: log.append(("hook", name, t.grad.numpy().copy())))
    h1 = _Record(log, "layer1")(x0 * w1) * w1            # w1 used by two ops
    loss = (_Record(log, "layer2")(h1) * w2).sum()
    loss.backward()
    events = [e[:2] for e in log]
    assert events == [("hook", "w2"), ("backward", "layer2"), ("backward", "layer1"),
                      ("hook", "w1")]
    # d/dw2 = 2·h1 = 2·(2·x0·w1)·w1; d/dw1 = 2·w2·2·(2·x0·w1) = 8·w2·x0·w1
    np.testing.assert_allclose(log[0][2], 4 * x0.numpy() * w1.numpy() ** 2)
    np.testing.assert_allclose(log[-1][2], 8 * w2.numpy() * x0.numpy() * w1.numpy())
    np.testing.assert_array_equal(log[-1][2], w1.grad.numpy())


def test_post_accumulate_hook_sees_accumulated_grad_and_can_be_removed():
    w = leaf([1.0, 2.0])
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (w * 3).sum().backward()
    (w * 3).sum().backward()                 # .grad accumulates: the hook sees 6
    handle.remove()
    (w * 3).sum().backward()
    np.testing.assert_allclose(seen, [[3.0, 3.0], [6.0, 6.0]])
    with pytest.raises(RuntimeError, match="only leaf tensors"):
        (w * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_graph_is_freed_after_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)


def test_long_chain_backward_has_no_recursion_limit():
    x = leaf([0.5])
    y = x
    start = time.perf_counter()
    for _ in range(5000):
        y = y * 1.0001 + 0.0
    y.sum().backward()
    elapsed = time.perf_counter() - start
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5000], rtol=1e-10)
    assert elapsed < 30, f"5,000-op chain took {elapsed:.1f} s"


# ---- NumPy interop, scalars, dtypes -------------------------------------------------------
def test_numpy_interop():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = Tensor(a, requires_grad=True)
    assert isinstance(np.asarray(x), np.ndarray)
    np.testing.assert_array_equal(np.asarray(x), a)
    np.testing.assert_array_equal(x.numpy(), a)
    (x * x).sum().backward()
    g = np.asarray(x.grad)
    assert isinstance(g, np.ndarray) and g.dtype == np.float32
    np.testing.assert_allclose(g, 2 * a)


def test_scalar_lifting():
    x = leaf([1.0, 2.0, 4.0])
    np.testing.assert_allclose((2 * x).numpy(), [2, 4, 8])
    np.testing.assert_allclose((x / 4).numpy(), [0.25, 0.5, 1.0])
    np.testing.assert_allclose((1 - x).numpy(), [0, -1, -3])
    np.testing.assert_allclose((1 / x).numpy(), [1, 0.5, 0.25])
    (2 * x + x / 4 + (1 - x)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 2 + 0.25 - 1))


def test_dtype_rules():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float64            # arrays keep their dtype
    x32 = Tensor(np.ones(2, np.float32), requires_grad=True)
    assert (x32 * 2.5).dtype == np.float32                    # Python scalars don't promote
    assert (x32 / 3).dtype == np.float32
    x64 = leaf([1.0, 2.0])
    assert (x64 * 2.5 + 1).dtype == np.float64
    (x64 * 2.5).sum().backward()
    assert x64.grad.dtype == np.float64
    with pytest.raises(TypeError):
        Tensor(np.arange(3), requires_grad=True)              # ints cannot require grad


# ---- gradcheck -------------------------------------------------------------------------
class _WrongSquare(Function):
    """y = x²  with a deliberately wrong backward (3x instead of 2x)."""
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return g * 3 * self.x


def test_gradcheck_passes_on_correct_function():
    rng = np.random.default_rng(1)
    x, w = leaf(rng.standard_normal((3, 4))), leaf(rng.standard_normal((4, 2)))
    assert mg.gradcheck(lambda a, b: (a @ b).tanh() * a.sum(), [x, w]) is True


def test_gradcheck_raises_with_index_and_values_on_wrong_backward():
    x = leaf([[0.5, -1.0], [2.0, 1.5]])
    with pytest.raises(GradcheckError) as info:
        mg.gradcheck(lambda t: _WrongSquare()(t), [x])
    msg = str(info.value)
    # every element is wrong: analytic 3x·r vs numeric 2x·r; the report names
    # the worst index and both values
    assert "analytic" in msg and "numeric" in msg
    r = np.random.default_rng(0).standard_normal((2, 2))
    an, nu = 3 * x.numpy() * r, 2 * x.numpy() * r
    worst = np.unravel_index(np.argmax(np.abs(an - nu)), (2, 2))
    assert str(tuple(int(i) for i in worst)) in msg
    assert f"{an[worst]:.7g}" in msg and f"{nu[worst]:.6g}"[:6] in msg


def test_gradcheck_refuses_float32():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="float64"):
        mg.gradcheck(lambda t: t * t, [x])


# ---- graph view -----------------------------------------------------------------------------
def test_format_graph_shows_ops_shapes_and_grad_norms():
    w = Tensor(np.full((2, 3), 0.5), requires_grad=True, name="w")
    x = Tensor(np.ones((3, 4)))
    with mg.retain_grads():
        y = (w @ x).exp().sum()
    y.backward(retain_graph=True)
    text = mg.format_graph(y)
    for op in ("Sum", "Exp", "MatMul"):
        assert op in text
    assert "(2, 4)" in text and "(2, 3)" in text and "'w'" in text
    assert f"|grad|={np.linalg.norm(w.grad.numpy()):.4g}" in text
