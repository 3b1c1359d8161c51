"""max_pool2d, avg_pool2d, adaptive_avg_pool2d: naive-loop oracles, gradcheck, errors."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F


def distinct(rng, shape, spacing=0.1):
    """Shuffled distinct values `spacing` apart: no ties in any window, and a
    finite-difference step of 1e-6 cannot change which element is the max."""
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) - n / 2) * spacing


def naive_pool(x, k, s, p, reduce, pad_value):
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, ho, wo), np.float64)
    for i in range(n):
        for ch in range(c):
            for y in range(ho):
                for z in range(wo):
                    out[i, ch, y, z] = reduce(xp[i, ch, y * sh:y * sh + kh, z * sw:z * sw + kw])
    return out


def naive_adaptive(x, oh, ow):
    n, c, h, w = x.shape
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        h0, h1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
        for j in range(ow):
            w0, w1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


POOL_CASES = [   # kernel, stride, padding, input shape
    ((2, 2), None, (0, 0), (2, 3, 6, 8)),
    ((3, 3), (2, 2), (1, 1), (1, 2, 7, 6)),
    ((3, 3), (1, 1), (1, 1), (2, 2, 5, 5)),
    ((2, 3), (1, 2), (1, 0), (1, 2, 5, 7)),
    ((3, 3), (2, 2), (0, 0), (1, 1, 7, 7)),       # AlexNet-style overlapping windows
]


def _args(k, s, p):
    return k, (k if s is None else s), p


@pytest.mark.parametrize("k,s,p,shape", POOL_CASES)
def test_max_pool2d_forward_matches_naive(rng, k, s, p, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.max_pool2d(Tensor(x), k, s, p)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), naive_pool(x, *_args(k, s, p), np.max, -np.inf),
                               rtol=1e-5)


@pytest.mark.parametrize("k,s,p,shape", POOL_CASES)
def test_avg_pool2d_forward_matches_naive(rng, k, s, p, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    y = F.avg_pool2d(Tensor(x), k, s, p)
    # count_include_pad: the zeros of the padding count in the mean
    np.testing.assert_allclose(y.numpy(), naive_pool(x, *_args(k, s, p), np.mean, 0.0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,s,p,shape", POOL_CASES)
def test_pool_gradcheck(rng, k, s, p, shape):
    x = Tensor(distinct(rng, shape), requires_grad=True)
    assert mg.gradcheck(lambda a: F.max_pool2d(a, k, s, p), [x])
    assert mg.gradcheck(lambda a: F.avg_pool2d(a, k, s, p), [x])


def test_max_pool2d_gradient_goes_to_the_argmax():
    x = Tensor(np.array([[[[1., 5., 2., 0.],
                           [3., 4., 8., 7.]]]]), requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0, 1, 0, 0], [0, 0, 1, 0]]]])


def test_max_pool2d_padding_is_minus_infinity():
    x = Tensor(-np.arange(1.0, 10.0).reshape(1, 1, 3, 3))        # all negative
    y = F.max_pool2d(x, 3, 1, 1).numpy()
    assert y.max() < 0                                            # zero padding would win
    np.testing.assert_allclose(y[0, 0, 0, 0], -1.0)


@pytest.mark.parametrize("shape,out", [
    ((2, 3, 6, 4), (3, 2)),          # divisible: equal blocks
    ((1, 2, 5, 7), (3, 4)),          # not divisible: overlapping bins
    ((2, 2, 5, 3), 1),               # global average pool
    ((1, 2, 4, 6), (4, 6)),          # identity
    ((1, 1, 7, 5), (2, 5)),          # mixed
])
def test_adaptive_avg_pool2d(rng, shape, out):
    x = rng.standard_normal(shape)
    oh, ow = (out, out) if isinstance(out, int) else out
    y = F.adaptive_avg_pool2d(Tensor(x.astype(np.float32)), out)
    assert y.shape == shape[:2] + (oh, ow)
    np.testing.assert_allclose(y.numpy(), naive_adaptive(x, oh, ow), rtol=1e-5, atol=1e-6)
    assert mg.gradcheck(lambda a: F.adaptive_avg_pool2d(a, out), [Tensor(x, requires_grad=True)])


def test_adaptive_avg_pool2d_none_keeps_size(rng):
    x = rng.standard_normal((1, 2, 4, 6))
    y = F.adaptive_avg_pool2d(Tensor(x), (2, None))
    np.testing.assert_allclose(y.numpy(), naive_adaptive(x, 2, 6))


def test_pool_errors():
    x3 = Tensor(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: expected a 4-D input .*\(3, 8, 8\)"):
        F.max_pool2d(x3, 2)
    with pytest.raises(ValueError, match=r"avg_pool2d: expected a 4-D input"):
        F.avg_pool2d(x3, 2)
    with pytest.raises(ValueError, match=r"adaptive_avg_pool2d: expected a 4-D input"):
        F.adaptive_avg_pool2d(x3, 1)
    x = Tensor(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"max_pool2d: window \(3, 3\) is larger"):
        F.max_pool2d(x, 3)
    with pytest.raises(ValueError, match=r"max_pool2d: padding should be at most half"):
        F.max_pool2d(x, 2, 1, 2)
