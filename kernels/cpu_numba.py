"""Hand-written Numba kernels for minigrad's CPU fast path.

Every kernel here has a plain NumPy twin in ``minigrad/ops`` (the reference
path, the code to read first); these compute the same numbers faster by

* running in parallel over the cores (``prange``, usually over (image, channel)
  planes, so no two threads ever write the same element and no atomics are
  needed);
* doing in one pass over memory what NumPy does in several (batch-norm's
  statistics, scale and shift; the bias add fused into the layout change that
  follows a convolution's GEMM; the bias gradient fused into the one before);
* writing into buffers the caller passes in, so big scratch arrays can be
  allocated once and reused (fresh memory on a virtual machine costs a page
  fault per 4 KiB the first time it is touched, which can cost more than the
  work itself).

The matrix products themselves are left to NumPy's BLAS.

Conventions: arrays are C-contiguous NCHW; outputs are the last argument(s)
and are fully overwritten; float32 and float64 both work (float64 is what the
gradient checks use).  Each kernel is compiled on first use for the dtype it
sees and cached on disk (``cache=True``), so importing this module is cheap.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


# ---------------------------------------------------------------------------
# Convolution: im2col / col2im in the (C·kh·kw, N·Ho·Wo) layout
# ---------------------------------------------------------------------------
def _out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


@njit(cache=True, inline="always")
def _valid_range(w, wo, j, sw, pw):
    """Output columns ox whose input column ox·sw + j − pw lies inside [0, w)."""
    lo = 0 if pw - j <= 0 else (pw - j + sw - 1) // sw
    hi = (w - 1 + pw - j) // sw + 1
    if hi > wo:
        hi = wo
    if hi < lo:
        hi = lo
    return lo, hi


@njit(parallel=True, cache=True)
def im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols):
    """cols[(c, i, j), (n − n0, oy, ox)] = x_pad[n, c, oy·sh + i, ox·sw + j] for n0 <= n < n1.

    ``cols`` has shape (C·kh·kw, (n1 − n0)·Ho·Wo).  One task per row (c, i, j):
    it writes its row front to back (sequential stores), reading one input
    row per output row; positions in the zero padding are written as 0.
    """
    _, c_in, h, w = x.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    plane = ho * wo
    for r in prange(c_in * kh * kw):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        crow = cols[r]
        lo, hi = _valid_range(w, wo, j, sw, pw)
        for b in range(n1 - n0):
            n = n0 + b
            for oy in range(ho):
                iy = oy * sh + i - ph
                o = b * plane + oy * wo
                if iy < 0 or iy >= h:
                    crow[o:o + wo] = 0
                    continue
                xrow = x[n, c, iy]                       # the input row it reads
                crow[o:o + lo] = 0
                if sw == 1:                              # a contiguous copy
                    crow[o + lo:o + hi] = xrow[lo + j - pw:hi + j - pw]
                else:
                    for ox in range(lo, hi):
                        crow[o + ox] = xrow[ox * sw + j - pw]
                crow[o + hi:o + wo] = 0


@njit(parallel=True, cache=True)
def col2im(cols, kh, kw, sh, sw, ph, pw, n0, n1, dx):
    """The adjoint of :func:`im2col`: dx[n0:n1] = Σ of the columns copied from each pixel.

    One task per (image, channel) plane: the task zeroes its plane and adds
    every column entry that came from it, so no two tasks write the same pixel.
    """
    _, c_in, h, w = dx.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    nb = n1 - n0
    plane = ho * wo
    for t in prange(c_in * nb):
        c = t // nb
        b = t - c * nb
        n = n0 + b
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                lo, hi = _valid_range(w, wo, j, sw, pw)
                for oy in range(ho):
                    iy = oy * sh + i - ph
                    if iy < 0 or iy >= h:
                        continue
                    o = b * plane + oy * wo
                    for ox in range(lo, hi):
                        dx[n, c, iy, ox * sw + j - pw] += cols[row, o + ox]


@njit(parallel=True, cache=True)
def cnp_to_nchw(y2, bias, use_bias, y):
    """y[n, k, p] = y2[k, n·P + p] (+ bias[k]): the GEMM's (Cout, N·P) result in NCHW.

    ``y`` is (N, Cout, P); ``bias`` is read only when ``use_bias``.
    """
    n_img, k_out, p_len = y.shape
    for t in prange(n_img * k_out):
        n = t // k_out
        k = t - n * k_out
        b = bias[k] if use_bias else 0
        src = n * p_len
        for p in range(p_len):
            y[n, k, p] = y2[k, src + p] + b


@njit(parallel=True, cache=True)
def nchw_to_cnp(g, g2, db):
    """g2[k, n·P + p] = g[n, k, p], and db[k] = Σ_{n,p} g[n, k, p] in the same pass.

    The layout change before a convolution's backward GEMMs, with the bias
    gradient computed on the way (in float64).
    """
    n_img, k_out, p_len = g.shape
    for k in prange(k_out):
        acc = 0.0
        for n in range(n_img):
            dst = n * p_len
            for p in range(p_len):
                v = g[n, k, p]
                g2[k, dst + p] = v
                acc += v
        db[k] = acc


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, y, idx):
    """y[n, c, oy, ox] = max of the window; idx holds the flat position iy·W + ix
    of the (first) maximum in its input plane, for the backward pass.

    Padding counts as −∞ (as in PyTorch), so a window always holds a real pixel
    when padding <= kernel / 2.
    """
    n_img, c_in, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for oy in range(ho):
            y0 = oy * sh - ph
            for ox in range(wo):
                x0 = ox * sw - pw
                best = -np.inf
                arg = -1
                for i in range(kh):
                    iy = y0 + i
                    if iy < 0 or iy >= h:
                        continue
                    for j in range(kw):
                        ix = x0 + j
                        if ix < 0 or ix >= w:
                            continue
                        v = x[n, c, iy, ix]
                        if v > best or arg < 0:
                            best = v
                            arg = iy * w + ix
                y[n, c, oy, ox] = best
                idx[n, c, oy, ox] = arg


@njit(parallel=True, cache=True)
def maxpool2d_backward(g, idx, dx):
    """dx = 0 except at each window's maximum, which receives that window's gradient
    (summed when overlapping windows share a maximum)."""
    n_img, c_in, h, w = dx.shape
    ho, wo = g.shape[2], g.shape[3]
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0
        for oy in range(ho):
            for ox in range(wo):
                a = idx[n, c, oy, ox]
                if a >= 0:
                    dx[n, c, a // w, a % w] += g[n, c, oy, ox]


# ---------------------------------------------------------------------------
# Batch normalisation (NCHW: statistics per channel over N, H, W)
# ---------------------------------------------------------------------------
@njit(parallel=True, cache=True, fastmath=True)
def bn_stats(x, mean, var):
    """Per-channel mean and biased variance of x (N, C, P), two passes in float64."""
    n_img, c_in, p_len = x.shape
    m = n_img * p_len
    for c in prange(c_in):
        s = 0.0
        for n in range(n_img):
            for p in range(p_len):
                s += x[n, c, p]
        mu = s / m
        q = 0.0
        for n in range(n_img):
            for p in range(p_len):
                d = x[n, c, p] - mu
                q += d * d
        mean[c] = mu
        var[c] = q / m


@njit(parallel=True, cache=True, fastmath=True)
def bn_apply(x, scale, shift, relu, y):
    """y = x·scale[c] + shift[c] (then max(·, 0) when ``relu``), per (image, channel) plane."""
    n_img, c_in, p_len = x.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        a = scale[c]
        b = shift[c]
        if relu:
            for p in range(p_len):
                v = x[n, c, p] * a + b
                y[n, c, p] = v if v > 0 else 0
        else:
            for p in range(p_len):
                y[n, c, p] = x[n, c, p] * a + b


@njit(parallel=True, cache=True, fastmath=True)
def bn_backward_sums(g, x, mean, sum_g, sum_gx):
    """sum_g[c] = Σ g,  sum_gx[c] = Σ g·(x − mean[c]), over N and P (float64)."""
    n_img, c_in, p_len = g.shape
    for c in prange(c_in):
        s = 0.0
        sx = 0.0
        mu = mean[c]
        for n in range(n_img):
            for p in range(p_len):
                gv = g[n, c, p]
                s += gv
                sx += gv * (x[n, c, p] - mu)
        sum_g[c] = s
        sum_gx[c] = sx


@njit(parallel=True, cache=True, fastmath=True)
def bn_backward_dx(g, x, mean, a, b, k, dx):
    """dx = a[c]·g + k[c]·(x − mean[c]) + b[c], per plane (the coefficients come
    from the sums above; see ``BatchNorm2d.backward`` for the algebra)."""
    n_img, c_in, p_len = g.shape
    for t in prange(n_img * c_in):
        n = t // c_in
        c = t - n * c_in
        ac = a[c]
        bc = b[c]
        kc = k[c]
        mu = mean[c]
        for p in range(p_len):
            dx[n, c, p] = ac * g[n, c, p] + kc * (x[n, c, p] - mu) + bc


# ---------------------------------------------------------------------------
# ReLU (flat, contiguous arrays)
# ---------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def relu_forward(x, y):
    """y = max(x, 0)."""
    for i in prange(x.size):
        v = x[i]
        y[i] = v if v > 0 else 0


@njit(parallel=True, cache=True)
def relu_backward(g, y, dx):
    """dx = g where the output y > 0, else 0."""
    for i in prange(g.size):
        dx[i] = g[i] if y[i] > 0 else 0


# ---------------------------------------------------------------------------
# SGD with momentum, in place (flat, contiguous arrays)
# ---------------------------------------------------------------------------
@njit(parallel=True, cache=True)
def sgd_momentum_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One ``torch.optim.SGD`` step for one parameter, in place on ``p`` and ``buf``:

        d = g + weight_decay·p
        buf = d (first step)  or  momentum·buf + (1 − dampening)·d
        p -= lr · (d + momentum·buf  if nesterov  else  buf)
    """
    for i in prange(p.size):
        d = g[i] + weight_decay * p[i]
        if first:
            bv = d
        else:
            bv = momentum * buf[i] + (1 - dampening) * d
        buf[i] = bv
        if nesterov:
            p[i] -= lr * (d + momentum * bv)
        else:
            p[i] -= lr * bv


