"""Pooling: max, average and adaptive average over 2-D windows (NCHW).

Like :mod:`minigrad.ops.conv`, the windowed pools loop over the kh·kw offsets
of the window, never over pixels: for offset (i, j) the strided slice
``x_pad[:, :, i::sh, j::sw]`` (cut to Ho x Wo) holds that element of every
window at once.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from .. import cuda as _gpu   # GPU kernels (kernels/maxpool.cu); imports CuPy only when used
from ..tensor import Function, data_of
from .conv import _pad_hw, _window, conv_output_size, pair


def _check_pool(who, x, kernel_size, stride, padding):
    k = pair(kernel_size, "kernel_size", who)
    s = k if stride is None else pair(stride, "stride", who)
    p = pair(padding, "padding", who)
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"{who}: expected a 4-D input (N, C, H, W), got shape {shape}")
    if min(k) <= 0 or min(s) <= 0 or min(p) < 0:
        raise ValueError(f"{who}: kernel_size and stride must be positive and padding >= 0, "
                         f"got kernel_size={k}, stride={s}, padding={p}")
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"{who}: padding should be at most half of kernel_size, "
                         f"got kernel_size={k}, padding={p}")
    if shape[2] + 2 * p[0] < k[0] or shape[3] + 2 * p[1] < k[1]:
        raise ValueError(f"{who}: window {k} is larger than the padded input "
                         f"({shape[2] + 2 * p[0]}, {shape[3] + 2 * p[1]}) (input shape {shape})")
    return k, s, p


class MaxPool2d(Function):
    """y[n, c, oy, ox] = max_{i,j} x_pad[n, c, oy·sh + i, ox·sw + j], where the
    padding is −∞ (it never wins).

    Backward: the whole gradient of an output goes to the position of its
    maximum (the first one on a tie); positions that are the maximum of several
    overlapping windows collect the sum.
    """

    def __init__(self, kernel_size, stride, padding):
        self.k, self.s, self.p = kernel_size, stride, padding

    def forward(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        n, c, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        xpad = _pad_hw(x, ph, pw, value=-np.inf)
        best = _window(xpad, 0, 0, ho, wo, sh, sw).copy()
        arg = xp.zeros(best.shape, dtype=np.int32)      # which offset i·kw + j won
        for i in range(kh):
            for j in range(kw):
                if i == 0 and j == 0:
                    continue
                v = _window(xpad, i, j, ho, wo, sh, sw)
                better = v > best
                best = xp.where(better, v, best)
                arg[better] = i * kw + j
        if self.needs_input_grad[0]:
            self.arg, self.x_shape = arg, x.shape
        return best

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        n, c, h, w = self.x_shape
        ho, wo = grad.shape[2:]
        gpad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
        for i in range(kh):
            for j in range(kw):
                _window(gpad, i, j, ho, wo, sh, sw)[...] += grad * (self.arg == i * kw + j)
        return gpad[:, :, ph:ph + h, pw:pw + w]


class MaxPool2dFast(MaxPool2d):
    """CPU fast path (kernels/cpu_numba.py): one pass that keeps the flat index
    of each window's maximum; backward scatters the gradient there."""

    def forward(self, x):
        y, self.idx = config.cpu_kernels().max_pool2d_forward(x, self.k, self.s, self.p)
        self.x_shape = x.shape
        return y

    def backward(self, grad):
        return config.cpu_kernels().max_pool2d_backward(grad, self.idx, self.x_shape)


class MaxPool2dCuda(MaxPool2d):
    """GPU path for float32 CuPy arrays: one thread per output (kernels/maxpool.cu)."""

    def forward(self, x):
        y, arg = _gpu.maxpool2d_forward(x, self.k, self.s, self.p)
        if self.needs_input_grad[0]:
            self.arg, self.x_shape = arg, x.shape
        return y

    def backward(self, grad):
        return _gpu.maxpool2d_backward(grad, self.arg, self.x_shape, self.k, self.s, self.p)


class AvgPool2d(Function):
    """y[n, c, oy, ox] = (1 / (kh·kw)) Σ_{i,j} x_pad[n, c, oy·sh + i, ox·sw + j]
    with zero padding that counts in the divisor (PyTorch's default
    ``count_include_pad=True``).

    Backward: each input of a window receives g / (kh·kw) from it.
    """

    def __init__(self, kernel_size, stride, padding):
        self.k, self.s, self.p = kernel_size, stride, padding

    def forward(self, x):
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        n, c, h, w = x.shape
        ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        xpad = _pad_hw(x, ph, pw)
        total = _window(xpad, 0, 0, ho, wo, sh, sw).copy()
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    total += _window(xpad, i, j, ho, wo, sh, sw)
        self.x_shape = x.shape
        return total / x.dtype.type(kh * kw)

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        (kh, kw), (sh, sw), (ph, pw) = self.k, self.s, self.p
        n, c, h, w = self.x_shape
        ho, wo = grad.shape[2:]
        share = grad / grad.dtype.type(kh * kw)
        gpad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad.dtype)
        for i in range(kh):
            for j in range(kw):
                _window(gpad, i, j, ho, wo, sh, sw)[...] += share
        return gpad[:, :, ph:ph + h, pw:pw + w]


def adaptive_bins(size, out):
    """PyTorch's adaptive bins: bin i covers [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    """Average over bins chosen so the output is exactly (oh, ow):
    bin i of an axis of length H covers rows ⌊i·H/oh⌋ … ⌈(i+1)·H/oh⌉ − 1
    (bins may overlap by one row when oh does not divide H).

    When oh divides H and ow divides W the bins are equal blocks, and the op is
    a reshape and a mean (output 1 is the global average pool of ResNet).
    Backward: each input of a bin receives g / (size of the bin).
    """

    def __init__(self, output_size):
        self.out = output_size

    def forward(self, x):
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        oh, ow = self.out
        self.x_shape = x.shape
        self.divisible = h % oh == 0 and w % ow == 0
        if self.divisible:
            return x.reshape(n, c, oh, h // oh, ow, w // ow).mean(axis=(3, 5))
        y = xp.empty((n, c, oh, ow), dtype=x.dtype)
        for i, (h0, h1) in enumerate(adaptive_bins(h, oh)):
            for j, (w0, w1) in enumerate(adaptive_bins(w, ow)):
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        return y

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        n, c, h, w = self.x_shape
        oh, ow = self.out
        if self.divisible:
            bh, bw = h // oh, w // ow
            g = grad.reshape(n, c, oh, 1, ow, 1) / grad.dtype.type(bh * bw)
            gx = xp.empty((n, c, oh, bh, ow, bw), dtype=grad.dtype)
            gx[...] = g
            return gx.reshape(self.x_shape)
        gx = xp.zeros(self.x_shape, dtype=grad.dtype)
        for i, (h0, h1) in enumerate(adaptive_bins(h, oh)):
            for j, (w0, w1) in enumerate(adaptive_bins(w, ow)):
                area = grad.dtype.type((h1 - h0) * (w1 - w0))
                gx[:, :, h0:h1, w0:w1] += (grad[:, :, i, j] / area)[:, :, None, None]
        return gx


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max pooling (``torch.nn.functional.max_pool2d``); ``stride`` defaults to
    ``kernel_size``; padding is −∞."""
    k, s, p = _check_pool("max_pool2d", x, kernel_size, stride, padding)
    a = data_of(x)
    if backend.device_of(a) == "cuda" and a.dtype == np.float32:
        cls = MaxPool2dCuda
    else:
        cls = MaxPool2dFast if config.use_fast(a) else MaxPool2d
    return cls(k, s, p)(x)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Average pooling (``torch.nn.functional.avg_pool2d``, count_include_pad=True)."""
    k, s, p = _check_pool("avg_pool2d", x, kernel_size, stride, padding)
    return AvgPool2d(k, s, p)(x)


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed (oh, ow) (``torch.nn.functional.adaptive_avg_pool2d``);
    ``output_size`` is an int or a pair (None in a pair keeps that input size)."""
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"adaptive_avg_pool2d: expected a 4-D input (N, C, H, W), "
                         f"got shape {shape}")
    if isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        output_size = tuple(shape[2 + a] if o is None else o for a, o in enumerate(output_size))
    oh, ow = pair(output_size, "output_size", "adaptive_avg_pool2d")
    if oh <= 0 or ow <= 0:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be positive, got {(oh, ow)}")
    return AdaptiveAvgPool2d((oh, ow))(x)


__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_bins",
           "MaxPool2d", "MaxPool2dFast", "MaxPool2dCuda", "AvgPool2d", "AdaptiveAvgPool2d"]
