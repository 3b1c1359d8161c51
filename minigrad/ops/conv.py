"""2-D convolution through im2col / col2im.

Convolution as one matrix product
---------------------------------
An output pixel of a convolution is a dot product between the weights of one
output channel, W[k] of shape (C, kh, kw), and the input patch under the
kernel.  ``im2col`` copies every patch into a column of a matrix

    cols[(c, i, j), (n, oy, ox)] = x_padded[n, c, oy·sh + i, ox·sw + j]

of shape (C·kh·kw, N·Ho·Wo).  With the weights flattened to Wm of shape
(Cout, C·kh·kw), the whole convolution of the whole batch is ONE matrix product

    Y = Wm @ cols                  (Cout, N·Ho·Wo)   -> reshaped to (N, Cout, Ho, Wo)

and the backward pass is two more:

    dWm   = dY @ colsᵀ             (Cout, C·kh·kw)
    dcols = Wmᵀ @ dY               (C·kh·kw, N·Ho·Wo) -> col2im -> dx
    db    = Σ over N, Ho, Wo of dY

``col2im`` is the adjoint of ``im2col``: it adds every column back onto the
pixels it was copied from (overlapping patches add up).

The pieces are separate module-level functions (:func:`im2col`,
:func:`col2im`, :func:`conv2d_forward_gemm`, :func:`conv2d_backward_gemm`) so a
faster implementation of any one of them can be swapped in without touching
the rest.  The reference versions below are vectorised NumPy/CuPy: they loop
over the kh·kw kernel offsets (9 for a 3x3 kernel), never over pixels.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from .. import cuda as _gpu   # GPU kernels (kernels/*.cu); imports CuPy only when used
from ..tensor import Function, data_of


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def pair(v, name="value", who="conv2d"):
    """``3 -> (3, 3)``; ``(1, 2) -> (1, 2)``; anything else is a clear error."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{who}: {name} must be an int or a pair of ints, got {v!r}")
        a, b = v
    else:
        a = b = v
    for u in (a, b):
        if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
            raise TypeError(f"{who}: {name} must be an int or a pair of ints, got {v!r}")
    return int(a), int(b)


def conv_output_size(size, kernel, stride, padding):
    """Output length of a sliding window: ⌊(size + 2·padding − kernel) / stride⌋ + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad_hw(x, ph, pw, value=0.0):
    """Pad the two spatial axes of an (N, C, H, W) array (no copy when 0)."""
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant",
                  constant_values=value)


def _window(xpad, i, j, ho, wo, sh, sw):
    """The (N, C, Ho, Wo) view of ``xpad`` seen by kernel offset (i, j)."""
    return xpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]


# ---------------------------------------------------------------------------
# im2col / col2im: the reference implementations
# ---------------------------------------------------------------------------
def im2col(x, kh, kw, stride=1, padding=0):
    """Unfold the patches of ``x`` (N, C, H, W) into columns.

    ``stride`` and ``padding`` are ints or (h, w) pairs.  Returns ``cols`` of
    shape (C·kh·kw, N·Ho·Wo) with
    ``cols[(c, i, j), (n, oy, ox)] = x_padded[n, c, oy·sh + i, ox·sw + j]``.

    Why this layout: the contraction axis (c, i, j) is the leading axis, in
    the same order as ``weight.reshape(Cout, C·kh·kw)``, and every output
    position of every image is one column; so the convolution of the whole
    batch is a single 2-D GEMM ``Wm @ cols`` (no batched matmul, no transpose
    of the weights), the shape BLAS runs fastest.

    One strided copy per kernel offset (i, j): kh·kw copies in all.
    """
    if backend.device_of(x) == "cuda" and x.dtype == np.float32:   # GPU: kernels/im2col.cu
        return _gpu.im2col(x, kh, kw, stride, padding)
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    sh, sw = pair(stride, "stride", "im2col")
    ph, pw = pair(padding, "padding", "im2col")
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    xpad = _pad_hw(x, ph, pw)
    cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # (N, C, Ho, Wo) -> (C, N, Ho, Wo)
            cols[:, i, j] = _window(xpad, i, j, ho, wo, sh, sw).transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * ho * wo)


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of :func:`im2col`: add the columns back onto the image.

    ``cols`` has shape (C·kh·kw, N·Ho·Wo); returns an array of ``x_shape``
    (N, C, H, W) where each pixel holds the sum of every column entry that was
    copied from it (a pixel covered by several patches gets several terms).
    """
    if backend.device_of(cols) == "cuda" and cols.dtype == np.float32:   # GPU: kernels/im2col.cu
        return _gpu.col2im(cols, x_shape, kh, kw, stride, padding)
    xp = backend.get_array_module(cols)
    n, c, h, w = x_shape
    sh, sw = pair(stride, "stride", "col2im")
    ph, pw = pair(padding, "padding", "col2im")
    ho, wo = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    xpad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            _window(xpad, i, j, ho, wo, sh, sw)[...] += cols[:, i, j].transpose(1, 0, 2, 3)
    return xpad[:, :, ph:ph + h, pw:pw + w]


