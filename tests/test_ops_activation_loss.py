"""relu, softmax, log_softmax, dropout, cross_entropy, nll_loss."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F


def _t(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def away_from_zero(rng, shape, low=0.1):
    """Values with |x| >= low: a 1e-6 step never crosses ReLU's kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, 2.0, size=shape)


# ---------------------------------------------------------------------------
# relu, softmax, log_softmax
# ---------------------------------------------------------------------------
def test_relu_forward_and_gradcheck(rng):
    x = away_from_zero(rng, (3, 4, 2))
    np.testing.assert_array_equal(F.relu(Tensor(x)).numpy(), np.maximum(x, 0))
    assert mg.gradcheck(F.relu, [_t(x)])


def test_relu_gradient_is_the_step_function():
    x = _t([-2.0, -0.5, 0.5, 3.0])
    F.relu(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1, 1])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax(rng, dim):
    x = rng.standard_normal((3, 4, 5))
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    ref = e / e.sum(axis=dim, keepdims=True)
    np.testing.assert_allclose(F.softmax(Tensor(x), dim).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(Tensor(x), dim).numpy(), np.log(ref), rtol=1e-12)
    assert mg.gradcheck(lambda a: F.softmax(a, dim), [_t(x)])
    assert mg.gradcheck(lambda a: F.log_softmax(a, dim), [_t(x)])


def test_softmax_is_stable_for_huge_logits():
    x = Tensor(np.array([[1000.0, 1001.0, -1000.0]], np.float32))
    p = F.softmax(x, 1).numpy()
    lp = F.log_softmax(x, 1).numpy()
    assert np.isfinite(p).all() and np.isfinite(lp).all()
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(lp[0, :2], [-1 - np.log1p(np.exp(-1)), -np.log1p(np.exp(-1))],
                               rtol=1e-5)


# ---------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------
def test_dropout_gradcheck_with_a_fixed_mask(rng):
    x = _t(rng.standard_normal((4, 6)))
    # a fresh generator with the same seed on every call: the same mask each time
    fn = lambda a: F.dropout(a, 0.4, True, generator=np.random.default_rng(7))  # noqa: E731
    assert mg.gradcheck(fn, [x])


def test_dropout_scales_kept_units_and_zeroes_the_rest(rng):
    x = rng.uniform(1, 2, (200, 50))
    y = F.dropout(Tensor(x), 0.3, True, generator=np.random.default_rng(1)).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / 0.7)
    assert abs(kept.mean() - 0.7) < 0.02                 # 10,000 Bernoulli(0.7) draws
    # the same mask as drawing uniform numbers >= p from the same seed
    expected = np.random.default_rng(1).random(x.shape) >= 0.3
    np.testing.assert_array_equal(kept, expected)


def test_dropout_draws_from_minigrads_generator(rng):
    x = Tensor(rng.standard_normal((8, 8)))
    mg.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    b = F.dropout(x, 0.5).numpy()
    mg.manual_seed(3)
    c = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_dropout_identity_and_extremes(rng):
    x = Tensor(rng.standard_normal((4, 5)))
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="dropout: p must be a probability"):
        F.dropout(x, 1.5)


# ---------------------------------------------------------------------------
# cross-entropy and NLL
# ---------------------------------------------------------------------------
def naive_cross_entropy(x, t):
    out = []
    for row, k in zip(x.astype(np.float64), t):
        out.append(-(row[k] - np.log(np.exp(row).sum())))
    return np.array(out)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_gradcheck(rng, reduction):
    x = rng.standard_normal((5, 4))
    t = np.array([0, 3, 1, 1, 2])
    per = naive_cross_entropy(x, t)
    ref = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(F.cross_entropy(Tensor(x), t, reduction).numpy(), ref, rtol=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, t, reduction), [_t(x)])
    assert mg.gradcheck(lambda a: F.nll_loss(F.log_softmax(a, 1), t, reduction), [_t(x)])
    assert mg.gradcheck(lambda a: F.nll_loss(a, t, reduction), [_t(x)])


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n(rng):
    x = rng.standard_normal((3, 5))
    t = Tensor(np.array([4, 0, 2]))                    # target as an integer Tensor
    xt = _t(x)
    F.cross_entropy(xt, t).backward()
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    p[np.arange(3), t.numpy()] -= 1
    np.testing.assert_allclose(xt.grad.numpy(), p / 3, rtol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    x = Tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32), requires_grad=True)
    loss = F.cross_entropy(x, np.array([1, 1]))
    assert np.isfinite(loss.item())
    np.testing.assert_allclose(loss.item(), 1000.0, rtol=1e-5)   # mean of 1000 and 1000
    loss.backward()
    assert np.isfinite(x.grad.numpy()).all()


def test_cross_entropy_matches_nll_of_log_softmax(rng):
    x = Tensor(rng.standard_normal((6, 3)))
    t = rng.integers(0, 3, 6)
    np.testing.assert_allclose(F.cross_entropy(x, t).numpy(),
                               F.nll_loss(F.log_softmax(x, 1), t).numpy(), rtol=1e-6)


def test_cross_entropy_errors():
    x = Tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"cross_entropy: target value\(s\) \[4, 7\] out of "
                                         r"range for 4 classes"):
        F.cross_entropy(x, np.array([4, 0, 7]))
    with pytest.raises(ValueError, match=r"cross_entropy: target value\(s\) \[-1\]"):
        F.cross_entropy(x, np.array([0, -1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: target of shape \(2,\) does not match "
                                         r"input of shape \(3, 4\)"):
        F.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"cross_entropy: target must hold integer class "
                                        r"indices, got dtype float"):
        F.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: expected input of shape \(N, C\)"):
        F.cross_entropy(Tensor(np.zeros(4, np.float32)), np.array([0]))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be one of"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match=r"nll_loss: target value\(s\) \[9\]"):
        F.nll_loss(x, np.array([9, 0, 1]))
