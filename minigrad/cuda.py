"""minigrad on an NVIDIA GPU: hand-written kernels and the switch that picks them.

Every op already runs on the GPU without this module: ops are written against
``xp`` (NumPy or CuPy, see :mod:`minigrad.backend`), so a convolution on CuPy
arrays is im2col + a cuBLAS matrix product.  This module adds hand-written
kernels for the hot spots, whose sources a learner can read:

* ``kernels/conv3x3.cu``  -- direct, shared-memory tiled 3x3 convolution
  (stride 1 and 2, padding 1) and both of its gradients, in CUDA C;
* ``kernels/numba_cuda.py`` -- the same three kernels written with Numba;
* ``kernels/im2col.cu``, ``kernels/maxpool.cu``, ``kernels/lrn.cu``;
* ``kernels/dropout.cu`` (the dropout mask drawn on the GPU) and ``kernels/sgd.cu``
  (the SGD update of a parameter in one pass).

The CUDA C files are compiled at first use by ``cupy.RawModule`` (NVRTC); the
modules and their kernel handles are cached per process (CuPy also caches the
binaries on disk).  Wrappers take and
return CuPy arrays.  CuPy and Numba are imported lazily: importing minigrad (or
this module) never imports either, and a machine without CuPy or a GPU gets the
one clear error of :func:`minigrad.backend.require_cupy`.

Which 3x3 convolution runs on the GPU is a setting, for benchmarking and teaching::

    minigrad.cuda.set_conv_kernel("cupy")     # CUDA C RawKernels (default)
    minigrad.cuda.set_conv_kernel("numba")    # the Numba CUDA kernels
    minigrad.cuda.set_conv_kernel("im2col")   # im2col + cuBLAS, like any other conv
    with minigrad.cuda.conv_kernel("numba"):  # temporarily
        ...

All hand-written kernels are float32; other dtypes (float64 for gradient checks)
take the generic ``xp`` path.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from . import backend

CONV_KERNELS = ("cupy", "numba", "im2col")
_conv_kernel = "cupy"

_modules = {}          # .cu file name -> compiled cupy.RawModule
_kernels = {}          # (.cu file name, kernel name) -> cupy.RawKernel
_numba_module = None   # minigrad.kernels.numba_cuda once imported

# the options minigrad passes to cupy.RawModule; CuPy adds -ftz=true and -arch=sm_XX
# (tests/test_cuda_sources.py compiles every source with exactly these)
NVRTC_OPTIONS = ("--std=c++14",)

THREADS_1D = 256       # block size of the element-wise (grid-stride) kernels
MAX_BLOCKS_1D = 65535  # grid-stride loops make any grid size correct; cap it
# the 32-bit-index kernels of im2col.cu and maxpool.cu are used below this many
# elements (leaving room for the last grid-stride step, so no index overflows)
INT32_ELEMENTS = 2**31 - 1 - MAX_BLOCKS_1D * THREADS_1D


# --- the kernel-choice setting -------------------------------------------------
def set_conv_kernel(name: str) -> None:
    """Choose the GPU 3x3 convolution: "cupy" (CUDA C), "numba" or "im2col"."""
    global _conv_kernel
    if name not in CONV_KERNELS:
        raise ValueError(f"set_conv_kernel: unknown kernel {name!r}; choose one of {CONV_KERNELS}")
    _conv_kernel = name


def get_conv_kernel() -> str:
    """The current GPU 3x3 convolution ("cupy", "numba" or "im2col")."""
    return _conv_kernel


@contextlib.contextmanager
def conv_kernel(name: str):
    """Context manager: use the 3x3 convolution ``name`` inside the block."""
    old = _conv_kernel
    set_conv_kernel(name)
    try:
        yield
    finally:
        set_conv_kernel(old)


# --- loading and launching -------------------------------------------------------
def load_module(filename: str):
    """Compile ``kernels/<filename>`` with cupy.RawModule once per process."""
    mod = _modules.get(filename)
    if mod is None:
        cp = backend.require_cupy()
        from .kernels import source_path
        code = source_path(filename).read_text(encoding="utf-8")
        mod = cp.RawModule(code=code, options=NVRTC_OPTIONS)
        _modules[filename] = mod
    return mod


def get_kernel(filename: str, name: str):
    """The ``extern "C"`` kernel ``name`` of ``kernels/<filename>``, looked up once per
    process (``get_function`` asks the driver for the function every time)."""
    kern = _kernels.get((filename, name))
    if kern is None:
        kern = _kernels[(filename, name)] = load_module(filename).get_function(name)
    return kern


def _indexed(name: str, *sizes) -> str:
    """``name`` when every size fits the kernels' 32-bit indices, else ``name_i64``."""
    return name if max(sizes) <= INT32_ELEMENTS else name + "_i64"