@njit(parallel=True, cache=True)
def sgd_step(p, g, lr, weight_decay):
    """Plain SGD (no momentum), in place: p -= lr·(g + weight_decay·p)."""
    for i in prange(p.size):
        p[i] -= lr * (g[i] + weight_decay * p[i])


# ===========================================================================
# Drivers: what the ops in minigrad/ops call (plain Python around the kernels)
# ===========================================================================
_BUFFERS = {}
CHUNK_BYTES = 128 << 20   # im2col columns per chunk of images (bounds the scratch memory)


def scratch(name, shape, dtype):
    """A reusable scratch array (one per name, shape and dtype), kept for the
    life of the process: big temporaries are allocated and page-faulted once."""
    key = (name, shape, np.dtype(dtype))
    a = _BUFFERS.get(key)
    if a is None:
        a = _BUFFERS[key] = np.empty(shape, dtype)
    return a


def clear_scratch():
    """Free every scratch buffer (they are re-made on the next call)."""
    _BUFFERS.clear()


def _chunks(n, bytes_per_image):
    """Split n images into chunks whose im2col columns take about CHUNK_BYTES."""
    nb = max(1, min(n, CHUNK_BYTES // max(1, bytes_per_image)))
    return [(n0, min(n, n0 + nb)) for n0 in range(0, n, nb)]


def conv2d_forward(x, weight, bias, stride, padding):
    """y = conv2d(x, weight, bias): per chunk of images, im2col into a reused
    buffer, one GEMM, then the layout change to NCHW with the bias added."""
    n, c, h, w = x.shape
    k, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
    x = np.ascontiguousarray(x)
    wm = np.ascontiguousarray(weight).reshape(k, -1)
    y = np.empty((n, k, ho, wo), x.dtype)
    y3 = y.reshape(n, k, ho * wo)
    b = bias if bias is not None else np.zeros(1, x.dtype)
    for n0, n1 in _chunks(n, c * kh * kw * ho * wo * x.itemsize):
        m = (n1 - n0) * ho * wo
        cols = scratch("cols", (c * kh * kw, m), x.dtype)
        im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols)
        y2 = scratch("y2", (k, m), x.dtype)
        np.matmul(wm, cols, out=y2)
        cnp_to_nchw(y2, b, bias is not None, y3[n0:n1])
    return y


def conv2d_backward(x, weight, grad, stride, padding, need_x=True, need_w=True, need_b=True):
    """(dx, dweight, dbias) of conv2d, chunk by chunk: the columns are
    recomputed from x (cheaper than keeping them), dW and db accumulate over
    the chunks, dx = col2im(Wᵀ @ dY) is written chunk by chunk."""
    n, c, h, w = x.shape
    k, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    ho, wo = grad.shape[2], grad.shape[3]
    x = np.ascontiguousarray(x)
    g3 = np.ascontiguousarray(grad).reshape(n, k, ho * wo)
    wm = np.ascontiguousarray(weight).reshape(k, -1)
    # stride 1: dx is the convolution of dY with the flipped, transposed kernel
    # (a "full" convolution), which runs as a forward pass: a GEMM with a long
    # inner dimension (k·kh·kw) instead of Wᵀ @ dY's short one (k) plus col2im.
    via_conv = need_x and sh == 1 and sw == 1 and ph < kh and pw < kw
    dx = np.empty(x.shape, x.dtype) if need_x and not via_conv else None
    dwt = np.zeros((c * kh * kw, k), x.dtype) if need_w else None     # dWᵀ
    db = np.zeros(k, np.float64)
    db_part = np.empty(k, np.float64)
    for n0, n1 in _chunks(n, c * kh * kw * ho * wo * x.itemsize):
        m = (n1 - n0) * ho * wo
        g2 = scratch("g2", (k, m), x.dtype)
        nchw_to_cnp(g3[n0:n1], g2, db_part)
        db += db_part
        if need_w:
            cols = scratch("cols", (c * kh * kw, m), x.dtype)
            im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols)
            # dWᵀ = cols @ dYᵀ: the same product as dY @ colsᵀ, but OpenBLAS runs
            # this orientation (long inner axis, tall result) 5-100x faster
            dwt_part = scratch("dwt", dwt.shape, x.dtype)
            np.matmul(cols, g2.T, out=dwt_part)
            dwt += dwt_part
        if need_x and not via_conv:
            dcols = scratch("dcols", (c * kh * kw, m), x.dtype)
            np.matmul(wm.T, g2, out=dcols)
            col2im(dcols, kh, kw, sh, sw, ph, pw, n0, n1, dx)
    if via_conv:
        w_flip = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        dx = conv2d_forward(grad, w_flip, None, (1, 1), (kh - 1 - ph, kw - 1 - pw))
    return (dx,
            np.ascontiguousarray(dwt.T).reshape(weight.shape) if need_w else None,
            db.astype(x.dtype) if need_b else None)


