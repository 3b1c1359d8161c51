"""conv2d (im2col / GEMM / col2im) and linear: naive-loop oracles, gradcheck, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F
from minigrad.ops import conv as conv_ops


# ---------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------
def naive_conv2d(x, w, b, stride, padding):
    """Direct definition: one dot product per output element."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, k, ho, wo), dtype=np.float64)
    for i in range(n):
        for o in range(k):
            for y in range(ho):
                for z in range(wo):
                    patch = xp[i, :, y * sh:y * sh + kh, z * sw:z * sw + kw]
                    out[i, o, y, z] = np.sum(patch.astype(np.float64) * w[o]) + (
                        0.0 if b is None else b[o])
    return out


def _close(actual, expected, rtol=1e-5):
    """Relative agreement at the scale of the output (float32 sums)."""
    expected = np.asarray(expected, dtype=np.float64)
    np.testing.assert_allclose(actual, expected, rtol=rtol,
                               atol=rtol * max(np.abs(expected).max(), 1e-30))


def _t(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---------------------------------------------------------------------------
# forward against the naive loops (float32)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,h,w,k,kh,kw,stride,padding,bias", [
    (2, 3, 8, 8, 4, 3, 3, (1, 1), (1, 1), True),
    (1, 2, 9, 7, 3, 3, 3, (2, 2), (0, 0), False),
    (2, 3, 11, 10, 2, 7, 7, (2, 2), (3, 3), True),      # ResNet stem shape
    (3, 4, 5, 6, 5, 1, 1, (1, 1), (0, 0), True),        # 1x1 projection
    (2, 4, 7, 9, 3, 1, 1, (2, 2), (0, 0), False),       # 1x1 stride-2 shortcut
    (1, 2, 6, 9, 2, 2, 3, (1, 2), (0, 1), True),        # non-square kernel/stride/pad
])
def test_conv2d_forward_matches_naive_loops(rng, n, c, h, w, k, kh, kw, stride, padding, bias):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, kh, kw)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32) if bias else None
    y = F.conv2d(Tensor(x), Tensor(wt), None if b is None else Tensor(b), stride, padding)
    assert y.dtype == np.float32
    _close(y.numpy(), naive_conv2d(x, wt, b, stride, padding))


def test_im2col_layout(rng):
    x = rng.standard_normal((2, 3, 5, 4))
    cols = conv_ops.im2col(x, 3, 2, (2, 1), (1, 0))
    ho, wo = (5 + 2 - 3) // 2 + 1, (4 - 2) // 1 + 1
    assert cols.shape == (3 * 3 * 2, 2 * ho * wo)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    for (c, i, j, n, oy, ox) in [(0, 0, 0, 0, 0, 0), (2, 1, 1, 1, 2, 2), (1, 2, 0, 1, 1, 0)]:
        row = (c * 3 + i) * 2 + j
        col = (n * ho + oy) * wo + ox
        assert cols[row, col] == xp[n, c, oy * 2 + i, ox + j]


@pytest.mark.parametrize("shape,kh,kw,stride,padding", [
    ((2, 3, 6, 5), 3, 3, (1, 1), (1, 1)),
    ((1, 2, 9, 8), 7, 7, (2, 2), (3, 3)),
    ((2, 2, 5, 7), 2, 3, (2, 1), (0, 2)),
])
def test_col2im_is_the_adjoint_of_im2col(rng, shape, kh, kw, stride, padding):
    """<im2col(x), c> == <x, col2im(c)> for random x, c: col2im is exactly the
    transpose of the linear map im2col."""
    x = rng.standard_normal(shape)
    cols = conv_ops.im2col(x, kh, kw, stride, padding)
    c = rng.standard_normal(cols.shape)
    back = conv_ops.col2im(c, shape, kh, kw, stride, padding)
    assert back.shape == shape
    np.testing.assert_allclose((cols * c).sum(), (x * back).sum(), rtol=1e-10)


# ---------------------------------------------------------------------------
# gradients (float64 central differences)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("n,c,h,w,k,kh,kw,stride,padding,bias", [
    (2, 2, 5, 4, 3, 3, 3, 1, 1, True),
    (1, 2, 6, 5, 2, 3, 3, 2, 1, False),
    (2, 3, 4, 5, 2, 1, 1, 1, 0, True),
    (1, 2, 5, 5, 2, 1, 1, 2, 0, True),
    (1, 1, 9, 8, 2, 7, 7, 2, 3, True),
    (2, 1, 5, 6, 2, 3, 2, (2, 1), (0, 1), True),
])
def test_conv2d_gradcheck(rng, n, c, h, w, k, kh, kw, stride, padding, bias):
    x = _t(rng.standard_normal((n, c, h, w)))
    wt = _t(rng.standard_normal((k, c, kh, kw)))
    inputs = [x, wt]
    if bias:
        inputs.append(_t(rng.standard_normal(k)))
    assert mg.gradcheck(lambda *a: F.conv2d(*a, stride=stride, padding=padding), inputs)


