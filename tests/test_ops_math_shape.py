"""Gradient checks of the arithmetic, reduction and shape ops (minigrad/ops/math.py,
minigrad/ops/shape.py), with forward values against NumPy."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor
from minigrad.ops import math as M
from minigrad.ops import shape as S


def _t(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---------------------------------------------------------------------------
# binary arithmetic with broadcasting
# ---------------------------------------------------------------------------
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 1), (4,)), ((2, 3, 4), (3, 1)), ((1,), (2, 3)),
                    ((), (2, 2))]


@pytest.mark.parametrize("a_shape,b_shape", BROADCAST_SHAPES)
@pytest.mark.parametrize("name,ref", [("add", np.add), ("sub", np.subtract),
                                      ("mul", np.multiply), ("div", np.divide)])
def test_binary_ops_broadcast(rng, a_shape, b_shape, name, ref):
    a = rng.standard_normal(a_shape)
    b = rng.uniform(0.5, 2.0, b_shape) * rng.choice([-1, 1], b_shape)   # no division by ~0
    op = getattr(M, name)
    out = op(Tensor(a), Tensor(b))
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12)
    assert mg.gradcheck(op, [_t(a), _t(b)])


def test_operators_with_python_scalars(rng):
    x = rng.uniform(0.5, 2.0, (2, 3))
    assert mg.gradcheck(lambda a: (2.0 - a) * 3.0 / (a + 1.0) - 1.0 / a, [_t(x)])
    assert mg.gradcheck(lambda a: -a ** 3, [_t(x)])


# ---------------------------------------------------------------------------
# unary ops
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("fn,ref,low", [
    (lambda a: M.pow(a, 2.5), lambda a: a ** 2.5, 0.5),
    (lambda a: M.pow(a, -1), lambda a: 1 / a, 0.5),
    (M.exp, np.exp, -2.0),
    (M.log, np.log, 0.2),
    (M.sqrt, np.sqrt, 0.2),
    (M.tanh, np.tanh, -2.0),
    (M.sigmoid, lambda a: 1 / (1 + np.exp(-a)), -2.0),
])
def test_unary_ops(rng, fn, ref, low):
    x = rng.uniform(low, 2.0, (3, 4))
    np.testing.assert_allclose(fn(Tensor(x)).numpy(), ref(x), rtol=1e-12)
    assert mg.gradcheck(fn, [_t(x)])


def test_abs_away_from_zero(rng):
    x = rng.choice([-1, 1], (3, 3)) * rng.uniform(0.1, 1, (3, 3))
    assert mg.gradcheck(M.abs, [_t(x)])


@pytest.mark.parametrize("a_shape,b_shape", [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)),
                                             ((2, 3, 4), (2, 4, 2)), ((1, 3, 4), (2, 4, 2))])
def test_matmul(rng, a_shape, b_shape):
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(M.matmul(Tensor(a), Tensor(b)).numpy(), a @ b, rtol=1e-12)
    assert mg.gradcheck(M.matmul, [_t(a), _t(b)])


def test_matmul_inner_size_error():
    with pytest.raises(ValueError, match=r"matmul: inner sizes differ: \(2, 3\) @ \(4, 2\)"):
        M.matmul(Tensor(np.zeros((2, 3))), Tensor(np.zeros((4, 2))))


# ---------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean_max(rng, dim, keepdim):
    shape = (2, 3, 4)
    x = (rng.permutation(24).reshape(shape) - 12) * 0.1        # distinct: no max ties
    for op, ref in [(M.sum, np.sum), (M.mean, np.mean), (M.max, np.max)]:
        out = op(Tensor(x), dim, keepdim)
        np.testing.assert_allclose(out.numpy(), ref(x, axis=dim, keepdims=keepdim), rtol=1e-12)
        assert mg.gradcheck(lambda a: op(a, dim, keepdim), [_t(x)])


def test_max_shares_gradient_between_ties():
    x = _t([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])
    M.max(x, 1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0.5, 0.5], [1, 0, 0]])


# ---------------------------------------------------------------------------
# shape ops
# ---------------------------------------------------------------------------
def test_reshape_flatten_permute_transpose(rng):
    x = rng.standard_normal((2, 3, 4))
    cases = [
        (lambda a: S.reshape(a, 4, -1), lambda a: a.reshape(4, -1)),
        (lambda a: S.reshape(a, (6, 4)), lambda a: a.reshape(6, 4)),
        (lambda a: S.flatten(a, 1), lambda a: a.reshape(2, 12)),
        (lambda a: S.permute(a, 2, 0, 1), lambda a: a.transpose(2, 0, 1)),
        (lambda a: S.transpose(a, 0, 2), lambda a: a.swapaxes(0, 2)),
        (lambda a: a.T, lambda a: a.T),
    ]
    r = rng.standard_normal((2, 3, 4))
    for fn, ref in cases:
        np.testing.assert_array_equal(fn(Tensor(x)).numpy(), ref(x))
        # permutation ops need a non-uniform weighting to be checked: multiply by r
        assert mg.gradcheck(lambda a: fn(a * Tensor(r)), [_t(x)])


@pytest.mark.parametrize("shape,index", [
    ((3, 4), (slice(None), 1)),
    ((3, 2, 4), (0, slice(1, 2), slice(None, None, 2))),
    ((3, 4), (np.array([0, 2, 2]),)),                      # repeated rows: gradients add
    ((3, 2, 4), (np.array([1, 0]), slice(None), np.array([3, 1]))),
    ((3, 2, 4), (Ellipsis, np.array([True, False, True, True]))),   # boolean mask
    ((3, 4), (slice(None, None, -1),)),
])
def test_getitem(rng, shape, index):
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(S.getitem(Tensor(x), index).numpy(), x[index])
    assert mg.gradcheck(lambda a: a[index], [_t(x)])


def test_getitem_repeated_indices_accumulate():
    x = _t([1.0, 2.0, 3.0])
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 0, 1])


def test_pad(rng):
    x = rng.standard_normal((1, 2, 3, 3))
    y = S.pad(Tensor(x), (1, 2, 0, 1), value=0.5)
    np.testing.assert_array_equal(y.numpy(), np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)),
                                                    constant_values=0.5))
    assert mg.gradcheck(lambda a: S.pad(a, (1, 1, 2, 0)), [_t(x)])
    with pytest.raises(ValueError, match="pad: needs pairs"):
        S.pad(Tensor(x), (1, 2, 3))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_and_stack(rng, dim):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    np.testing.assert_array_equal(S.cat([Tensor(a), Tensor(b)], dim).numpy(),
                                  np.concatenate([a, b], dim))
    np.testing.assert_array_equal(S.stack([Tensor(a), Tensor(b)], dim).numpy(),
                                  np.stack([a, b], dim))
    assert mg.gradcheck(lambda x, y: S.cat([x, y], dim), [_t(a), _t(b)])
    assert mg.gradcheck(lambda x, y: S.stack([x, y], dim), [_t(a), _t(b)])


def test_cat_different_sizes_along_dim(rng):
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 5))
    assert mg.gradcheck(lambda x, y: S.cat([x, y], 1), [_t(a), _t(b)])