def numba_kernels():
    """The Numba CUDA kernels module (imports numba.cuda on first use)."""
    global _numba_module
    if _numba_module is None:
        try:
            from .kernels import numba_cuda
        except Exception as exc:   # ImportError, CudaSupportError
            raise RuntimeError(
                f"the Numba CUDA kernels could not be loaded ({type(exc).__name__}: {exc}). "
                "Install them with `pip install \"minigrad[cuda]\"` (numba-cuda) or use "
                "set_conv_kernel('cupy').") from exc
        _numba_module = numba_cuda
    return _numba_module


def launch_1d(total: int, threads: int = THREADS_1D):
    """(grid, block) for a grid-stride kernel over ``total`` elements."""
    blocks = max(1, min(math.ceil(total / threads), MAX_BLOCKS_1D))
    return (blocks,), (threads,)


def conv3x3_launch(out_h: int, out_w: int, channels: int, batch: int):
    """(grid, block) of conv3x3_forward / conv3x3_backward_input: an 8x8 pixel tile and
    16 channels per block of (8, 8, 4) threads."""
    tile, co_block = 8, 16
    grid = (math.ceil(out_h / tile) * math.ceil(out_w / tile), math.ceil(channels / co_block), batch)
    return grid, (tile, tile, 4)


WG_BLOCK_CHANNELS = 4      # output and input channels of a weight-gradient block
WG_THREADS = 256           # threads of a weight-gradient block
WG_MIN_UNITS = 16          # (image, 8x8 tile) units per slice: at least 1024 positions