def max_pool2d_forward(x, kernel, stride, padding):
    """(y, idx): the pooled output and, per output, the flat in-plane index of its maximum."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = _out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)
    y = np.empty((n, c, ho, wo), x.dtype)
    idx = np.empty((n, c, ho, wo), np.int32)
    maxpool2d_forward(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, y, idx)
    return y, idx


def max_pool2d_backward(grad, idx, x_shape):
    dx = np.empty(x_shape, grad.dtype)
    maxpool2d_backward(np.ascontiguousarray(grad), idx, dx)
    return dx


def _ncp(a):
    """View (N, C, ...) as (N, C, P) (contiguous)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_forward(x, mean, var, weight, bias, eps, training):
    """Batch-norm forward.  Training: statistics of the batch (float64) are
    computed and returned; evaluation: ``mean``/``var`` are the running ones.
    Returns (y, mean, inv_std) with mean, inv_std as float64 (C,) arrays."""
    x3 = _ncp(x)
    c = x3.shape[1]
    if training:
        mean = np.empty(c, np.float64)
        var = np.empty(c, np.float64)
        bn_stats(x3, mean, var)
    else:
        mean = np.asarray(mean, np.float64)
        var = np.asarray(var, np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    beta = np.zeros(c) if bias is None else bias.astype(np.float64)
    scale = (gamma * inv_std).astype(x.dtype)
    shift = (beta - mean * gamma * inv_std).astype(x.dtype)
    y = np.empty(x3.shape, x.dtype)
    bn_apply(x3, scale, shift, False, y)
    return y.reshape(x.shape), mean, var, inv_std


def batch_norm_backward(g, x, mean, inv_std, weight, training):
    """(dx, dgamma, dbeta) of batch norm from the saved input and statistics.

    With S = Σ g and T = Σ g·(x − μ) per channel (m values each):
        dβ = S,  dγ = T·inv_std,
        dx = γ·inv_std·g − γ·inv_std·S/m − γ·inv_std³·T/m·(x − μ)   (training)
        dx = γ·inv_std·g                                            (evaluation)
    """
    g3, x3 = _ncp(g), _ncp(x)
    c = g3.shape[1]
    m = g3.shape[0] * g3.shape[2]
    s = np.empty(c, np.float64)
    t = np.empty(c, np.float64)
    bn_backward_sums(g3, x3, mean, s, t)
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    a = gamma * inv_std
    if training:
        b = -a * s / m
        kk = -a * inv_std * inv_std * t / m
    else:
        b = np.zeros(c)
        kk = np.zeros(c)
    dx = np.empty(g3.shape, g.dtype)
    dt = g.dtype
    bn_backward_dx(g3, x3, mean.astype(dt), a.astype(dt), b.astype(dt), kk.astype(dt), dx)
    return dx.reshape(g.shape), (t * inv_std).astype(dt), s.astype(dt)


def relu(x):
    """y = max(x, 0) for a contiguous x."""
    y = np.empty_like(x)
    relu_forward(x.reshape(-1), y.reshape(-1))
    return y


def relu_grad(g, y):
    g = np.ascontiguousarray(g)
    dx = np.empty_like(g)
    relu_backward(g.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx
