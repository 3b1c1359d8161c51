"""Hand-written Numba kernels for minigrad's CPU fast path.

Every kernel here has a plain NumPy twin in ``minigrad/ops`` (the reference
path, the code to read first); these compute the same numbers faster by

* running on all the cores: each kernel is serial, compiled without the GIL
  (``nogil=True``) and takes a range ``lo:hi`` of independent work items
  (usually (image, channel) planes, so no two threads ever write the same
  element and no atomics are needed); :func:`parallel_for` and the conv
  drivers hand the ranges to a small pool of Python threads.  Small work stays
  on the calling thread, and Numba's own thread pool is never used: it costs
  about 0.2 ms to start per call and competes with the BLAS threads;
* indexing views with the loop counter itself (``d[t] = s[t]``), so Numba can
  drop its negative-index check and vectorise the loop;
* doing in one pass over memory what NumPy does in several (batch-norm's
  statistics, scale and shift; the bias add fused into the layout change that
  follows a convolution's GEMM; the bias gradient fused into the one before);
* writing into buffers the caller passes in, so big scratch arrays can be
  allocated once and reused (fresh memory on a virtual machine costs a page
  fault per 4 KiB the first time it is touched, which can cost more than the
  work itself).

3x3 convolutions with padding 1 (stride 1 or 2, fewer than 256 x 256
input x output channels) run on the direct kernels of
``kernels/cpu_conv3x3.py``, which read three shifted copies of each input
channel instead of im2col's nine; stride-1 layers with many channels on
planes of 8x8 and less on the channels-last kernels of
``kernels/cpu_conv3x3_nhwc.py`` (which also take the forward of stride-2
layers with 64 output channels and more, and the input gradient of those
whose input channels fill half a register block), and on planes of at most 4
pixels (with 256 x 256 channels and more, where NumPy's BLAS has vectors as
wide as these kernels) as one BLAS product per tap and row of pixels
(:func:`_pixel_gemm_forward`); the other convolutions go
through im2col and NumPy's BLAS.  :func:`conv2d_routes` names the kernels
a convolution takes.

Conventions: arrays are C-contiguous NCHW; outputs are the last argument(s)
and are fully overwritten; float32 and float64 both work (float64 is what the
gradient checks use).  Each kernel is compiled on first use for the dtype it
sees and cached on disk (``cache=True``), so importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import itertools
import threading

import numpy as np
from numba import njit

from . import cpu_pool
from .cpu_conv3x3 import (CV, KR, READ_AHEAD, WG_LANES, WG_PLANES, WG_SHIFT_X, conv3x3_chunk,
                          conv3x3_input_grad_s2, image_sums, out_columns, pack_blocks, plane_sums,
                          shifted_planes, weight_grad_chunk)
from .cpu_conv3x3_nhwc import (CT, PB, TILE, channel_block, conv3x3_nhwc_chunk,
                               input_grad_s2_nhwc_chunk, pack_nhwc, to_nhwc, weight_grad_block,
                               weight_grad_nhwc)
from .simd import VECTOR_BYTES


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


@njit(nogil=True, cache=True)
def _im2col_row_same_width(x3, c, i, j, ph, pw, w, lo, hi, n0, n1, crow):
    """One im2col row (c, i, j) of a stride-1 convolution whose output is as
    big as its input (3x3 with padding 1, any 1x1): the output rows then
    follow each other in memory exactly as the input rows do, so each image's
    part of the row is a single block copy of the plane shifted by
    (i - ph) rows and (j - pw) columns, plus zeros where the shift leaves the
    image (padding rows, and the edge column the shift wrapped around).
    ``x3`` is the input as (N, C, H·W)."""
    plane = x3.shape[2]
    h = plane // w
    oy_lo = max(0, ph - i)                      # first/last output row inside the image
    oy_hi = min(h, h + ph - i)
    s0 = (oy_lo + i - ph) * w + (j - pw)        # where the block starts in the plane
    length = max(0, oy_hi - oy_lo) * w
    a = max(0, -s0)                             # clip to the plane; what is clipped
    e = min(length, plane - s0)                 # lies in an edge column, zeroed below
    top = oy_lo * w
    bottom = max(oy_hi, oy_lo) * w
    for b in range(n1 - n0):
        d = crow[b * plane:(b + 1) * plane]     # this image's part of the row
        for t in range(top):                    # padding rows above ...
            d[t] = 0
        dz = d[bottom:]
        for t in range(plane - bottom):         # ... and below
            dz[t] = 0
        if e > a:
            dv = d[top + a:top + e]
            sv = x3[n0 + b, c, s0 + a:s0 + e]
            for t in range(e - a):              # the block copy (vectorised)
                dv[t] = sv[t]
        # the edge column(s) the shift wrapped around: one store per row
        # (a loop per row over its one or two edge pixels costs more than the copy)
        for t in range(lo):
            for oy in range(oy_lo, oy_hi):
                d[oy * w + t] = 0
        for t in range(hi, w):
            for oy in range(oy_lo, oy_hi):
                d[oy * w + t] = 0


@njit(nogil=True, cache=True)
def _im2col_row(x, c, i, j, sh, sw, ph, pw, n0, n1, lo, hi, ho, wo, crow):
    """One im2col row (c, i, j) for any other geometry (strided, or output
    smaller than the input): one output row at a time.  The rows are short
    (16 pixels for a stride-2 layer of a CIFAR network), so the loops index
    flat arrays directly (making a view per output row would cost more than
    the copy); only a contiguous copy (sw = 1) goes through a view, where
    Numba vectorises it."""
    _, c_in, h, w = x.shape
    plane = ho * wo
    x1 = x.ravel()
    for b in range(n1 - n0):
        first = ((n0 + b) * c_in + c) * h * w       # x index of the plane's pixel (0, 0)
        for oy in range(ho):
            o = b * plane + oy * wo
            iy = oy * sh + i - ph
            if iy < 0 or iy >= h:
                for t in range(wo):
                    crow[o + t] = 0
                continue
            for t in range(lo):
                crow[o + t] = 0
            src = first + iy * w + lo * sw + j - pw
            if sw == 1:
                dv = crow[o + lo:o + hi]
                sv = x1[src:src + hi - lo]
                for t in range(hi - lo):
                    dv[t] = sv[t]
            else:
                for t in range(hi - lo):
                    crow[o + lo + t] = x1[src + t * sw]
            for t in range(hi, wo):
                crow[o + t] = 0


# Output planes of at most this many pixels (8x8 and smaller: VGG-16's last
# three stages on CIFAR) go through a table of source pixels instead of row
# by row: with rows of 2 to 8 pixels the bookkeeping per row cost more than
# the copy (the im2col of a 512-channel 2x2 layer took 18 ms for 9 MB; with
# the table 2 ms).  At 16x16 the two ways were equally fast.
SMALL_PLANE = 64


@njit(nogil=True, cache=True)
def _source_pixels(h, w, kh, kw, sh, sw, ph, pw, ho, wo):
    """tab[i·kw + j, oy·wo + ox] = the input pixel iy·w + ix that tap (i, j)
    reads at output (oy, ox), or −1 where it falls in the zero padding."""
    tab = np.empty((kh * kw, ho * wo), np.int64)
    for i in range(kh):
        for j in range(kw):
            for oy in range(ho):
                for ox in range(wo):
                    iy, ix = oy * sh + i - ph, ox * sw + j - pw
                    inside = 0 <= iy < h and 0 <= ix < w
                    tab[i * kw + j, oy * wo + ox] = iy * w + ix if inside else -1
    return tab


@njit(nogil=True, cache=True)
def _im2col_row_small(x3, c, tab, n0, n1, crow):
    """One im2col row for a small output plane: crow[b·P + p] = x3[n0 + b, c, tab[p]]
    (0 where tab[p] < 0), P = len(tab)."""
    plane = tab.shape[0]
    for b in range(n1 - n0):
        src = x3[n0 + b, c]
        d = crow[b * plane:]
        for q in range(plane):
            t = tab[q]
            d[q] = src[t] if t >= 0 else 0


@njit(nogil=True, cache=True)
def im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols, r0=0, r1=-1):
    """cols[(c, i, j), (n − n0, oy, ox)] = x_pad[n, c, oy·sh + i, ox·sw + j] for n0 <= n < n1.

    ``cols`` has shape (C·kh·kw, (n1 − n0)·Ho·Wo); only rows r0 <= r < r1 are
    written (all when r1 < 0), so several threads can share one matrix.  Each
    row is written front to back (sequential stores), reading one input row
    per output row; positions in the zero padding are written as 0.
    Serial and GIL-free: the conv drivers below run it on their own threads.
    """
    _, c_in, h, w = x.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    x3 = x.reshape(x.shape[0], c_in, h * w)
    if r1 < 0:
        r1 = c_in * kh * kw
    if ho * wo <= SMALL_PLANE:
        tab = _source_pixels(h, w, kh, kw, sh, sw, ph, pw, ho, wo)
        for r in range(r0, r1):
            _im2col_row_small(x3, r // (kh * kw), tab[r % (kh * kw)], n0, n1, cols[r])
        return
    # Copies index views with the loop counter itself (d[t] = s[t]): Numba
    # then knows the index is >= 0, drops its negative-index check and
    # vectorises the copy (about 8x faster than slice assignment on 32-pixel rows).
    for r in range(r0, r1):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        crow = cols[r]
        lo, hi = _valid_range(w, wo, j, sw, pw)
        if sh == 1 and sw == 1 and wo == w and ho == h:
            _im2col_row_same_width(x3, c, i, j, ph, pw, w, lo, hi, n0, n1, crow)
            continue
        _im2col_row(x, c, i, j, sh, sw, ph, pw, n0, n1, lo, hi, ho, wo, crow)


@njit(nogil=True, cache=True)
def col2im(cols, kh, kw, sh, sw, ph, pw, n0, n1, dx, c0=0, c1=-1):
    """The adjoint of :func:`im2col`: dx[n0:n1] = Σ of the columns copied from each pixel.

    Works plane by plane over the (channel, image) pairs with c0 <= c < c1
    (all channels when c1 < 0): it zeroes a plane and adds every column entry
    that came from it, so threads given different channels never write the
    same pixel.
    """
    _, c_in, h, w = dx.shape
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    plane = ho * wo
    if c1 < 0:
        c1 = c_in
    if plane <= SMALL_PLANE:
        _col2im_small(cols, _source_pixels(h, w, kh, kw, sh, sw, ph, pw, ho, wo),
                      n0, n1, dx, c0, c1)
        return
    for c in range(c0, c1):
        for b in range(n1 - n0):
            n = n0 + b
            dp = dx[n, c].ravel()
            for t in range(h * w):
                dp[t] = 0
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    lo, hi = _valid_range(w, wo, j, sw, pw)
                    crow = cols[row]
                    for oy in range(ho):
                        iy = oy * sh + i - ph
                        if iy < 0 or iy >= h:
                            continue
                        o = b * plane + oy * wo + lo
                        q = iy * w + lo * sw + j - pw
                        sv = crow[o:o + hi - lo]
                        dv = dp[q:]
                        if sw == 1:                 # contiguous: vectorised
                            for t in range(hi - lo):
                                dv[t] += sv[t]
                        else:
                            for t in range(hi - lo):
                                dv[t * sw] += sv[t]


@njit(nogil=True, cache=True)
def _col2im_small(cols, tab, n0, n1, dx, c0, c1):
    """:func:`col2im` for a small output plane, through the table of source
    pixels of :func:`_source_pixels`: dx[n, c, tab[tap, p]] += cols[c·taps + tap, b·P + p]."""
    taps, plane = tab.shape
    hw = dx.shape[2] * dx.shape[3]
    for c in range(c0, c1):
        for b in range(n1 - n0):
            dp = dx[n0 + b, c].ravel()
            for t in range(hw):
                dp[t] = 0
            for tap in range(taps):
                sv = cols[c * taps + tap, b * plane:]
                tt = tab[tap]
                for q in range(plane):
                    if tt[q] >= 0:
                        dp[tt[q]] += sv[q]


@njit(nogil=True, cache=True)
def cnp_to_nchw(y2, bias, use_bias, y, k0=0, k1=-1):
    """y[n, k, p] = y2[k, n·P + p] (+ bias[k]) for k0 <= k < k1 (all when k1 < 0):
    the GEMM's (Cout, N·P) result in NCHW.

    ``y`` is (N, Cout, P); ``bias`` is read only when ``use_bias``.
    """
    n_img, k_out, p_len = y.shape
    if k1 < 0:
        k1 = k_out
    for n in range(n_img):
        src = n * p_len
        for k in range(k0, k1):
            b = bias[k] if use_bias else 0
            dv = y[n, k]
            sv = y2[k, src:src + p_len]
            for p in range(p_len):
                dv[p] = sv[p] + b


@njit(nogil=True, cache=True)
def nchw_to_cnp(g, g2, db, k0=0, k1=-1):
    """g2[k, n·P + p] = g[n, k, p], and db[k] = Σ_{n,p} g[n, k, p] in the same pass,
    for k0 <= k < k1 (all when k1 < 0).

    The layout change before a convolution's backward GEMMs, with the bias
    gradient computed on the way (in float64).
    """
    n_img, k_out, p_len = g.shape
    if k1 < 0:
        k1 = k_out
    for k in range(k0, k1):
        acc = 0.0
        for n in range(n_img):
            dst = n * p_len
            sv = g[n, k]
            dv = g2[k, dst:dst + p_len]
            for p in range(p_len):
                v = sv[p]
                dv[p] = v
                acc += v
        db[k] = acc


# ---------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def maxpool2d_forward(x, kh, kw, sh, sw, ph, pw, y, idx, lo, hi):
    """y[n, c, oy, ox] = max of the window; idx holds the flat position iy·W + ix
    of the (first) maximum in its input plane, for the backward pass.  Planes
    t = n·C + c with lo <= t < hi.

    Padding counts as −∞ (as in PyTorch), so a window always holds a real pixel
    when padding <= kernel / 2.
    """
    n_img, c_in, h, w = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for t in range(lo, hi):
        n = t // c_in
        c = t - n * c_in
        xp = x[n, c]
        yp = y[n, c]
        ip = idx[n, c]
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
                        v = xp[iy, ix]
                        if v > best or arg < 0:
                            best = v
                            arg = iy * w + ix
                yp[oy, ox] = best
                ip[oy, ox] = arg


@njit(nogil=True, cache=True)
def maxpool2x2_forward(x, y, idx, lo, hi):
    """:func:`maxpool2d_forward` for 2x2 windows, stride 2, no padding (VGG's
    pools), the same numbers: each window's four values compared in the same
    order (the first maximum wins; a NaN first stays), through flat views
    made once (the general kernel, with its bounds tests per tap and a view
    per plane, took 4-5x as long on VGG-16's first pool)."""
    h, w = np.uint64(x.shape[2]), np.uint64(x.shape[3])
    ho, wo = np.uint64(y.shape[2]), np.uint64(y.shape[3])
    xf, yf, jf = x.reshape(-1), y.reshape(-1), idx.reshape(-1)
    two = np.uint64(2)
    for t in range(np.uint64(lo), np.uint64(hi)):   # (unsigned indices: see shifted_planes)
        src, dst = t * h * w, t * ho * wo
        for oy in range(ho):
            r0 = two * oy * w
            r1 = r0 + w
            o = dst + oy * wo
            for ox in range(wo):
                c0 = r0 + two * ox
                c1 = r1 + two * ox
                best = xf[src + c0]
                arg = c0
                v = xf[src + c0 + np.uint64(1)]
                if v > best:
                    best = v
                    arg = c0 + np.uint64(1)
                v = xf[src + c1]
                if v > best:
                    best = v
                    arg = c1
                v = xf[src + c1 + np.uint64(1)]
                if v > best:
                    best = v
                    arg = c1 + np.uint64(1)
                yf[o + ox] = best
                jf[o + ox] = arg


@njit(nogil=True, cache=True)
def maxpool2d_backward(g, idx, dx, lo, hi):
    """dx = 0 except at each window's maximum, which receives that window's gradient
    (summed when overlapping windows share a maximum).  Planes lo <= t < hi,
    through flat views made once: a view per plane took 10-25x as long as the
    work on VGG-16's 2x2 to 8x8 planes."""
    plane = np.uint64(dx.shape[2] * dx.shape[3])
    out = np.uint64(g.shape[2] * g.shape[3])
    df, gf, jf = dx.reshape(-1), g.reshape(-1), idx.reshape(-1)
    for t in range(np.uint64(lo), np.uint64(hi)):
        d, e = t * plane, t * out           # (unsigned indices: see shifted_planes)
        for q in range(plane):              # (a plane at a time: zeroed while in L1)
            df[d + q] = 0
        for q in range(out):
            a = jf[e + q]
            if a >= 0:
                df[d + np.uint64(a)] += gf[e + q]


# ---------------------------------------------------------------------------
# Batch normalisation (NCHW viewed as (N, C, P): statistics per channel over N, P)
# ---------------------------------------------------------------------------
# Each kernel takes whole channels (lo <= c < hi), one after another: a
# channel's values (N planes) fit in a core's L2 cache (512 KiB for 128
# images of 32x32), so its second and third passes read the cache, not memory.
# The loops index the (N, C, P) arrays directly (x[n, c, p]) rather than
# through a view per plane: on 8x8 images a plane is 64 values, and making
# 128 x 3 views per channel took longer than the arithmetic (3.4x the time).
# Sums go along each plane in the array's dtype (in SIMD vectors) and across
# the planes in float64: the same accuracy for float32, at twice the lanes.
# The sums may be reassociated (that is what makes them vector sums, their
# order fixed by the shapes), but products are never fused into them: with
# both allowed, the compiled code fused a different set of them when a
# caller was compiled in the process than when it was loaded from Numba's
# cache, so the same run gave other numbers the second time (batch norm's
# backward, measured on 2026-12-02; the test of fresh against cached
# kernels in tests/test_fast_paths.py guards every kernel against this).
SUMS = {"reassoc"}


@njit(nogil=True, cache=True, fastmath=SUMS)
def _channel_stats(x, c):
    """(mean, biased variance) of channel c of x (N, C, P), in two passes (the
    variance from the deviations: no cancellation)."""
    n_img, _, p_len = x.shape
    m = n_img * p_len
    s = 0.0
    for n in range(n_img):
        rs = x.dtype.type(0)
        for p in range(p_len):
            rs += x[n, c, p]
        s += rs
    mu = s / m
    mu_t = x.dtype.type(mu)
    q = 0.0
    for n in range(n_img):
        rq = x.dtype.type(0)
        for p in range(p_len):
            d = x[n, c, p] - mu_t
            rq += d * d
        q += rq
    return mu, q / m


@njit(nogil=True, cache=True, fastmath={"contract"})
def _scale_shift(x, r, relu, a, b, y, c):
    """y[:, c] = x[:, c]·a + b, then + r[:, c] unless r is (N, C, 0), then
    max(·, 0) if ``relu``; each step rounded as the separate ops round it (a
    fused multiply-add, then a plain add: no reassociation), so the fused op
    gives the numbers of batch norm, add and ReLU run one after another."""
    n_img, _, p_len = x.shape
    zero = x.dtype.type(0)          # not the literal 0, which would make v a float64
    for n in range(n_img):
        if r.shape[2] == 0 and not relu:
            for p in range(p_len):
                y[n, c, p] = x[n, c, p] * a + b
        elif r.shape[2] == 0:
            for p in range(p_len):
                v = x[n, c, p] * a + b
                y[n, c, p] = v if v > 0 else zero
        else:
            for p in range(p_len):
                v = (x[n, c, p] * a + b) + r[n, c, p]
                y[n, c, p] = v if v > 0 else zero


@njit(nogil=True, cache=True)
def bn_forward_channels(x, r, relu, gamma, beta, eps, training, mean, var, scale, shift, y,
                        lo, hi):
    """Batch norm of the channels lo <= c < hi of x (N, C, P) into y, with the
    residual r (N, C, P) added and ReLU applied in the same pass where asked:
    y = max(BN(x) + r, 0).  An r of shape (N, C, 0) means no residual.

    Training: mean[c] and the biased var[c] of the channel are computed and
    stored (:func:`_channel_stats`); evaluation: they are given.  Then
    scale = γ/√(var + ε), shift = β − mean·scale (float64, stored in x's
    dtype) and y = x·scale + shift (+ r, max 0), a third pass.
    """
    for c in range(lo, hi):
        if training:
            mean[c], var[c] = _channel_stats(x, c)
        inv_std = 1.0 / np.sqrt(var[c] + eps)
        scale[c] = gamma[c] * inv_std
        shift[c] = beta[c] - mean[c] * gamma[c] * inv_std
        _scale_shift(x, r, relu, scale[c], shift[c], y, c)


@njit(nogil=True, cache=True)
def _relu_mask(g, z, out, c, oc):
    """out[:, oc] = g[:, c]·[z[:, c] > 0] (a fused ReLU's backward: z is its output)."""
    n_img, _, p_len = g.shape
    zero = g.dtype.type(0)
    for n in range(n_img):
        for p in range(p_len):
            out[n, oc, p] = g[n, c, p] if z[n, c, p] > 0 else zero


@njit(nogil=True, cache=True, fastmath=SUMS)
def _grad_sums(g, cg, x, c, mu):
    """S = Σ g[:, cg] and T = Σ g[:, cg]·(x[:, c] − μ) (sums as in
    :func:`_channel_stats`)."""
    n_img, _, p_len = g.shape
    s = 0.0
    t = 0.0
    for n in range(n_img):
        rs = g.dtype.type(0)
        rt = g.dtype.type(0)
        for p in range(p_len):
            v = g[n, cg, p]
            rs += v
            rt += v * (x[n, c, p] - mu)
        s += rs
        t += rt
    return s, t


@njit(nogil=True, cache=True, fastmath={"contract"})
def _bn_dx(g, cg, x, c, a, k, mu, b, dx):
    """dx[:, c] = a·g[:, cg] + k·(x[:, c] − μ) + b."""
    n_img, _, p_len = g.shape
    for n in range(n_img):
        for p in range(p_len):
            dx[n, c, p] = a * g[n, cg, p] + k * (x[n, c, p] - mu) + b


@njit(nogil=True, cache=True)
def bn_backward_channels(g, z, x, mean, inv_std, gamma, training, coef, dx, gm, dgamma, dbeta,
                         lo, hi):
    """Batch-norm backward of the channels lo <= c < hi (see
    ``batch_norm_backward`` for the formulas): S = Σ g and T = Σ g·(x − μ) in
    one pass, dγ = T·inv_std, dβ = S, then dx in a second pass.  ``coef``
    (4, C) in g's dtype receives the coefficients a, b, k of dx and μ.

    After a fused ReLU, z (N, C, P) is the op's output (z of shape (N, C, 0):
    no ReLU), and g is masked first, g·[z > 0], into gm (N, C, P), the
    residual's gradient, or where gm is (N, C, 0) into a buffer of one
    channel, which stays in the cache.  The two passes then read the masked
    gradient with the very code that reads g without a ReLU, so the fused op
    and batch norm after a separate ReLU give the same numbers.
    """
    n_img, _, p_len = g.shape
    m = n_img * p_len
    masked = z.shape[2] != 0
    keep = gm.shape[2] != 0
    channel = np.empty((n_img, 1, p_len if masked and not keep else 0), g.dtype)
    for c in range(lo, hi):
        src, cs = g, c
        if masked and keep:
            _relu_mask(g, z, gm, c, c)
            src, cs = gm, c
        elif masked:
            _relu_mask(g, z, channel, c, 0)
            src, cs = channel, 0
        mu = g.dtype.type(mean[c])
        s, t = _grad_sums(src, cs, x, c, mu)
        inv = inv_std[c]
        coef[0, c] = gamma[c] * inv                                  # a
        coef[1, c] = -gamma[c] * inv * s / m if training else 0.0    # b
        coef[2, c] = -gamma[c] * inv ** 3 * t / m if training else 0.0   # k
        coef[3, c] = mu
        _bn_dx(src, cs, x, c, coef[0, c], coef[2, c], coef[3, c], coef[1, c], dx)
        dgamma[c] = t * inv
        dbeta[c] = s


# ---------------------------------------------------------------------------
# ResNet's option-A shortcut: every s-th pixel, zero channels appended (images lo <= n < hi)
# ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def subsample_pad_forward(x, s, y, lo, hi):
    """y[n, c, oy, ox] = x[n, c, s·oy, s·ox] for c < C (x's channels), 0 for the rest."""
    cin = x.shape[1]
    cout, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for n in range(lo, hi):
        for c in range(cin):
            for oy in range(ho):
                for ox in range(wo):
                    y[n, c, oy, ox] = x[n, c, s * oy, s * ox]
        for c in range(cin, cout):
            for oy in range(ho):
                for ox in range(wo):
                    y[n, c, oy, ox] = zero


@njit(nogil=True, cache=True)
def subsample_pad_backward(g, s, dx, lo, hi):
    """dx[n, c, s·oy, s·ox] = g[n, c, oy, ox] for c < C (dx's channels), 0 elsewhere."""
    cin, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    ho, wo = g.shape[2], g.shape[3]
    zero = dx.dtype.type(0)
    for n in range(lo, hi):
        for c in range(cin):
            for iy in range(h):
                for ix in range(w):
                    dx[n, c, iy, ix] = zero
            for oy in range(ho):
                for ox in range(wo):
                    dx[n, c, s * oy, s * ox] = g[n, c, oy, ox]


# ---------------------------------------------------------------------------
# ReLU (flat, contiguous arrays; elements lo <= i < hi)
# ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def relu_forward(x, y, lo, hi):
    """y = max(x, 0)."""
    xv = x[lo:hi]
    yv = y[lo:hi]
    for i in range(hi - lo):
        v = xv[i]
        yv[i] = v if v > 0 else 0


@njit(nogil=True, cache=True)
def add_forward(x, y, z, lo, hi):
    """z = x + y (flat, contiguous, same shape)."""
    xv = x[lo:hi]
    yv = y[lo:hi]
    zv = z[lo:hi]
    for i in range(hi - lo):
        zv[i] = xv[i] + yv[i]


@njit(nogil=True, cache=True)
def relu_backward(g, y, dx, lo, hi):
    """dx = g where the output y > 0, else 0."""
    gv = g[lo:hi]
    yv = y[lo:hi]
    dv = dx[lo:hi]
    for i in range(hi - lo):
        dv[i] = gv[i] if yv[i] > 0 else 0


# ---------------------------------------------------------------------------
# SGD with momentum, in place (flat, contiguous arrays; elements lo <= i < hi)
# ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def sgd_momentum_step(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first, lo, hi):
    """One ``torch.optim.SGD`` step for one parameter, in place on ``p`` and ``buf``:

        d = g + weight_decay·p
        buf = d (first step)  or  momentum·buf + (1 − dampening)·d
        p -= lr · (d + momentum·buf  if nesterov  else  buf)
    """
    pv = p[lo:hi]
    gv = g[lo:hi]
    bv = buf[lo:hi]
    for i in range(hi - lo):
        d = gv[i] + weight_decay * pv[i]
        if first:
            b = d
        else:
            b = momentum * bv[i] + (1 - dampening) * d
        bv[i] = b
        if nesterov:
            pv[i] -= lr * (d + momentum * b)
        else:
            pv[i] -= lr * b


@njit(nogil=True, cache=True)
def sgd_step(p, g, lr, weight_decay, lo, hi):
    """Plain SGD (no momentum), in place: p -= lr·(g + weight_decay·p)."""
    pv = p[lo:hi]
    gv = g[lo:hi]
    for i in range(hi - lo):
        pv[i] -= lr * (gv[i] + weight_decay * pv[i])


# ===========================================================================
# Drivers: what the ops in minigrad/ops call (plain Python around the kernels)
# ===========================================================================
_BUFFERS = {}
# im2col columns per chunk of images.  Small enough that a chunk's columns are
# still in the cache when the GEMM reads them; a single image bigger than this
# is one chunk on its own.
CHUNK_BYTES = 4 << 20


def scratch(name, shape, dtype):
    """A reusable scratch array (one per thread, name, shape and dtype), kept
    for the life of the process: big temporaries are allocated and
    page-faulted once.  Per thread, so two user threads running convolutions
    at the same time never share a buffer."""
    key = (threading.get_ident(), name, shape, np.dtype(dtype))
    a = _BUFFERS.get(key)
    if a is None:
        a = _BUFFERS[key] = np.empty(shape, dtype)
    return a


def _scratch2d(name, rows, cols, capacity, dtype):
    """A C-contiguous (rows, cols) view into a flat scratch buffer of
    ``rows * capacity`` elements (the last chunk of a batch may be shorter)."""
    flat = scratch(name, (rows * capacity,), dtype)
    return flat[:rows * cols].reshape(rows, cols)


def clear_scratch():
    """Free every scratch buffer (they are re-made on the next call)."""
    _BUFFERS.clear()


def _chunks(n, bytes_per_image, at_most=None, target=None):
    """Split n images into chunks whose scratch data take about ``target``
    bytes (CHUNK_BYTES of im2col columns by default), and of at most
    ``at_most`` images each when given."""
    target = CHUNK_BYTES if target is None else target
    nb = max(1, min(n, at_most or n, target // max(1, bytes_per_image)))
    return [(n0, min(n, n0 + nb)) for n0 in range(0, n, nb)]


def _guided(items, largest, threads):
    """Bounds (lo, hi) of consecutive pieces of range(items), of at most
    ``largest`` items each, that shrink towards the end (to a 1/(2·threads)
    share of what is left, down to an eighth of ``largest``): the threads
    taking them one at a time run out of work at about the same time.  The
    same arguments give the same pieces, whatever the timing."""
    smallest = max(1, largest // 8)
    bounds, lo = [], 0
    while lo < items:
        size = max(smallest, min(largest, (items - lo) // (2 * threads)))
        bounds.append((lo, min(items, lo + size)))
        lo += size
    return bounds


PART_BUFFERS = 3        # buffers per thread for the parts of an ordered sum


class _SharedChunks:
    """Chunks of about ``target`` bytes of scratch data, at least four per
    thread and smaller towards the end (:func:`_guided`), for the threads to
    take one at a time (:meth:`next`): a thread that falls behind simply
    takes fewer, so the threads finish together.

    Each chunk comes with its index.  A reduction over the batch (the weight
    and bias gradients) adds the chunks' parts in chunk order
    (:meth:`add_in_order`, or one slot per chunk summed at the end), so its
    result never depends on which thread ran which chunk: runs are
    bit-identical.
    """

    def __init__(self, n, bytes_per_image, threads, target=None):
        nb = _chunks(n, bytes_per_image, at_most=-(-n // (4 * threads)), target=target)[0][1]
        self.chunks = _guided(n, nb, threads)
        self.count = len(self.chunks)
        self.largest = max(hi - lo for lo, hi in self.chunks)
        self._counter = itertools.count()
        self._added = 0                  # the parts of chunks 0 .. _added - 1 are in
        self._pending = {}               # chunk index -> (its part, the buffer's owner)
        self._free = {}                  # thread -> buffers of its that are free
        self._made = {}                  # thread -> how many buffers it has
        self._turn = threading.Condition()
        self._failed = False

    def next(self):
        """(index, (n0, n1)) of the next chunk not taken yet, or None."""
        i = next(self._counter)          # atomic under the GIL
        return (i, self.chunks[i]) if i < self.count else None

    def part_buffer(self, shape, dtype):
        """A buffer for the calling thread's next part: one of at most
        PART_BUFFERS scratch buffers per thread, free again once its part has
        been added.  A thread waits only if all of its buffers hold parts that
        wait for an earlier chunk; the thread holding the earliest chunk still
        out has all its earlier parts added, so it never waits."""
        me = threading.get_ident()
        with self._turn:
            free = self._free.setdefault(me, [])
            while not free and self._made.get(me, 0) >= PART_BUFFERS and not self._failed:
                self._turn.wait()
            self._check()
            if free:
                return free.pop()
            j = self._made[me] = self._made.get(me, 0) + 1
        return scratch(("part", j), shape, dtype)

    def add_in_order(self, i, part, total):
        """Hand in ``part``, the part of chunk i (from :meth:`part_buffer`):
        the parts are added into ``total`` in chunk order, each as soon as all
        the earlier ones are in, by whichever thread completes the run."""
        with self._turn:
            self._check()
            self._pending[i] = (part, threading.get_ident())
            while self._added in self._pending:
                done, owner = self._pending.pop(self._added)
                total += done
                self._free.setdefault(owner, []).append(done)
                self._added += 1
            self._turn.notify_all()

    def _check(self):
        if self._failed:
            raise RuntimeError("another thread of this operation failed")

    def run(self, work, threads):
        """work(t) on ``threads`` threads; if one fails, the others stop
        waiting for its parts."""
        def guarded(t):
            try:
                work(t)
            except BaseException:
                with self._turn:
                    self._failed = True
                    self._turn.notify_all()
                raise
        _run(guarded, threads)


# ---------------------------------------------------------------------------
# Threads for the convolution drivers
# ---------------------------------------------------------------------------
# A convolution alternates copies (im2col, layout changes) with BLAS products.
# With Numba's thread pool for the copies and the BLAS's own pool for the
# products, the two pools hand the cores back and forth on every step, and a
# BLAS thread that spins after its product slows the next copy down (measured:
# the three steps of a ResNet-20 convolution took 1.7x their separate times).
# So the drivers use one small pool of Python threads running the GIL-free
# kernels above:
#
# * many images: each thread takes whole chunks of images, one at a time from
#   a shared list, and runs im2col -> GEMM -> layout on them with a
#   single-threaded BLAS, so a chunk's columns go from one core's cache
#   straight into its GEMM;
# * few large images (a 224x224 VGG on one image): each step is split over the
#   threads, and the BLAS uses all of them for the product.
#
# The pool (``kernels/cpu_pool.py``) hands a job to its threads in about a
# microsecond, where waking a sleeping thread takes 50-100 us on a virtual
# machine: its threads spin for a moment before they sleep.

_BLAS_CONTROL = {"ctl": None}       # threadpoolctl's controller, made on first use


_THREADS = {"n": None}


def _threads():
    """How many threads the kernels use: ``minigrad.set_num_threads`` (Numba's
    setting, by default the number of cores), read once and kept (asking Numba
    took 10 us, some 200 times per ResNet-20 step)."""
    n = _THREADS["n"]
    if n is None:
        import numba
        n = _THREADS["n"] = numba.get_num_threads()
    return n


def set_threads(n):
    """Use n threads from now on (Numba's setting too)."""
    import numba
    numba.set_num_threads(int(n))
    _THREADS["n"] = numba.get_num_threads()


def _run(fn, n):
    """fn(t) for t in range(n), on n threads (the calling thread runs t = 0)."""
    if n <= 1:
        fn(0)
        return
    cpu_pool.pool(n - 1).run(fn, n)


# Slices per thread of a split loop.  Each slice is one call from Python, and
# a thread that comes back from one needs the interpreter's lock, which it
# waits for (asleep) while the other thread holds it: with the slices of
# _guided (smaller and smaller, about 12 for 2 threads) a ReLU of 2-8 MB took
# 1.3-1.9x as long as with 2 equal slices per thread.  Two still let a thread
# that starts late take fewer.
SLICES_PER_THREAD = 2


def _split(fn, items, n):
    """fn(lo, hi) over range(items) cut into SLICES_PER_THREAD·n equal slices,
    that n threads take one at a time (a thread that falls behind takes
    fewer)."""
    n = max(1, min(n, items))
    p = min(items, SLICES_PER_THREAD * n)
    bounds = [(items * i // p, items * (i + 1) // p) for i in range(p)]
    counter = itertools.count()

    def work(_):
        while (i := next(counter)) < len(bounds):
            fn(*bounds[i])
    _run(work, n)


# Work smaller than this (in array elements) runs on the calling thread: waking
# the other threads costs more than the work itself (tens of microseconds).
SERIAL_BELOW = 1 << 15


def parallel_for(kernel, items, size, *args):
    """kernel(*args, lo, hi) over range(items), split over the threads when the
    work (``size`` array elements) is big enough to be worth it."""
    threads = _threads()
    if threads <= 1 or items < 2 or size < SERIAL_BELOW:
        kernel(*args, 0, items)
    else:
        _split(lambda lo, hi: kernel(*args, lo, hi), items, threads)


def _blas_controller():
    """threadpoolctl's controller of NumPy's BLAS, or False without threadpoolctl."""
    ctl = _BLAS_CONTROL["ctl"]
    if ctl is None:
        try:
            from threadpoolctl import ThreadpoolController
            ctl = ThreadpoolController()
        except Exception:           # threadpoolctl missing: leave the BLAS alone
            ctl = False
        _BLAS_CONTROL["ctl"] = ctl
    return ctl


def _single_threaded_blas():
    """Context in which the BLAS runs each product on the calling thread only
    (threadpoolctl); a no-op where the BLAS cannot be controlled."""
    ctl = _blas_controller()
    if not ctl:
        return contextlib.nullcontext()
    return ctl.limit(limits=1, user_api="blas")


# OpenBLAS's cores whose kernels use 512-bit vectors (its names for them, as
# threadpoolctl reports them).
OPENBLAS_512_BIT_CORES = {"skylakex", "cooperlake", "sapphirerapids"}
_BLAS_WIDTH = {}                    # blas_vector_bytes(), found on first use


def blas_core():
    """(library, core) of NumPy's BLAS as threadpoolctl names them, e.g.
    ("openblas", "Haswell"); (None, None) where it cannot see one, and the
    core None where the library does not say."""
    ctl = _blas_controller()
    libs = [lib for lib in (ctl.lib_controllers if ctl else []) if lib.user_api == "blas"]
    if not libs:
        return None, None
    return libs[0].internal_api, getattr(libs[0], "architecture", None)


def blas_vector_bytes():
    """The width in bytes of the vectors NumPy's BLAS computes with: 32 for
    OpenBLAS's AVX2 and older cores, 64 for its AVX-512 ones; VECTOR_BYTES
    where it cannot tell (no threadpoolctl, or another BLAS).  OpenBLAS
    0.3.31 runs its Haswell (AVX2) kernels on the AMD EPYC family 26 model 2,
    which has AVX-512: there minigrad's own kernels are twice as wide."""
    if "bytes" not in _BLAS_WIDTH:
        api, core = blas_core()
        if api == "openblas" and core:
            width = 64 if core.lower() in OPENBLAS_512_BIT_CORES else 32
        else:
            width = VECTOR_BYTES
        _BLAS_WIDTH["bytes"] = width
    return _BLAS_WIDTH["bytes"]


def _blas_as_wide():
    """Whether the BLAS's vectors are as wide as the ones Numba compiles for:
    where they are not, the products per run of pixels lose to the
    channels-last kernels (:func:`pixel_gemm_applies`)."""
    return blas_vector_bytes() >= VECTOR_BYTES


# ---------------------------------------------------------------------------
# The direct 3x3 convolution (kernels/cpu_conv3x3.py)
# ---------------------------------------------------------------------------
# Scratch data per chunk of images: three shifted copies of each channel
# (about 3x the chunk's input), small enough to stay in a core's L2 cache
# while every output channel reads it, with the output beside it (the
# forward of the 16 x 32x32 and 32 x 16x16 layers, of 16 -> 32 channels with
# stride 2 and of 64 -> 32 on 8x8 in 0.95-0.96 of the time with 0.5 MiB than
# with 1 MiB, 64 x 16x16 0.99; with 0.25 MiB 0.98-1.08; 60 pairs, 2
# threads).  The backward's chunks are twice as big (see there).
DIRECT_CHUNK_BYTES = 1 << 19


# Layers with at least this many input x output channels go through im2col:
# there the BLAS product, with its long inner dimension (C·9), is faster than
# the direct kernels (measured on VGG-16's layers: equal at 128 x 128, im2col
# 1.1-1.5x faster from 256 x 256 on).
DIRECT_MAX_CHANNEL_PAIRS = 256 * 256


def direct_3x3_applies(x, weight, stride, padding):
    """The direct kernels take 3x3 convolutions with padding 1 and stride 1
    or 2 over at least as many images as threads (each thread runs whole
    chunks of images; fewer images go through im2col, whose steps split
    over the threads), with fewer than DIRECT_MAX_CHANNEL_PAIRS channel pairs."""
    return (weight.shape[2:] == (3, 3) and tuple(stride) in ((1, 1), (2, 2))
            and tuple(padding) == (1, 1) and x.shape[0] >= _threads()
            and weight.shape[0] * weight.shape[1] < DIRECT_MAX_CHANNEL_PAIRS)


def _aligned_scratch(name, shape, dtype):
    """Like :func:`scratch`, 64-byte aligned (a whole cache line, and one
    AVX-512 register, per aligned load).  The aligned view is kept too
    (making it again took 10 us, several times per convolution)."""
    key = (threading.get_ident(), name, shape, np.dtype(dtype), "aligned")
    a = _BUFFERS.get(key)
    if a is None:
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        raw = scratch(name, (size + 64,), np.uint8)
        start = -raw.ctypes.data % 64
        a = _BUFFERS[key] = raw[start:start + size].view(dtype).reshape(shape)
    return a


def _planes_length(w, s, images):
    """Length of one channel in the shifted-planes layout of ``images``
    images (m = w zeros before each image and after the last, then the
    READ_AHEAD positions a register block may read past them), rounded up
    to a multiple of 16 so that every channel starts on a cache line."""
    return -(-(w + images * s + READ_AHEAD + w) // 16) * 16


def _pack_blocks(weight, flip=False):
    """(K, C, 3, 3) weights as (KB, C, 9, KR), KB = ⌈K / KR⌉ (zeros for the
    missing channels): wk[kb, c, 3i + j, r] = w[KR·kb + r, c, i, j], the
    layout of :func:`conv3x3_blocks`.  ``flip``: the input gradient's
    kernel, w[k, c, 2 − i, 2 − j] with k and c swapped."""
    k, c = weight.shape[:2]
    if flip:
        k, c = c, k
    wk = np.empty((-(-k // KR), c, 9, KR), weight.dtype)
    # (compiled: 25-30 us at 64 x 64 channels, where NumPy's reshapes took 60-100)
    pack_blocks(np.ascontiguousarray(weight), flip, wk)
    return wk


class _Planes:
    """The direct kernels' layout of a chunk of images for a stride-1 or
    stride-2 convolution: the buffer, the three kernel rows' sources and
    offsets for :func:`conv3x3_blocks`, and the output geometry (each image's
    Ho·Wo positions after m = Wo zeros)."""

    def __init__(self, shape, stride, images):
        _, c, h, w = shape
        self.stride = stride
        self.ho, self.wo = (h, w) if stride == 1 else ((h + 1) // 2, (w + 1) // 2)
        self.m = self.wo
        self.plane = self.ho * self.wo
        self.s = self.plane + self.m
        self.images = images
        self.length = _planes_length(self.m, self.s, images)
        self.copies = 3 if stride == 1 else 6       # shifted planes per channel

    def buffer(self, name, channels, dtype):
        """A thread's scratch buffer for ``channels`` channels of a chunk."""
        return _aligned_scratch(name, (self.copies, channels, self.length), dtype)

    def output(self, name, channels, dtype):
        """A thread's scratch output of :func:`conv3x3_blocks` for ``channels``
        output channels of a chunk (a whole number of register blocks)."""
        return _aligned_scratch(name, (channels, out_columns(self.total(self.images))), dtype)

    def rows(self, buf):
        """(sources, offsets) of the kernel rows i = 0, 1, 2 in ``buf`` for
        :func:`conv3x3_blocks`: flat views of (3, C, length) planes."""
        if self.stride == 1:
            f = buf.reshape(-1)
            return (f, f, f), (-self.m, 0, self.m)
        top, mid = buf[3:].reshape(-1), buf[:3].reshape(-1)     # odd rows, even rows
        return (top, mid, top), (-self.m, 0, 0)

    def total(self, images):
        """Output positions of ``images`` images and the padding between them."""
        return images * self.s - self.m


def _conv3x3_forward(x, weight, bias, stride):
    """y = conv2d(x, weight, bias, stride, padding=1): per chunk of images,
    the shifted (or, for stride 2, parity) planes of the chunk, then the
    direct kernel into y (:func:`conv3x3_chunk`, one call per chunk)."""
    n, c = x.shape[:2]
    k = weight.shape[0]
    threads = _threads()
    one = _Planes(x.shape, stride, 1)
    chunks = _SharedChunks(n, one.copies * c * one.s * x.itemsize, threads, DIRECT_CHUNK_BYTES)
    lay = _Planes(x.shape, stride, chunks.largest)
    y = np.empty((n, k, lay.ho, lay.wo), x.dtype)
    y3 = y.reshape(n, k, lay.plane)
    wk = _pack_blocks(weight)
    use_bias = bias is not None
    b = bias if use_bias else np.zeros(1, x.dtype)

    def work(t):
        buf = lay.buffer(("planes", t), c, x.dtype)
        rows, offsets = lay.rows(buf)
        out = lay.output(("planes_out", t), len(wk) * KR, x.dtype)
        while (chunk := chunks.next()) is not None:
            _, (n0, n1) = chunk
            conv3x3_chunk(x, n0, n1, stride, lay.m, buf, 0, 3, rows, offsets, wk, out, b,
                          use_bias, y3)
    _run(work, threads)
    return y


def _lanes_weight_grad(x, stride):
    """Whether the weight gradient runs with the input channels in the vector
    lanes (:func:`weight_grad_lanes`): for stride 1 and a whole number of
    blocks of CV vectors of channels (32 float32 with AVX-512).  Measured on
    the backward pass of a layer (dx, dW and db, 2 threads): 12-13% faster
    on 8x8 images with 32 and 64 channels, 1-2% at 64 x 32x32 and
    128 x 16x16, even at 32 x 16x16; with 16 channels (one vector) slower."""
    return stride == 1 and x.shape[1] % (CV * VECTOR_BYTES // x.itemsize) == 0


# A run of the direct backward holds at least enough images for its planes to
# take this many times the bytes of its part of dW (see _conv3x3_backward).
RUN_PART_RATIO = 8


def _conv3x3_backward(x, weight, grad, stride, need_x, need_w, need_b, how=WG_PLANES):
    """(dx, dweight, dbias) of a 3x3 convolution with padding 1, chunk by
    chunk: the shifted planes of dY, then dx (for stride 1 the same
    convolution of dY with the flipped kernel, for stride 2 the kernel of
    its four parity planes), db and the chunk's part of dW (from the planes
    of x, recomputed: :func:`weight_grad_chunk`).  The parts of dW and db
    are added in chunk order at the end."""
    n, c = x.shape[:2]
    k = weight.shape[0]
    g = np.ascontiguousarray(grad)
    threads = _threads()
    lay_g = _Planes(g.shape, 1, 1)                      # dY: shifted planes, Ho x Wo
    # How the weight gradient is summed (``how``, chosen by conv2d_routes).
    # A layer with no dx to compute and fewer input than output channels (a
    # network's first layer) shifts x instead of dY: three copies of its few
    # channels, and dY as it is, with no layout at all.
    shift_x = how == WG_SHIFT_X
    planes = 3 * c if shift_x else 3 * k + (c if stride == 1 else 4 * c)   # per image
    per_image = planes * lay_g.s * x.itemsize
    # (a chunk's scratch data is more than these planes: dx's output and, for
    # the lanes dW, x channels-last too.  With 1 MiB of planes, rather than
    # 2, it all stays in L2: the backward of 16 x 32x32 and 32 x 16x16 layers
    # in 0.93 of the time, 64 x 16x16 1.00; 0.5 MiB 0.95-1.17; 60 pairs,
    # 2 threads)
    chunk_bytes = 2 * DIRECT_CHUNK_BYTES
    part_bytes = 9 * c * k * 8 if need_w else 0
    runs = _SharedChunks(n, per_image, threads, max(chunk_bytes, RUN_PART_RATIO * part_bytes))
    piece = min(runs.largest, max(1, chunk_bytes // per_image))    # images per chunk
    lay_g = _Planes(g.shape, 1, piece)
    lay_x = _Planes(x.shape, stride, piece)
    dx = np.empty(x.shape, x.dtype) if need_x else None
    if need_x and stride == 1:
        dx3 = dx.reshape(n, c, lay_x.plane)
        w9t = _pack_blocks(weight, flip=True)
        no_bias = np.zeros(1, x.dtype)
    elif need_x:
        w9t = np.zeros((c, k + k % 2, 9), x.dtype)         # an even number of output channels
        w9t[:, :k] = weight.transpose(1, 0, 2, 3).reshape(c, k, 9)
    w_shape = (c, k, 9) if shift_x else (k, c, 9)
    dw = np.zeros(w_shape, np.float64) if need_w else None
    db = np.zeros((runs.count, k), np.float64)
    # the stride-1 dx and dW need all three shifted copies of dY, the
    # stride-2 ones the unshifted and left-shifted ones; db needs only the
    # unshifted copy.
    j0 = 0 if stride == 1 and (need_x or need_w) else 1
    j1 = 3 if need_x or need_w else 2
    g3 = g.reshape(n, k, -1)
    empty = np.zeros((1, 1, 1), x.dtype)                # (for the buffers a chunk has no use for)

    def work(t):
        sg = empty if shift_x else lay_g.buffer(("planes_g", t), k, x.dtype)
        rows, offsets = (None, None) if shift_x else lay_g.rows(sg)
        sx = (lay_x.buffer(("planes", t), c, x.dtype) if need_w and how != WG_LANES
              else empty)
        xt = (_aligned_scratch(("x_t", t), (piece * lay_x.plane, c), x.dtype)
              if need_w and how == WG_LANES else empty[0])
        out = (lay_x.output(("planes_out", t), len(w9t) * KR, x.dtype)
               if need_x and stride == 1 else None)
        while (run := runs.next()) is not None:
            i, (r0, r1) = run
            if need_w:
                part = runs.part_buffer(w_shape, np.float64)
                part.fill(0)
            for n0 in range(r0, r1, piece):
                n1 = min(r1, n0 + piece)
                if need_x and stride == 1:
                    conv3x3_chunk(g, n0, n1, 1, lay_g.m, sg, j0, j1, rows, offsets, w9t, out,
                                  no_bias, False, dx3)
                elif not shift_x:
                    shifted_planes(g, n0, n1, lay_g.m, sg, j0, j1)
                if need_x and stride == 2:
                    conv3x3_input_grad_s2(sg, w9t, lay_g.m, n1 - n0, dx, n0, 0, c)
                if need_b and shift_x:
                    image_sums(g3, n0, n1, db[i])
                elif need_b:
                    plane_sums(sg[1], lay_g.m, lay_g.total(n1 - n0), db[i])
                if need_w:
                    weight_grad_chunk(how, x, g3, n0, n1, stride, lay_x.m, sx, xt, sg, part)
            if need_w:
                runs.add_in_order(i, part, dw)
    runs.run(work, threads)
    if shift_x:                         # dw[c, k, 8 - t] is dW[k, c, t]
        dw = dw.transpose(1, 0, 2)[:, :, ::-1]
    dweight = dw.astype(x.dtype).reshape(weight.shape) if need_w else None
    return dx, dweight, db.sum(axis=0).astype(x.dtype) if need_b else None


# ---------------------------------------------------------------------------
# The direct 3x3 convolution, channels-last (kernels/cpu_conv3x3_nhwc.py)
# ---------------------------------------------------------------------------
# Layers with many channels on small images: at least NHWC_MIN_CHANNEL_PAIRS
# input x output channels and at most NHWC_MAX_PLANE pixels per image (measured
# on the Intel Xeon, 2 threads, fwd + bwd: VGG-16's 128 x 256 on 8x8 up to
# 512 x 512 on 2x2 in 0.55-0.87 of the time of the direct kernels or im2col,
# whichever was faster; ResNet's 64 x 64 on 8x8, once the layout changes went
# through the registers, forward and dx in 0.79-0.80, dW 0.81-0.90, 15 pairs,
# 1 and 2 threads; the 16x16 layers 1.4-1.8x slower).
NHWC_MIN_CHANNEL_PAIRS = 64 * 64
NHWC_MAX_PLANE = 64
# Scratch data per chunk (the input and the output, channels-last).
NHWC_CHUNK_BYTES = 1 << 20


def nhwc_3x3_applies(x, weight, stride, padding):
    """The channels-last kernels take stride-1 3x3 convolutions with padding 1,
    with many channels (NHWC_MIN_CHANNEL_PAIRS) on small images
    (NHWC_MAX_PLANE), over at least as many images as threads."""
    return (weight.shape[2:] == (3, 3) and tuple(stride) == (1, 1)
            and tuple(padding) == (1, 1) and x.shape[0] >= _threads()
            and weight.shape[0] * weight.shape[1] >= NHWC_MIN_CHANNEL_PAIRS
            and x.shape[2] * x.shape[3] <= NHWC_MAX_PLANE)


def nhwc_weight_grad_applies(x, weight, stride):
    """Whether dW of the padding-1 3x3 convolution of x by ``weight`` with
    ``stride`` (1 or 2) goes through :func:`weight_grad_nhwc`: output channels that
    fill whole register blocks and an even number of input channels; for
    stride 2 also at most NHWC_MAX_PLANE output pixels per image, and then dx
    goes channels-last too (:func:`nhwc_stride2_input_grad_applies`) or
    through im2col (col2im of Wᵀ·dY).  Measured in-process, 2 threads:
    the backward of ResNet's stride-2 32 -> 64 layer (16x16 -> 8x8) in
    0.89-0.91 of the time with the direct kernels' dW (41 pairs), then 0.84
    with im2col's dx instead of the direct kernel's (0.74 for dx alone, 20
    pairs; 64 -> 128 onto 4x4: 0.65 and 0.50).  A stride-1 layer takes it
    with the rest of its channels-last backward."""
    fills = weight.shape[0] % weight_grad_block(x.dtype) == 0 and weight.shape[1] % CT == 0
    ho, wo = _out_size(x.shape[2], 3, stride, 1), _out_size(x.shape[3], 3, stride, 1)
    return fills and (stride == 1 or ho * wo <= NHWC_MAX_PLANE)


def nhwc_stride2_forward_applies(x, weight, stride, padding):
    """The channels-last forward also takes stride-2 3x3 convolutions with
    padding 1 (its tap lists hold every second position) with a multiple of
    NHWC_S2_OUT_CHANNELS output channels (whole register blocks) and at
    least NHWC_S2_MIN_IN input channels, over at least as many images as
    threads, on any plane.  Measured on the AMD EPYC (family 26, model 2;
    AVX-512, 2 threads, in-process, 2026-12-02) against the route it
    replaces: ResNet's 32 -> 64 onto 8x8 in 0.81 of the time, 64 -> 128
    onto 8x8 and 16x16 0.62-0.90, ImageNet-sized 64 -> 128 from 56x56 and
    128 -> 256 from 28x28 0.84 and 0.76 (the direct kernels), 256 -> 512
    0.43-0.48 (im2col); but 16 -> 32 (half a block of 64) 1.35 and 3 -> 64
    2.1.  The backward of these layers is unchanged."""
    return (weight.shape[2:] == (3, 3) and tuple(stride) == (2, 2)
            and tuple(padding) == (1, 1) and x.shape[0] >= _threads()
            and weight.shape[0] % NHWC_S2_OUT_CHANNELS == 0
            and weight.shape[1] >= NHWC_S2_MIN_IN)


NHWC_S2_OUT_CHANNELS = 64
NHWC_S2_MIN_IN = 16


def nhwc_stride2_input_grad_applies(x, weight, stride, padding):
    """dx of a stride-2 3x3 convolution with padding 1 goes channels-last
    (:func:`_nhwc_input_grad_s2`) where x's channels fill at least
    NHWC_S2_DX_MIN_FILL of one of the kernels' register blocks of channels
    (:func:`channel_block`: 64 float32 with AVX-512, 16 with AVX2), over at
    least as many images as threads, on any plane and with any number of
    output channels.  Measured on the AMD EPYC (family 26, model 2; 2
    threads, in-process, 2026-12-02), dx alone against the route it
    replaces.  AVX-512: ResNet's 32 -> 64 onto 8x8 in 0.67 of the time
    (im2col's), 64 -> 128 onto 8x8 and 4x4 0.39-0.42, 32 -> 32 from 16x16
    0.57; ImageNet-sized 64 -> 128 and 128 -> 128 from 56x56, 128 -> 256
    from 28x28 0.48-0.51 (the direct kernels), 256 -> 256 and 256 -> 512
    0.58-0.62, 512 -> 512 from 14x14 0.92 (im2col); but 24 input channels
    0.87-1.03, 20 1.05-1.27, 16 1.3-2.0.  The kernels compiled for AVX2
    (Haswell) on the same machine: 16 -> 32 from 32x32 0.59, 16 -> 64 from
    16x16 0.55, 32 -> 64 0.66, 12 -> 32 0.82, 8 -> 16 and 8 -> 32 0.99 and
    1.11."""
    return (weight.shape[2:] == (3, 3) and tuple(stride) == (2, 2)
            and tuple(padding) == (1, 1) and x.shape[0] >= _threads()
            and x.shape[1] >= NHWC_S2_DX_MIN_FILL * channel_block(x.dtype))


NHWC_S2_DX_MIN_FILL = 0.5


def _nhwc_conv(x, weight, flip, bias, stride=1):
    """The padding-1 3x3 convolution of x (N, C, H, W) by ``weight``
    (K, C, 3, 3) with ``stride``, or for ``flip`` by its flipped kernel with
    the channel axes swapped (the input gradient, x then being dY; stride
    1): per chunk of images, the channels-last layout, the kernel and the
    images out, in one call (:func:`conv3x3_nhwc_chunk`)."""
    n, c, h, w = x.shape
    k = weight.shape[1] if flip else weight.shape[0]
    kl = channel_block(x.dtype)
    wl = np.empty((-(-k // kl), 9, c, kl), x.dtype)
    parallel_for(pack_nhwc, len(wl), wl.size, np.ascontiguousarray(weight), flip, wl)
    ho, wo = _out_size(h, 3, stride, 1), _out_size(w, 3, stride, 1)
    plane, out_plane = h * w, ho * wo
    threads = _threads()
    per_image = (c * plane + wl.shape[0] * kl * out_plane) * x.itemsize
    chunks = _SharedChunks(n, per_image, threads, NHWC_CHUNK_BYTES)
    y = np.empty((n, k, ho, wo), x.dtype)
    y3 = y.reshape(n, k, out_plane)
    use_bias = bias is not None
    b = bias if use_bias else np.zeros(1, x.dtype)

    def work(t):
        xt = _aligned_scratch(("nhwc_in", t), (chunks.largest * plane + 1, c), x.dtype)
        out = _aligned_scratch(("nhwc_out", t), (chunks.largest * out_plane + 1,
                                                 wl.shape[0] * kl), x.dtype)
        lists = _tap_list_scratch(t, chunks.largest * out_plane)
        while (chunk := chunks.next()) is not None:
            _, (n0, n1) = chunk
            conv3x3_nhwc_chunk(x, n0, n1, stride, xt, *lists, wl, out, b, use_bias, y3)
    _run(work, threads)
    return y


def _nhwc_input_grad_s2(grad, weight, x_shape):
    """dx (``x_shape``) of the stride-2, padding-1 3x3 convolution by
    ``weight`` (K, C, 3, 3) from dY (N, K, Ho, Wo): per chunk of images, dY
    channels-last and the forward's tap lists read the other way round, in
    one call (:func:`input_grad_s2_nhwc_chunk`)."""
    n, c, h, w = x_shape
    k, ho, wo = grad.shape[1:]
    kl = channel_block(grad.dtype)
    wl = np.empty((-(-c // kl), 9, k, kl), grad.dtype)
    wt = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))    # (C, K, 3, 3), unflipped
    parallel_for(pack_nhwc, len(wl), wl.size, wt, False, wl)
    plane, out_plane = h * w, ho * wo
    threads = _threads()
    per_image = (k * out_plane + wl.shape[0] * kl * plane) * grad.itemsize
    chunks = _SharedChunks(n, per_image, threads, NHWC_CHUNK_BYTES)
    dx = np.empty(x_shape, grad.dtype)
    dx3 = dx.reshape(n, c, plane)

    def work(t):
        gt = _aligned_scratch(("nhwc_in", t), (chunks.largest * out_plane + 1, k), grad.dtype)
        out = _aligned_scratch(("nhwc_out", t), (chunks.largest * plane + 1, wl.shape[0] * kl),
                               grad.dtype)
        lists = _tap_list_scratch(t, chunks.largest * out_plane)
        while (chunk := chunks.next()) is not None:
            _, (n0, n1) = chunk
            input_grad_s2_nhwc_chunk(grad, n0, n1, h, w, gt, *lists, wl, out, dx3)
    _run(work, threads)
    return dx


def _tap_list_scratch(t, positions):
    """Thread t's (rows, offs, counts) for :func:`tap_lists` over at most
    ``positions`` output positions (each list padded to a multiple of PB)."""
    length = -(-positions // PB) * PB
    return (scratch(("nhwc_rows", t), (9, length), np.int64),
            scratch(("nhwc_offs", t), (9, length), np.int64),
            scratch(("nhwc_counts", t), (9,), np.int64))


def _nhwc_weight_grad(x, grad, stride=1, need_b=False):
    """(dW, db) of a padding-1 3x3 convolution, channels-last (db None unless
    ``need_b``): x and dY of the whole batch channels-last (split over the
    threads by images, each slice of dY also summed into its part of db,
    while it is in the cache; the parts are added in order), then
    :func:`weight_grad_nhwc` with dW split over the threads (each owns its
    part): by blocks of output channels, or where there are fewer blocks
    than threads, by input channels, an even number and as many to each
    (so that each thread has as many register blocks and tails: on 64
    channels 32 + 32 took 0.82 of the time of 30 + 34)."""
    n, c, h, w = x.shape
    k = grad.shape[1]
    plane = grad.shape[2] * grad.shape[3]
    threads = _threads()
    xt = _aligned_scratch("nhwc_x", (n * h * w + 1, c), x.dtype)
    gt = _aligned_scratch("nhwc_g", (n * plane + 1, k), x.dtype)
    xt[-1] = 0
    gt[-1] = 0

    db = np.zeros((n, k), np.float64) if need_b else None    # row lo: the slice from image lo

    def layout(lo, hi):
        to_nhwc(x, lo, hi, xt[lo * h * w:])
        to_nhwc(grad, lo, hi, gt[lo * plane:])
        if need_b:
            image_sums(grad.reshape(n, k, plane), lo, hi, db[lo])
    _split(layout, n, threads)
    if need_b:                          # in image order, whichever thread summed them
        db = db.sum(axis=0).astype(x.dtype)
    dwt = _aligned_scratch("nhwc_dw", (9, c, k), x.dtype)
    dw = np.empty((k, c, 9), x.dtype)
    blocks = k // weight_grad_block(x.dtype)
    tile = max(1, TILE // plane)

    if blocks >= threads:
        parts = [(blocks * t // threads, blocks * (t + 1) // threads, 0, c)
                 for t in range(threads)]
    else:                               # input channels, as many to each (an even number)
        cuts = [2 * round(c * t / (2 * threads)) for t in range(threads + 1)]
        parts = [(0, blocks, lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]

    def work(t):
        lists = _tap_list_scratch(t, tile * plane)
        weight_grad_nhwc(xt, gt, n, h, w, stride, tile, *parts[t], *lists, dwt, dw)
    _run(work, len(parts))
    return dw.reshape(k, c, 3, 3), db


def _nhwc_backward(x, weight, grad, need_x, need_w, need_b, dw_route):
    """(dx, dweight, dbias) channels-last: dx is the convolution of dY with
    the flipped kernel (:func:`_nhwc_conv`), dW and db
    :func:`_nhwc_weight_grad` where the channels fill its register blocks
    (else im2col's dW, and db summed apart), or on small planes with many
    channels products per run of pixels (:func:`pixel_weight_grad_applies`)."""
    g = np.ascontiguousarray(grad)
    dx = _nhwc_conv(g, weight, True, None) if need_x else None
    dw = db = None
    if need_w and dw_route == PIXELS:
        _, dw, db = _pixel_gemm_backward(x, weight, g, False, True, need_b)
    elif need_w and dw_route == NHWC:
        dw, db = _nhwc_weight_grad(x, g, 1, need_b)
    elif need_w:
        dw = _im2col_conv2d_backward(x, weight, g, (1, 1), (1, 1), False, True, False)[1]
    if need_b and db is None:
        db = _bias_grad(g, x.dtype)
    return dx, dw, db


def _bias_grad(g, dtype):
    """db = Σ dY over the images and pixels (N, K, Ho, Wo), summed in float64,
    in ``dtype``, for a route whose dW kernel does not sum it on the way."""
    return g.sum(axis=(0, 2, 3), dtype=np.float64).astype(dtype)


# ---------------------------------------------------------------------------
# Small planes: a matrix product per run of pixels
# ---------------------------------------------------------------------------
# On planes of a few pixels (VGG-16's last three layers work on 2x2 planes on
# CIFAR), most taps of a 3x3 kernel fall on the zero border: 16 of the 36
# tap-pixel pairs of a 2x2 plane are inside it, 100 of 144 on 4x4.  With the
# images laid out pixels first, (P, N, C), the output pixels of one row that a
# tap reaches inside the plane, in all N images, are consecutive rows of a
# (P·N) x C matrix, and so are the input pixels they read.  So the
# convolution is one matrix product per tap and output row (one per tap where
# it covers whole rows), (N·run) x C by C x K, with nothing spent on the
# border.  Measured on the Intel Xeon (family 6, model 167; 2 threads,
# in-process, 2026-12-02) against the channels-last kernels: 512 x 512 on
# 2x2, forward 0.59 and backward 0.48 of the time, 256 -> 512 on 2x2 0.71 and
# 0.52, 256 x 256 0.93 and 0.72, 512 x 512 on 1x1 0.86 and 0.27; but
# 128 x 128 on 2x2 1.37 and 1.10, and on 4x4 planes 512 x 512 forward 1.06
# (backward 0.89), fewer channels up to 2.5x slower.
PIXEL_GEMM_MAX_PLANE = 4
PIXEL_GEMM_MIN_CHANNEL_PAIRS = 256 * 256
PIXEL_GEMM_DW_MAX_PLANE = 16            # the weight gradient alone (see pixel_weight_grad_applies)
PIXEL_GEMM_DW_MIN_CHANNEL_PAIRS = 256 * 512


def pixel_gemm_applies(x, weight, stride, padding):
    """Stride-1, padding-1 3x3 convolutions on planes of at most
    PIXEL_GEMM_MAX_PLANE pixels with at least PIXEL_GEMM_MIN_CHANNEL_PAIRS
    input x output channels (VGG-16's last three layers on CIFAR), where
    NumPy's BLAS computes with vectors as wide as minigrad's kernels
    (:func:`blas_vector_bytes`).  Where it does not (OpenBLAS's AVX2 kernels
    on the AVX-512 AMD EPYC family 26 model 2, 2 threads, 2026-12-02) the
    products took 1.32-1.61x the time of the channels-last forward, 1.06-1.26x
    of its backward, and a VGG-16 step 1.04-1.10x."""
    return (weight.shape[2:] == (3, 3) and tuple(stride) == (1, 1)
            and tuple(padding) == (1, 1)
            and x.shape[2] * x.shape[3] <= PIXEL_GEMM_MAX_PLANE
            and weight.shape[0] * weight.shape[1] >= PIXEL_GEMM_MIN_CHANNEL_PAIRS
            and _blas_as_wide())


@njit(nogil=True, cache=True)
def pixels_first(a, ap, back, lo, hi):
    """ap[p, n, c] = a[n, c, p] for the images lo <= n < hi (a is (N, C, P));
    ``back``: the other way, a[n, c, p] = ap[p, n, c]."""
    for n in range(lo, hi):
        for c in range(a.shape[1]):
            for p in range(a.shape[2]):
                if back:
                    a[n, c, p] = ap[p, n, c]
                else:
                    ap[p, n, c] = a[n, c, p]


@njit(nogil=True, cache=True)
def taps_first(w3, wt, back, lo, hi):
    """wt[t, k, c] = w3[k, c, t] for lo <= k < hi (w3 is (K, C, 9));
    ``back``: the other way, w3[k, c, t] = wt[t, k, c]."""
    for k in range(lo, hi):
        for c in range(w3.shape[1]):
            for t in range(9):
                if back:
                    w3[k, c, t] = wt[t, k, c]
                else:
                    wt[t, k, c] = w3[k, c, t]


def pixel_runs(h, w):
    """The runs of a 3x3 kernel with padding 1 on an H x W plane: (t, p0,
    count, d) for each tap t = 3i + j and each output row the tap reaches
    inside the image, the output pixels p0 .. p0 + count − 1 (row-major)
    whose input pixel p + d (d = (i − 1)·W + j − 1) lies inside; one run for
    the whole tap where it covers whole rows (j = 1)."""
    runs = []
    for t in range(9):
        i, j = divmod(t, 3)
        oy0, oy1 = max(0, 1 - i), min(h, h + 1 - i)
        ox0, ox1 = max(0, 1 - j), min(w, w + 1 - j)
        d = (i - 1) * w + (j - 1)
        if oy1 <= oy0 or ox1 <= ox0:
            continue
        if ox1 - ox0 == w:
            runs.append((t, oy0 * w, (oy1 - oy0) * w, d))
        else:
            runs.extend((t, oy * w + ox0, ox1 - ox0, d) for oy in range(oy0, oy1))
    return runs


def _pixels_first(a):
    """a (N, C, H, W) as (H·W, N, C), in parallel over the images."""
    n, c = a.shape[:2]
    out = np.empty((a.shape[2] * a.shape[3], n, c), a.dtype)
    parallel_for(pixels_first, n, a.size, a.reshape(n, c, -1), out, False)
    return out


def _pixels_last(ap, shape):
    """ap (H·W, N, C) back as an array of ``shape`` (N, C, H, W)."""
    out = np.empty(shape, ap.dtype)
    parallel_for(pixels_first, shape[0], ap.size, out.reshape(shape[0], shape[1], -1), ap, True)
    return out


def _taps_first(weight):
    """(9, K, C): tap t of the weights, w[:, :, i, j], as a (K, C) matrix."""
    k, c = weight.shape[:2]
    out = np.empty((9, k, c), weight.dtype)
    parallel_for(taps_first, k, weight.size, np.ascontiguousarray(weight).reshape(k, c, 9), out,
                 False)
    return out


def _pixel_gemm_conv(xp, wk, flip, h, w):
    """The 3x3 convolution (padding 1) of xp (P, N, C), pixels first, as
    matrix products: y_p = Σ_t x_{p+d_t} · W_tᵀ over the runs of
    :func:`pixel_runs`, with W_t = wk[t] (K, C) (:func:`_taps_first`); for
    ``flip`` the input gradient's kernel, y_p = Σ_t x_{p+d_t} · wk[8 − t]
    (d_{8−t} = −d_t: the transposed convolution).  Returns (P, N, K) or
    (P, N, C).  The output rows are split over the threads, each
    summing its own in tap order (the centre tap first, which covers every
    pixel), so the sums do not depend on the threads."""
    p_len, n, c = xp.shape
    k = wk.shape[2] if flip else wk.shape[1]
    yp = np.empty((p_len, n, k), xp.dtype)
    runs = pixel_runs(h, w)
    threads = min(_threads(), h)
    cuts = [w * (h * t // threads) for t in range(threads + 1)]      # whole output rows

    def mat(t):
        return wk[8 - t] if flip else wk[t].T

    def work(th):
        lo, hi = cuts[th], cuts[th + 1]
        tmp = scratch(("pixel_gemm", th), ((hi - lo) * n, k), xp.dtype)
        ys = yp[lo:hi].reshape(-1, k)
        np.matmul(xp[lo:hi].reshape(-1, c), mat(4), out=ys)      # the centre tap: every pixel
        for t, p0, count, d in runs:
            a, b = max(p0, lo), min(p0 + count, hi)
            if t == 4 or a >= b:
                continue
            out = tmp[:(b - a) * n]
            np.matmul(xp[a + d:b + d].reshape(-1, c), mat(t), out=out)
            yp[a:b].reshape(-1, k)[...] += out
    with _single_threaded_blas():
        _run(work, threads)
    return yp


def _pixel_gemm_weight_grad(xp, gp, h, w):
    """dW[k, c, t] = Σ_p Σ_n dY_p[n, k] · x_{p+d_t}[n, c] over the runs of
    tap t (:func:`pixel_runs`): a matrix product dYᵀ · x per run, the taps
    split over the threads (each owns its taps' sums, taken in run order).
    Returns (9, K, C), in the input's dtype."""
    p_len, n, c = xp.shape
    k = gp.shape[2]
    runs = pixel_runs(h, w)
    g9 = np.zeros((9, k, c), xp.dtype)
    by_tap = [[r for r in runs if r[0] == t] for t in range(9)]
    threads = min(_threads(), 9)
    # taps to threads by their rows of work, in a fixed order
    load, owner = [0] * threads, []
    for t in range(9):
        th = min(range(threads), key=lambda i: load[i])
        owner.append(th)
        load[th] += sum(r[2] for r in by_tap[t])

    def work(th):
        tmp = scratch(("pixel_gemm_w", th), (k, c), xp.dtype)
        for t in range(9):
            if owner[t] != th:
                continue
            for j, (_, p0, count, d) in enumerate(by_tap[t]):
                gs = gp[p0:p0 + count].reshape(-1, k).T
                xs = xp[p0 + d:p0 + d + count].reshape(-1, c)
                if j == 0:
                    np.matmul(gs, xs, out=g9[t])
                else:
                    np.matmul(gs, xs, out=tmp)
                    g9[t] += tmp
    with _single_threaded_blas():
        _run(work, threads)
    return g9


def _pixel_gemm_forward(x, weight, bias):
    """y = conv2d(x, weight, bias, padding=1) on a small plane (:func:`_pixel_gemm_conv`)."""
    n, _, h, w = x.shape
    yp = _pixel_gemm_conv(_pixels_first(x), _taps_first(weight), False, h, w)
    if bias is not None:
        yp += bias
    return _pixels_last(yp, (n, weight.shape[0], h, w))


def _pixel_gemm_backward(x, weight, grad, need_x, need_w, need_b):
    """(dx, dweight, dbias) on a small plane: dx by the transposed
    convolution, dW by :func:`_pixel_gemm_weight_grad`, all pixels first."""
    n, c, h, w = x.shape
    k = weight.shape[0]
    gp = _pixels_first(np.ascontiguousarray(grad))
    dx = dw = db = None
    if need_x:
        dx = _pixels_last(_pixel_gemm_conv(gp, _taps_first(weight), True, h, w), x.shape)
    if need_w:
        g9 = _pixel_gemm_weight_grad(_pixels_first(x), gp, h, w)
        dw = np.empty((k, c, 9), x.dtype)
        parallel_for(taps_first, k, g9.size, dw, g9, True)
        dw = dw.reshape(k, c, 3, 3)
    if need_b:
        db = gp.reshape(-1, k).sum(axis=0, dtype=np.float64).astype(x.dtype)
    return dx, dw, db


def pixel_weight_grad_applies(x, weight):
    """Whether a stride-1 layer's weight gradient goes through the products
    per run of pixels although its forward and dx do not: planes of at most
    PIXEL_GEMM_DW_MAX_PLANE pixels with at least PIXEL_GEMM_DW_MIN_CHANNEL_PAIRS
    channel pairs (VGG-16's 4x4 layers on CIFAR).  Measured against the
    channels-last dW (Intel Xeon family 6 model 167, 2 threads, 2026-12-02):
    dW and db of 512 x 512 on 4x4 in 0.81 of the time, 256 -> 512 in 0.93,
    where dx took 1.05 and 1.20.  Also only where the BLAS is as wide as the
    kernels: on the AMD machine above, 1.57x and 1.79x."""
    return (weight.shape[2:] == (3, 3)
            and x.shape[2] * x.shape[3] <= PIXEL_GEMM_DW_MAX_PLANE
            and weight.shape[0] * weight.shape[1] >= PIXEL_GEMM_DW_MIN_CHANNEL_PAIRS
            and _blas_as_wide())


# ---------------------------------------------------------------------------
# Which kernels take a convolution
# ---------------------------------------------------------------------------
PIXELS, NHWC, DIRECT, IM2COL = "pixel products", "channels-last", "direct", "im2col"
# how the direct backward sums dW (weight_grad_chunk's ``how``)
DIRECT_DW = {"direct, planes": WG_PLANES, "direct, lanes": WG_LANES,
             "direct, shifted x": WG_SHIFT_X}


def conv2d_routes(x, weight, stride, padding, need_x=True):
    """The kernels that :func:`conv2d_forward` and :func:`conv2d_backward`
    run on these arrays, by name, as (forward, dx, dW and db); the two
    functions choose by this one, so the names are the truth.  Each is one of
    PIXELS, NHWC, DIRECT and IM2COL, and the direct dW one of DIRECT_DW (dY's
    shifted planes with x's planes, x channels-last in the vector lanes, or
    x's three shifted copies for a first layer that needs no dx); dx is None
    where ``need_x`` is false."""
    return _routes(x, weight, tuple(stride), tuple(padding), need_x)[1:]


def _routes(x, weight, stride, padding, need_x):
    """(family, forward, dx, dW) of :func:`conv2d_routes`; the family is the
    route of the backward's driver (a stride-2 layer's forward and dx can go
    channels-last while its dW stays with the direct kernels or im2col)."""
    family = _family(x, weight, stride, padding)
    fwd = _forward_route(family, x, weight, stride, padding)
    dx = dw = family
    if family == NHWC:
        if pixel_weight_grad_applies(x, weight):
            dw = PIXELS
        elif nhwc_weight_grad_applies(x, weight, 1):
            dw = NHWC
        else:
            dw = IM2COL
    elif family == DIRECT:
        s = stride[0]
        if s == 2 and nhwc_weight_grad_applies(x, weight, 2):
            dx, dw = IM2COL, NHWC      # onto a small plane: dW channels-last, col2im's dx
        elif not need_x and s == 1 and x.shape[1] < weight.shape[0]:
            dw = "direct, shifted x"
        elif _lanes_weight_grad(x, s):
            dw = "direct, lanes"
        else:
            dw = "direct, planes"
    if nhwc_stride2_input_grad_applies(x, weight, stride, padding):
        dx = NHWC                       # (a stride-2 layer's dx, whatever takes its dW)
    return family, fwd, (dx if need_x else None), dw


def _family(x, weight, stride, padding):
    """The kernels a convolution goes to first (PIXELS, NHWC, DIRECT or
    IM2COL, in that order of preference): its backward's driver, and its
    forward unless :func:`_forward_route` says otherwise."""
    if pixel_gemm_applies(x, weight, stride, padding):
        return PIXELS
    if nhwc_3x3_applies(x, weight, stride, padding):
        return NHWC
    if direct_3x3_applies(x, weight, stride, padding):
        return DIRECT
    return IM2COL


def _forward_route(family, x, weight, stride, padding):
    """The forward's part of :func:`conv2d_routes`: the family's, but
    channels-last for the stride-2 layers it takes."""
    return NHWC if nhwc_stride2_forward_applies(x, weight, stride, padding) else family


def conv2d_forward(x, weight, bias, stride, padding):
    """y = conv2d(x, weight, bias, stride, padding): the direct kernels for
    3x3 convolutions with padding 1 and stride 1 or 2, im2col otherwise
    (:func:`conv2d_routes`)."""
    x = np.ascontiguousarray(x)
    stride, padding = tuple(stride), tuple(padding)
    route = _forward_route(_family(x, weight, stride, padding), x, weight, stride, padding)
    if route == PIXELS:
        return _pixel_gemm_forward(x, weight, bias)
    if route == NHWC:
        return _nhwc_conv(x, weight, False, bias, stride[0])
    if route == DIRECT:
        return _conv3x3_forward(x, weight, bias, stride[0])
    return _im2col_conv2d_forward(x, weight, bias, stride, padding)


def _im2col_conv2d_forward(x, weight, bias, stride, padding):
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
    use_bias = bias is not None
    rows, plane = c * kh * kw, ho * wo
    threads = _threads()

    if threads > 1 and n >= threads:                    # many images: chunks per thread
        chunks = _SharedChunks(n, rows * plane * x.itemsize, threads)
        cap = chunks.largest

        def work(t):
            while (chunk := chunks.next()) is not None:
                _, (n0, n1) = chunk
                m = (n1 - n0) * plane
                cols = _scratch2d(("cols", t), rows, m, cap * plane, x.dtype)
                y2 = _scratch2d(("y2", t), k, m, cap * plane, x.dtype)
                im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols, 0, -1)
                np.matmul(wm, cols, out=y2)
                cnp_to_nchw(y2, b, use_bias, y3[n0:n1], 0, -1)
        with _single_threaded_blas():
            _run(work, threads)
        return y

    for n0, n1 in _chunks(n, rows * plane * x.itemsize):    # few large images: split each step
        m = (n1 - n0) * plane
        cols = scratch("cols", (rows, m), x.dtype)
        y2 = scratch("y2", (k, m), x.dtype)
        _split(lambda r0, r1: im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols, r0, r1),
               rows, threads)
        np.matmul(wm, cols, out=y2)
        _split(lambda k0, k1: cnp_to_nchw(y2, b, use_bias, y3[n0:n1], k0, k1), k, threads)
    return y


def conv2d_backward(x, weight, grad, stride, padding, need_x=True, need_w=True, need_b=True):
    """(dx, dweight, dbias) of conv2d (each None where not needed): the direct
    kernels for 3x3 convolutions with padding 1 and stride 1 or 2, im2col
    otherwise (:func:`conv2d_routes`)."""
    x = np.ascontiguousarray(x)
    family, _, dx_route, dw_route = _routes(x, weight, tuple(stride), tuple(padding), need_x)
    if family == PIXELS:
        return _pixel_gemm_backward(x, weight, grad, need_x, need_w, need_b)
    if family == NHWC:
        return _nhwc_backward(x, weight, grad, need_x, need_w, need_b, dw_route)
    g = np.ascontiguousarray(grad)
    dx = None
    if dx_route == NHWC:                # stride 2: dx channels-last, dW and db below
        dx = _nhwc_input_grad_s2(g, weight, x.shape)
        need_x = False
        if not (need_w or need_b):
            return dx, None, None
    if family == DIRECT and dw_route == NHWC:
        # stride 2 onto a small plane: dW (and db) channels-last, dx by col2im
        if need_x:
            dx = _im2col_conv2d_backward(x, weight, g, stride, padding, True, False, False)[0]
        dw, db = _nhwc_weight_grad(x, g, 2, need_b) if need_w else (None, None)
        if need_b and db is None:
            db = _bias_grad(g, x.dtype)
        return dx, dw, db
    if family == DIRECT:
        how = DIRECT_DW[dw_route] if need_w else WG_PLANES
        parts = _conv3x3_backward(x, weight, g, stride[0], need_x, need_w, need_b, how)
    else:
        parts = _im2col_conv2d_backward(x, weight, g, stride, padding, need_x, need_w, need_b)
    return (parts[0] if dx is None else dx), parts[1], parts[2]


def _im2col_conv2d_backward(x, weight, grad, stride, padding, need_x, need_w, need_b):
    """(dx, dweight, dbias) of conv2d, chunk by chunk: the columns are
    recomputed from x (cheaper than keeping them), dW and db accumulate over
    the chunks, dx is written chunk by chunk (col2im(Wᵀ @ dY), or for stride 1
    the "full" convolution of dY with the flipped kernel)."""
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
    col2im_dx = need_x and not via_conv
    dx = np.empty(x.shape, x.dtype) if col2im_dx else None
    if via_conv:
        w_flip = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        pad_g = (kh - 1 - ph, kw - 1 - pw)
    rows, plane = c * kh * kw, ho * wo
    threads = _threads()
    # dWᵀ = cols @ dYᵀ: the same product as dY @ colsᵀ, but OpenBLAS runs this
    # orientation (long inner axis, tall result) 5-100x faster
    if threads > 1 and n >= threads:                    # many images: chunks per thread
        # with via_conv, dx is computed in the same pass, chunk by chunk, while
        # the chunk of dY is still in the cache: im2col of dY (padded by
        # k − 1 − p), the flipped kernel's GEMM, the layout change to NCHW
        rows_g, plane_x = k * kh * kw, h * w
        per_image = max(rows * plane, rows_g * plane_x if via_conv else 0) * x.itemsize
        chunks = _SharedChunks(n, per_image, threads)
        cap = chunks.largest
        # dW: the chunks' parts added in chunk order; db: one part per chunk
        dwt = np.zeros((rows, k), x.dtype) if need_w else None
        db = np.empty((chunks.count, k), np.float64)
        if via_conv:
            dx = np.empty(x.shape, x.dtype)
            dx3 = dx.reshape(n, c, plane_x)
            grad_c = np.ascontiguousarray(grad)
            wf = w_flip.reshape(c, -1)
            no_bias = np.zeros(1, x.dtype)

        # Two buffers per thread: the columns of x, Wᵀ @ dY and the columns of
        # dY are each dead once their product is done, so they share one; dY in
        # the (K, N·P) layout is dead once dW is done, so dx's GEMM writes into
        # its buffer.  Half the memory a chunk streams through, so more of it
        # stays in the cache (the C16 backward runs about 20% faster).
        col_elems = cap * per_image // x.itemsize
        out_elems = cap * max(k * plane, c * plane_x if via_conv else 0)

        def work(t):
            col_buf = scratch(("cols", t), (col_elems,), x.dtype)
            out_buf = scratch(("y2", t), (out_elems,), x.dtype)
            while (chunk := chunks.next()) is not None:
                i, (n0, n1) = chunk
                m = (n1 - n0) * plane
                g2 = out_buf[:k * m].reshape(k, m)
                nchw_to_cnp(g3[n0:n1], g2, db[i], 0, -1)
                if need_w:
                    cols = col_buf[:rows * m].reshape(rows, m)
                    im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols, 0, -1)
                    part = chunks.part_buffer((rows, k), x.dtype)
                    np.matmul(cols, g2.T, out=part)
                    chunks.add_in_order(i, part, dwt)
                if col2im_dx:
                    dcols = col_buf[:rows * m].reshape(rows, m)
                    np.matmul(wm.T, g2, out=dcols)
                    col2im(dcols, kh, kw, sh, sw, ph, pw, n0, n1, dx, 0, -1)
                if via_conv:
                    mx = (n1 - n0) * plane_x
                    cols_g = col_buf[:rows_g * mx].reshape(rows_g, mx)
                    im2col(grad_c, kh, kw, 1, 1, *pad_g, n0, n1, cols_g, 0, -1)
                    y2 = out_buf[:c * mx].reshape(c, mx)
                    np.matmul(wf, cols_g, out=y2)
                    cnp_to_nchw(y2, no_bias, False, dx3[n0:n1], 0, -1)
        with _single_threaded_blas():
            chunks.run(work, threads)
        db = db.sum(axis=0)
    else:                                               # few large images: split each step
        dwt = np.zeros((rows, k), x.dtype) if need_w else None
        db = np.zeros(k, np.float64)
        db_part = np.empty(k, np.float64)
        for n0, n1 in _chunks(n, rows * plane * x.itemsize):
            m = (n1 - n0) * plane
            g2 = scratch("g2", (k, m), x.dtype)
            _split(lambda k0, k1: nchw_to_cnp(g3[n0:n1], g2, db_part, k0, k1), k, threads)
            db += db_part
            if need_w:
                cols = scratch("cols", (rows, m), x.dtype)
                _split(lambda r0, r1: im2col(x, kh, kw, sh, sw, ph, pw, n0, n1, cols, r0, r1),
                       rows, threads)
                part = scratch("dwt", dwt.shape, x.dtype)
                np.matmul(cols, g2.T, out=part)
                dwt += part
            if col2im_dx:
                dcols = scratch("cols", (rows, m), x.dtype)   # the columns of x are dead by now
                np.matmul(wm.T, g2, out=dcols)
                _split(lambda c0, c1: col2im(dcols, kh, kw, sh, sw, ph, pw, n0, n1, dx, c0, c1),
                       c, threads)
        if via_conv:
            dx = conv2d_forward(grad, w_flip, None, (1, 1), pad_g)
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
    if (kh, kw, sh, sw, ph, pw) == (2, 2, 2, 2, 0, 0):
        parallel_for(maxpool2x2_forward, n * c, x.size, np.ascontiguousarray(x), y, idx)
    else:
        parallel_for(maxpool2d_forward, n * c, x.size, np.ascontiguousarray(x),
                     kh, kw, sh, sw, ph, pw, y, idx)
    return y, idx


def max_pool2d_backward(grad, idx, x_shape):
    dx = np.empty(x_shape, grad.dtype)
    parallel_for(maxpool2d_backward, x_shape[0] * x_shape[1], dx.size,
                 np.ascontiguousarray(grad), idx, dx)
    return dx


def _ncp(a):
    """View (N, C, ...) as (N, C, P) (contiguous)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], -1)


def batch_norm_forward(x, mean, var, weight, bias, eps, training, residual=None, relu=False):
    """Batch-norm forward, with a residual added and ReLU applied in the same
    pass where given: y = max(BN(x) + residual, 0).  Training: statistics of
    the batch (float64) are computed and returned; evaluation: ``mean``/``var``
    are the running ones.  Returns (y, mean, var, inv_std) with mean, var,
    inv_std as float64 (C,) arrays."""
    x3 = _ncp(x)
    n, c = x3.shape[:2]
    if training:
        mean = np.empty(c, np.float64)
        var = np.empty(c, np.float64)
    else:
        mean = np.array(mean, np.float64)
        var = np.array(var, np.float64)
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    beta = np.zeros(c) if bias is None else bias.astype(np.float64)
    r3 = np.empty((n, c, 0), x.dtype) if residual is None else _ncp(residual)
    coef = np.empty((2, c), x.dtype)
    y = np.empty(x3.shape, x.dtype)
    parallel_for(bn_forward_channels, c, x3.size, x3, r3, relu, gamma, beta, eps, training,
                 mean, var, coef[0], coef[1], y)
    inv_std = 1.0 / np.sqrt(var + eps)
    return y.reshape(x.shape), mean, var, inv_std


def batch_norm_backward(g, x, mean, inv_std, weight, training, out=None, need_residual=False):
    """(dx, dgamma, dbeta, dresidual) of batch norm from the saved input and
    statistics.  ``out``: the output of a fused ReLU (g is masked by out > 0
    first); ``need_residual``: also return that masked gradient, the
    residual's (else None).

    With S = Σ g and T = Σ g·(x − μ) per channel (m values each):
        dβ = S,  dγ = T·inv_std,
        dx = γ·inv_std·g − γ·inv_std·S/m − γ·inv_std³·T/m·(x − μ)   (training)
        dx = γ·inv_std·g                                            (evaluation)
    """
    g3, x3 = _ncp(g), _ncp(x)
    n, c = g3.shape[:2]
    none = np.empty((n, c, 0), g.dtype)
    z3 = none if out is None else _ncp(out)
    gm = np.empty(g3.shape, g.dtype) if out is not None and need_residual else none
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    coef = np.empty((4, c), g.dtype)
    dx = np.empty(g3.shape, g.dtype)
    dgamma = np.empty(c, np.float64)
    dbeta = np.empty(c, np.float64)
    parallel_for(bn_backward_channels, c, g3.size, g3, z3, x3, mean, inv_std, gamma, training,
                 coef, dx, gm, dgamma, dbeta)
    dres = gm.reshape(g.shape) if gm is not none else None
    return dx.reshape(g.shape), dgamma.astype(g.dtype), dbeta.astype(g.dtype), dres


def subsample_pad(x, s, extra):
    """x[:, :, ::s, ::s] with ``extra`` zero channels appended, for a contiguous x."""
    n, c, h, w = x.shape
    y = np.empty((n, c + extra, -(-h // s), -(-w // s)), x.dtype)
    parallel_for(subsample_pad_forward, n, y.size, x, s, y)
    return y


def subsample_pad_grad(g, s, x_shape):
    """The gradient of :func:`subsample_pad` for an input of ``x_shape``."""
    g = np.ascontiguousarray(g)
    dx = np.empty(x_shape, g.dtype)
    parallel_for(subsample_pad_backward, x_shape[0], dx.size, g, s, dx)
    return dx


def relu(x):
    """y = max(x, 0) for a contiguous x."""
    y = np.empty_like(x)
    parallel_for(relu_forward, x.size, x.size, x.reshape(-1), y.reshape(-1))
    return y


def add(x, y):
    """x + y for two contiguous arrays of one shape and dtype, in one parallel pass."""
    z = np.empty_like(x)
    parallel_for(add_forward, x.size, x.size, x.reshape(-1), y.reshape(-1), z.reshape(-1))
    return z


def relu_grad(g, y):
    g = np.ascontiguousarray(g)
    dx = np.empty_like(g)
    parallel_for(relu_backward, g.size, g.size, g.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


def sgd_update(p, g, lr, weight_decay):
    """Plain SGD in place on the flat contiguous ``p``."""
    parallel_for(sgd_step, p.size, p.size, p, g, lr, weight_decay)


def sgd_momentum_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """SGD with momentum in place on the flat contiguous ``p`` and ``buf``."""
    parallel_for(sgd_momentum_step, p.size, p.size, p, g, buf, lr, momentum, dampening,
                 weight_decay, nesterov, first)