def test_conv2d_gradient_of_one_input_only(rng):
    """Asking for dx only (frozen weights) or dW only still gives the right one."""
    x = _t(rng.standard_normal((1, 2, 4, 4)))
    w = _t(rng.standard_normal((2, 2, 3, 3)), grad=False)
    assert mg.gradcheck(lambda a: F.conv2d(a, w, padding=1), [x])
    x2 = _t(rng.standard_normal((1, 2, 4, 4)), grad=False)
    w2 = _t(rng.standard_normal((2, 2, 3, 3)))
    assert mg.gradcheck(lambda b: F.conv2d(x2, b, stride=2), [w2])


@settings(max_examples=6, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 2), k=st.integers(1, 2),
       kh=st.sampled_from([1, 2, 3]), kw=st.sampled_from([1, 3]),
       sh=st.integers(1, 2), sw=st.integers(1, 2), ph=st.integers(0, 2), pw=st.integers(0, 1),
       h=st.integers(3, 6), w=st.integers(3, 6), bias=st.booleans(), seed=st.integers(0, 99))
def test_conv2d_random_shapes(n, c, k, kh, kw, sh, sw, ph, pw, h, w, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, kh, kw))
    b = rng.standard_normal(k) if bias else None
    y = F.conv2d(Tensor(x), Tensor(wt), None if b is None else Tensor(b), (sh, sw), (ph, pw))
    np.testing.assert_allclose(y.numpy(), naive_conv2d(x, wt, b, (sh, sw), (ph, pw)),
                               rtol=1e-10, atol=1e-10)
    inputs = [_t(x), _t(wt)] + ([_t(b)] if bias else [])
    assert mg.gradcheck(lambda *a: F.conv2d(*a, stride=(sh, sw), padding=(ph, pw)), inputs)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_conv2d_channel_mismatch_message():
    x = Tensor(np.zeros((2, 4, 32, 32), np.float32))
    w = Tensor(np.zeros((16, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: input has 4 channels but weight expects 3 "
                                         r"\(input shape \(2, 4, 32, 32\), weight shape "
                                         r"\(16, 3, 3, 3\)\)"):
        F.conv2d(x, w)


def test_conv2d_rejects_non_4d_input():
    w = Tensor(np.zeros((16, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: expected a 4-D input.*\(3, 32, 32\)"):
        F.conv2d(Tensor(np.zeros((3, 32, 32), np.float32)), w)


def test_conv2d_kernel_larger_than_padded_input():
    x = Tensor(np.zeros((1, 3, 4, 4), np.float32))
    w = Tensor(np.zeros((2, 3, 7, 7), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: kernel .*larger than the padded input.*"
                                         r"\(1, 3, 4, 4\).*\(2, 3, 7, 7\)"):
        F.conv2d(x, w, padding=1)
    assert F.conv2d(x, w, padding=2).shape == (1, 2, 2, 2)     # 4 + 4 - 7 + 1


def test_conv2d_bad_bias_and_stride():
    x = Tensor(np.zeros((1, 3, 4, 4), np.float32))
    w = Tensor(np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(2,\)"):
        F.conv2d(x, w, Tensor(np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="conv2d: stride must be positive"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(TypeError, match="conv2d: stride"):
        F.conv2d(x, w, stride=1.5)


# ---------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------
def test_linear_forward_and_gradcheck(rng):
    x = rng.standard_normal((4, 5))
    w = rng.standard_normal((3, 5))
    b = rng.standard_normal(3)
    np.testing.assert_allclose(F.linear(Tensor(x), Tensor(w), Tensor(b)).numpy(),
                               x @ w.T + b, rtol=1e-12)
    assert mg.gradcheck(F.linear, [_t(x), _t(w), _t(b)])
    assert mg.gradcheck(F.linear, [_t(x), _t(w)])
    # leading batch axes
    x3 = rng.standard_normal((2, 3, 5))
    assert mg.gradcheck(F.linear, [_t(x3), _t(w), _t(b)])


def test_linear_width_mismatch_message():
    x = Tensor(np.zeros((8, 10), np.float32))
    w = Tensor(np.zeros((4, 12), np.float32))
    with pytest.raises(ValueError, match=r"linear: input has 10 features .* weight expects 12 "
                                         r"\(input shape \(8, 10\), weight shape \(4, 12\)\)"):
        F.linear(x, w)
    with pytest.raises(ValueError, match=r"linear: bias must have shape \(4,\)"):
        F.linear(Tensor(np.zeros((8, 12), np.float32)), w, Tensor(np.zeros(5, np.float32)))