def weight_slices(K: int, C: int, units: int, target_blocks: int = 1024) -> int:
    """Split the N * tiles (image, 8x8 output tile) units of the weight gradient into
    slices so the grid has about ``target_blocks`` blocks, each slice keeping at least
    WG_MIN_UNITS units."""
    blocks = math.ceil(K / WG_BLOCK_CHANNELS) * math.ceil(C / WG_BLOCK_CHANNELS)
    return max(1, min(math.ceil(target_blocks / blocks), units // WG_MIN_UNITS))


def conv3x3_weight_launch(N: int, C: int, K: int, Ho: int, Wo: int, slices=None):
    """(grid, block, units per slice, slices) of conv3x3_backward_weight: blocks of 4
    output x 4 input channels, and the (image, 8x8 output tile) units cut into slices
    (``weight_slices`` unless ``slices`` is given)."""
    units = N * math.ceil(Ho / 8) * math.ceil(Wo / 8)
    slices = weight_slices(K, C, units) if slices is None else slices
    per_slice = math.ceil(units / slices)
    grid = (math.ceil(K / WG_BLOCK_CHANNELS), math.ceil(C / WG_BLOCK_CHANNELS), slices)
    return grid, (WG_THREADS,), per_slice, slices


def _xp():
    """The array module the kernels' arrays live in: CuPy.  (The tests that run the
    kernels on a CPU emulation substitute NumPy here.)"""
    return backend.require_cupy()


def _i(v):
    return np.int32(v)   # RawKernel int parameters must be passed as int32


def _f(v):
    return np.float32(v)  # ... and float parameters as float32


def _pair(v, what, fn):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {what} must be an int or a pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _as_f32(a, fn, what):
    cp = _xp()
    if not isinstance(a, cp.ndarray):
        raise TypeError(f"{fn}: {what} must be a CuPy array, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"{fn}: {what} is {a.dtype}; the GPU kernels are float32 only")
    return cp.ascontiguousarray(a)


# --- 3x3 convolution ----------------------------------------------------------------
def conv3x3_applies(x, w, stride=1, padding=1, dilation=1, groups=1) -> bool:
    """True when the hand-written 3x3 kernels can compute conv2d(x, w): CuPy float32
    arrays, a 3x3 kernel, stride 1 or 2 (both ways), padding 1, no dilation, no groups."""
    if backend.device_of(x) != "cuda" or backend.device_of(w) != "cuda":
        return False
    if _conv_kernel == "im2col":
        return False
    s, p, d = _pair(stride, "stride", "conv2d"), _pair(padding, "padding", "conv2d"), \
        _pair(dilation, "dilation", "conv2d")
    return (x.dtype == np.float32 and w.dtype == np.float32 and x.ndim == 4 and w.ndim == 4
            and w.shape[2:] == (3, 3) and w.shape[1] == x.shape[1] and groups == 1
            and s[0] == s[1] and s[0] in (1, 2) and p == (1, 1) and d == (1, 1))


def _conv_args(x_shape, w_shape, stride, padding, fn):
    s, s2 = _pair(stride, "stride", fn)
    p, p2 = _pair(padding, "padding", fn)
    if s != s2 or s not in (1, 2):
        raise ValueError(f"{fn}: the 3x3 kernels take stride 1 or 2 (the same both ways), got {stride!r}")
    if p != p2 or p not in (0, 1):
        raise ValueError(f"{fn}: the 3x3 kernels take padding 0 or 1, got {padding!r}")
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(x_shape) != 4 or len(w_shape) != 4 or w_shape[2:] != (3, 3) or w_shape[1] != x_shape[1]:
        raise ValueError(f"{fn}: expected x (N, C, H, W) and w (K, C, 3, 3), got x {x_shape} "
                         f"and w {w_shape}")
    N, C, H, W = x_shape
    K = w_shape[0]
    Ho, Wo = (H + 2 * p - 3) // s + 1, (W + 2 * p - 3) // s + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{fn}: input {tuple(x_shape)} is too small for a 3x3 kernel with padding {p}")
    # the kernels index inside one image with 32-bit ints (images apart in 64 bits)
    if max(C * H * W, K * Ho * Wo) >= 2**31:
        raise ValueError(f"{fn}: one image of x {x_shape} or of the output "
                         f"{(N, K, Ho, Wo)} has 2^31 elements or more, more than the 3x3 "
                         "kernels index; use set_conv_kernel('im2col')")
    return s, p, N, C, H, W, K, Ho, Wo


def _impl(impl):
    impl = _conv_kernel if impl is None else impl
    if impl not in CONV_KERNELS:
        raise ValueError(f"unknown conv kernel {impl!r}; choose one of {CONV_KERNELS}")
    return impl


def conv2d_forward(x, w, stride=1, padding=1, impl=None):
    """y = conv2d(x, w) for a 3x3 kernel (no bias): x (N, C, H, W), w (K, C, 3, 3)
    float32 CuPy arrays -> y (N, K, Ho, Wo).  ``impl`` overrides the setting."""
    cp = _xp()
    fn = "conv2d_forward"
    x, w = _as_f32(x, fn, "x"), _as_f32(w, fn, "w")
    s, p, N, C, H, W, K, Ho, Wo = _conv_args(x.shape, w.shape, stride, padding, fn)
    impl = _impl(impl)
    if impl == "im2col":
        cols = im2col(x, 3, 3, s, p)
        y = w.reshape(K, C * 9) @ cols
        return cp.ascontiguousarray(y.reshape(K, N, Ho, Wo).transpose(1, 0, 2, 3))
    y = cp.empty((N, K, Ho, Wo), dtype=cp.float32)
    if impl == "numba":
        return numba_kernels().forward(x, w, y, s, p)
    grid, block = conv3x3_launch(Ho, Wo, K, N)
    get_kernel("conv3x3.cu", "conv3x3_forward")(
        grid, block, (x, w, y, _i(N), _i(C), _i(H), _i(W), _i(K), _i(Ho), _i(Wo), _i(s), _i(p)))
    return y


def conv2d_backward_input(grad_out, w, input_shape, stride=1, padding=1, impl=None):
    """dL/dx of the 3x3 convolution: grad_out (N, K, Ho, Wo), w (K, C, 3, 3)
    -> (N, C, H, W) = ``input_shape``."""
    cp = _xp()
    fn = "conv2d_backward_input"
    g, w = _as_f32(grad_out, fn, "grad_out"), _as_f32(w, fn, "w")
    s, p, N, C, H, W, K, Ho, Wo = _conv_args(input_shape, w.shape, stride, padding, fn)
    if g.shape != (N, K, Ho, Wo):
        raise ValueError(f"{fn}: grad_out has shape {g.shape}, expected {(N, K, Ho, Wo)}")
    impl = _impl(impl)
    if impl == "im2col":
        gcols = w.reshape(K, C * 9).T @ g.transpose(1, 0, 2, 3).reshape(K, N * Ho * Wo)
        return col2im(gcols, (N, C, H, W), 3, 3, s, p)
    gx = cp.empty((N, C, H, W), dtype=cp.float32)
    if impl == "numba":
        return numba_kernels().backward_input(g, w, gx, s, p)
    grid, block = conv3x3_launch(H, W, C, N)
    get_kernel("conv3x3.cu", "conv3x3_backward_input")(
        grid, block, (g, w, gx, _i(N), _i(C), _i(H), _i(W), _i(K), _i(Ho), _i(Wo), _i(s), _i(p)))
    return gx


def conv2d_backward_weight(x, grad_out, stride=1, padding=1, impl=None):
    """dL/dw of the 3x3 convolution: x (N, C, H, W), grad_out (N, K, Ho, Wo)
    -> (K, C, 3, 3)."""
    cp = _xp()
    fn = "conv2d_backward_weight"
    x, g = _as_f32(x, fn, "x"), _as_f32(grad_out, fn, "grad_out")
    if x.ndim != 4 or g.ndim != 4:
        raise ValueError(f"{fn}: expected x (N, C, H, W) and grad_out (N, K, Ho, Wo), "
                         f"got {x.shape} and {g.shape}")
    w_shape = (g.shape[1], x.shape[1], 3, 3)
    s, p, N, C, H, W, K, Ho, Wo = _conv_args(x.shape, w_shape, stride, padding, fn)
    if g.shape != (N, K, Ho, Wo):
        raise ValueError(f"{fn}: grad_out has shape {g.shape}, expected {(N, K, Ho, Wo)}")
    impl = _impl(impl)
    if impl == "im2col":
        cols = im2col(x, 3, 3, s, p)
        gw = g.transpose(1, 0, 2, 3).reshape(K, N * Ho * Wo) @ cols.T
        return cp.ascontiguousarray(gw.reshape(K, C, 3, 3))
    grid, block, per_slice, slices = conv3x3_weight_launch(N, C, K, Ho, Wo)
    part = cp.empty((slices, K, C, 3, 3), dtype=cp.float32)
    if impl == "numba":
        numba_kernels().backward_weight(x, g, part, s, p)
    else:
        get_kernel("conv3x3.cu", "conv3x3_backward_weight")(
            grid, block,
            (x, g, part, _i(N), _i(C), _i(H), _i(W), _i(K), _i(Ho), _i(Wo), _i(s), _i(p),
             _i(per_slice)))
    return part[0] if slices == 1 else part.sum(axis=0)


# --- im2col / col2im ------------------------------------------------------------------
def _out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def im2col(x, kh, kw, stride=1, padding=0):
    """Unfold x (N, C, H, W) into cols (C*kh*kw, N*Ho*Wo) (see kernels/im2col.cu)."""
    cp = _xp()
    x = _as_f32(x, "im2col", "x")
    (sh, sw), (ph, pw) = _pair(stride, "stride", "im2col"), _pair(padding, "padding", "im2col")
    N, C, H, W = x.shape
    Ho, Wo = _out(H, kh, sh, ph), _out(W, kw, sw, pw)
    cols = cp.empty((C * kh * kw, N * Ho * Wo), dtype=cp.float32)
    grid, block = launch_1d(cols.size)
    get_kernel("im2col.cu", _indexed("im2col", cols.size, x.size))(grid, block, (
        x, cols, _i(N), _i(C), _i(H), _i(W), _i(kh), _i(kw), _i(sh), _i(sw), _i(ph), _i(pw),
        _i(Ho), _i(Wo)))
    return cols


def col2im(cols, x_shape, kh, kw, stride=1, padding=0):
    """The adjoint of :func:`im2col`: fold cols (C*kh*kw, N*Ho*Wo) back into
    (N, C, H, W), adding overlapping entries."""
    cp = _xp()
    cols = _as_f32(cols, "col2im", "cols")
    (sh, sw), (ph, pw) = _pair(stride, "stride", "col2im"), _pair(padding, "padding", "col2im")
    N, C, H, W = x_shape
    Ho, Wo = _out(H, kh, sh, ph), _out(W, kw, sw, pw)
    if cols.shape != (C * kh * kw, N * Ho * Wo):
        raise ValueError(f"col2im: cols has shape {cols.shape}, expected {(C * kh * kw, N * Ho * Wo)}")
    x = cp.empty((N, C, H, W), dtype=cp.float32)
    grid, block = launch_1d(x.size)
    get_kernel("im2col.cu", _indexed("col2im", cols.size, x.size))(grid, block, (
        cols, x, _i(N), _i(C), _i(H), _i(W), _i(kh), _i(kw), _i(sh), _i(sw), _i(ph), _i(pw),
        _i(Ho), _i(Wo)))
    return x


# --- max pooling --------------------------------------------------------------------------
def maxpool2d_forward(x, kernel_size, stride=None, padding=0):
    """y, argmax = max-pool of x (N, C, H, W); argmax (int32) holds iy*W + ix of each
    window's maximum inside its (n, c) plane, for :func:`maxpool2d_backward`."""
    cp = _xp()
    x = _as_f32(x, "maxpool2d_forward", "x")
    kh, kw = _pair(kernel_size, "kernel_size", "maxpool2d_forward")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride", "maxpool2d_forward")
    ph, pw = _pair(padding, "padding", "maxpool2d_forward")
    N, C, H, W = x.shape
    Ho, Wo = _out(H, kh, sh, ph), _out(W, kw, sw, pw)
    if Ho < 1 or Wo < 1:
        raise ValueError(f"maxpool2d_forward: input {x.shape} is smaller than the {kh}x{kw} window")
    y = cp.empty((N, C, Ho, Wo), dtype=cp.float32)
    argmax = cp.empty((N, C, Ho, Wo), dtype=cp.int32)
    grid, block = launch_1d(y.size)
    get_kernel("maxpool.cu", _indexed("maxpool2d_forward", x.size, y.size))(grid, block, (
        x, y, argmax, _i(N * C), _i(H), _i(W), _i(Ho), _i(Wo), _i(kh), _i(kw), _i(sh), _i(sw),
        _i(ph), _i(pw)))
    return y, argmax


def maxpool2d_backward(grad_out, argmax, x_shape, kernel_size, stride=None, padding=0):
    """dL/dx of max pooling from the saved ``argmax``; shape ``x_shape``."""
    cp = _xp()
    g = _as_f32(grad_out, "maxpool2d_backward", "grad_out")
    argmax = cp.ascontiguousarray(argmax, dtype=cp.int32)
    kh, kw = _pair(kernel_size, "kernel_size", "maxpool2d_backward")
    sh, sw = (kh, kw) if stride is None else _pair(stride, "stride", "maxpool2d_backward")
    ph, pw = _pair(padding, "padding", "maxpool2d_backward")
    N, C, H, W = x_shape
    Ho, Wo = g.shape[2], g.shape[3]
    if argmax.shape != g.shape:
        raise ValueError(f"maxpool2d_backward: argmax {argmax.shape} and grad_out {g.shape} differ")
    gx = cp.empty((N, C, H, W), dtype=cp.float32)
    grid, block = launch_1d(gx.size)
    get_kernel("maxpool.cu", _indexed("maxpool2d_backward", gx.size, g.size))(grid, block, (
        g, argmax, gx, _i(N * C), _i(H), _i(W), _i(Ho), _i(Wo), _i(kh), _i(kw), _i(sh), _i(sw),
        _i(ph), _i(pw)))
    return gx


# --- local response normalisation ------------------------------------------------------------
def _lrn_dims(x, fn):
    """(N, C, positions per channel) of an (N, C, ...) array."""
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input (N, C, ...), got shape {x.shape}")
    N, C = x.shape[:2]
    return N, C, x.size // max(N * C, 1)


def lrn_forward(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """y, scale = LRN across axis 1 of x (N, C, ...) with the papers' alpha (not divided by size):
    scale = k + alpha * (window sum of x^2), y = x * scale^-beta."""
    cp = _xp()
    x = _as_f32(x, "lrn_forward", "x")
    N, C, HW = _lrn_dims(x, "lrn_forward")
    y = cp.empty_like(x)
    scale = cp.empty_like(x)
    grid, block = launch_1d(N * HW)
    get_kernel("lrn.cu", "lrn_forward")(grid, block, (
        x, y, scale, _i(N), _i(C), _i(HW), _i(size), _f(alpha), _f(beta), _f(k)))
    return y, scale


def lrn_backward(x, scale, grad_out, size=5, alpha=1e-4, beta=0.75):
    """dL/dx of LRN from the input and the ``scale`` saved by :func:`lrn_forward`."""
    cp = _xp()
    x = _as_f32(x, "lrn_backward", "x")
    scale = _as_f32(scale, "lrn_backward", "scale")
    g = _as_f32(grad_out, "lrn_backward", "grad_out")
    N, C, HW = _lrn_dims(x, "lrn_backward")
    if scale.shape != x.shape or g.shape != x.shape:
        raise ValueError(f"lrn_backward: x {x.shape}, scale {scale.shape} and grad_out "
                         f"{g.shape} must have the same shape")
    gx = cp.empty_like(x)
    grid, block = launch_1d(N * HW)
    get_kernel("lrn.cu", "lrn_backward")(grid, block, (
        x, scale, g, gx, _i(N), _i(C), _i(HW), _i(size), _f(alpha), _f(beta)))
    return gx


# --- dropout and the SGD update ----------------------------------------------------------------
def _u64(v):
    return np.uint64(v)


def dropout_forward(x, p: float, seed: int):
    """y, mask of inverted dropout on the GPU (kernels/dropout.cu): mask = (u >= p) / (1 - p)
    with u uniform in [0, 1) drawn from ``seed`` and the element's index alone."""
    cp = _xp()
    x = _as_f32(x, "dropout_forward", "x")
    y, mask = cp.empty_like(x), cp.empty_like(x)
    scale = 0.0 if p >= 1 else 1.0 / (1.0 - p)
    grid, block = launch_1d(x.size)
    get_kernel("dropout.cu", "dropout_forward")(grid, block, (
        x, y, mask, np.int64(x.size), _u64(seed), _f(p), _f(scale)))
    return y, mask


def sgd_update(param, grad, buf, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
               nesterov=False, first=False):
    """One SGD step of a float32 CuPy parameter in place, in one kernel (kernels/sgd.cu).
    ``buf`` is the momentum buffer (updated in place; ignored when momentum is 0);
    ``first``: this is its first step (the buffer starts at the gradient)."""
    cp = _xp()
    if not (isinstance(param, cp.ndarray) and param.dtype == np.float32
            and param.flags.c_contiguous):
        raise TypeError("sgd_update: the parameter must be a C-contiguous float32 CuPy array")
    g = _as_f32(grad, "sgd_update", "grad")
    if g.shape != param.shape:
        raise ValueError(f"sgd_update: gradient {g.shape} for a parameter {param.shape}")
    use_momentum = momentum != 0
    if use_momentum and (buf is None or buf.shape != param.shape or buf.dtype != np.float32
                         or not buf.flags.c_contiguous):
        raise ValueError("sgd_update: momentum needs a contiguous float32 buffer of the "
                         f"parameter's shape {param.shape}")
    grid, block = launch_1d(param.size)
    get_kernel("sgd.cu", "sgd_update")(grid, block, (
        param, g, buf if use_momentum else param, np.int64(param.size), _f(lr), _f(momentum),
        _f(dampening), _f(weight_decay), _i(use_momentum), _i(bool(nesterov)), _i(bool(first))))
    return param