# ---------------------------------------------------------------------------
# The GEMMs
# ---------------------------------------------------------------------------
def conv2d_forward_gemm(cols, weight, n, ho, wo):
    """Y = Wm @ cols, returned in NCHW: (Cout, N·Ho·Wo) -> (N, Cout, Ho, Wo)."""
    cout = weight.shape[0]
    y = weight.reshape(cout, -1) @ cols
    return y.reshape(cout, n, ho, wo).transpose(1, 0, 2, 3)


def conv2d_backward_gemm(grad, cols, weight, need_cols=True, need_weight=True):
    """The two backward GEMMs of a convolution.

    ``grad`` is dL/dY of shape (N, Cout, Ho, Wo).  Returns
    ``(dcols, dweight)``: dcols = Wmᵀ @ dY of shape (C·kh·kw, N·Ho·Wo) (or None)
    and dweight = dY @ colsᵀ reshaped to the weight's shape (or None).
    """
    cout = weight.shape[0]
    g = grad.transpose(1, 0, 2, 3).reshape(cout, -1)        # (Cout, N·Ho·Wo)
    dcols = weight.reshape(cout, -1).T @ g if need_cols else None
    dweight = (g @ cols.T).reshape(weight.shape) if need_weight else None
    return dcols, dweight


# ---------------------------------------------------------------------------
# The differentiable ops
# ---------------------------------------------------------------------------
class Conv2d(Function):
    """y[n, k] = Σ_{c,i,j} w[k, c, i, j] · x_pad[n, c, oy·s + i, ox·s + j] + b[k].

    Forward: ``cols = im2col(x)``; ``y = Wm @ cols + b``.
    Backward: ``dW = dY @ colsᵀ``, ``db = Σ dY``, ``dx = col2im(Wmᵀ @ dY)``.

    This is the reference implementation (NumPy or CuPy arrays alike).  Two
    subclasses compute the same numbers faster and are picked once, by
    :func:`conv2d`, from the arrays it is given: :class:`Conv2dFast` (CPU,
    Numba kernels) and :class:`Conv2dCuda` (GPU, direct 3×3 kernels).
    """

    def __init__(self, stride=(1, 1), padding=(0, 0)):
        self.stride, self.padding = stride, padding

    def forward(self, x, weight, bias=None):
        kh, kw = weight.shape[2:]
        n, _, h, w = x.shape
        ho = conv_output_size(h, kh, self.stride[0], self.padding[0])
        wo = conv_output_size(w, kw, self.stride[1], self.padding[1])
        cols = im2col(x, kh, kw, self.stride, self.padding)
        y = conv2d_forward_gemm(cols, weight, n, ho, wo)
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
        else:
            y = backend.get_array_module(y).ascontiguousarray(y)
        if any(self.needs_input_grad):
            self.x_shape, self.weight = x.shape, weight
            # the columns are needed only for the weight gradient
            self.cols = cols if self.needs_input_grad[1] else None
        return y

    def backward(self, grad):
        need = self.needs_input_grad
        kh, kw = self.weight.shape[2:]
        dcols, dweight = conv2d_backward_gemm(grad, self.cols, self.weight,
                                              need_cols=need[0], need_weight=need[1])
        dx = (col2im(dcols, self.x_shape, kh, kw, self.stride, self.padding)
              if need[0] else None)
        dbias = grad.sum(axis=(0, 2, 3)) if len(need) > 2 and need[2] else None
        return dx, dweight, dbias


class Conv2dFast(Conv2d):
    """CPU fast path (kernels/cpu_numba.py, see :mod:`minigrad.config`): the same
    im2col / GEMM / col2im, done chunk by chunk of images in reused buffers."""

    def forward(self, x, weight, bias=None):
        y = config.cpu_kernels().conv2d_forward(x, weight, bias, self.stride, self.padding)
        if any(self.needs_input_grad):
            self.x, self.weight = x, weight
        return y

    def backward(self, grad):
        need = self.needs_input_grad
        return config.cpu_kernels().conv2d_backward(
            self.x, self.weight, grad, self.stride, self.padding,
            need_x=need[0], need_w=need[1], need_b=len(need) > 2 and need[2])


class Conv2dCuda(Conv2d):
    """GPU path for float32 3×3 convolutions with padding 1, stride 1 or 2:
    kernels/conv3x3.cu or kernels/numba_cuda.py, chosen with
    ``minigrad.cuda.set_conv_kernel`` (see docs/gpu.md)."""

    def forward(self, x, weight, bias=None):
        y = _gpu.conv2d_forward(x, weight, self.stride, self.padding)
        if bias is not None:
            y = y + bias.reshape(1, -1, 1, 1)
        if any(self.needs_input_grad):
            self.x_shape = x.shape
            self.x = x if self.needs_input_grad[1] else None            # for dW
            self.weight = weight if self.needs_input_grad[0] else None  # for dx
        return y

    def backward(self, grad):
        need = self.needs_input_grad
        dx = (_gpu.conv2d_backward_input(grad, self.weight, self.x_shape, self.stride,
                                         self.padding) if need[0] else None)
        dweight = (_gpu.conv2d_backward_weight(self.x, grad, self.stride, self.padding)
                   if need[1] else None)
        dbias = grad.sum(axis=(0, 2, 3)) if len(need) > 2 and need[2] else None
        return dx, dweight, dbias


def conv2d_impl(x, weight, bias, stride, padding):
    """The Conv2d class that runs on these arrays: the GPU kernels for a float32
    3×3 conv on CuPy arrays, the CPU fast path where it applies, else the reference."""
    if backend.device_of(x) == "cuda" and _gpu.conv3x3_applies(x, weight, stride, padding):
        return Conv2dCuda
    if config.use_fast(x, weight, bias):
        return Conv2dFast
    return Conv2d


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (``torch.nn.functional.conv2d``), NCHW.

    ``x`` (N, C, H, W), ``weight`` (Cout, C, kh, kw), ``bias`` (Cout,) or None;
    ``stride`` and ``padding`` are ints or (h, w) pairs.  Output
    (N, Cout, Ho, Wo) with Ho = ⌊(H + 2·ph − kh) / sh⌋ + 1.
    """
    stride = pair(stride, "stride")
    padding = pair(padding, "padding")
    xs, ws = tuple(x.shape), tuple(weight.shape)
    shapes = f"(input shape {xs}, weight shape {ws})"
    if len(xs) != 4:
        raise ValueError(f"conv2d: expected a 4-D input (N, C, H, W), got {len(xs)}-D {shapes}")
    if len(ws) != 4:
        raise ValueError(f"conv2d: expected a 4-D weight (Cout, C, kh, kw), got {len(ws)}-D "
                         f"{shapes}")
    if xs[1] != ws[1]:
        raise ValueError(f"conv2d: input has {xs[1]} channels but weight expects {ws[1]} {shapes}")
    if min(stride) <= 0 or min(padding) < 0:
        raise ValueError(f"conv2d: stride must be positive and padding >= 0, got "
                         f"stride={stride}, padding={padding}")
    ph, pw = padding
    if xs[2] + 2 * ph < ws[2] or xs[3] + 2 * pw < ws[3]:
        raise ValueError(f"conv2d: kernel {ws[2:]} is larger than the padded input "
                         f"({xs[2] + 2 * ph}, {xs[3] + 2 * pw}) {shapes}, padding={padding}")
    if bias is not None and tuple(bias.shape) != (ws[0],):
        raise ValueError(f"conv2d: bias must have shape ({ws[0]},), got {tuple(bias.shape)} "
                         f"{shapes}")
    op = conv2d_impl(data_of(x), data_of(weight), data_of(bias), stride, padding)(stride, padding)
    return op(x, weight) if bias is None else op(x, weight, bias)
