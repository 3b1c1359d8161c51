"""Direct 3×3 convolution with the channels in the vector lanes (stride 1,
padding 1), for layers with many channels on small images.

The kernels of ``kernels/cpu_conv3x3.py`` put the positions of an image in
the vector lanes.  On a 4×4 or 2×2 image (VGG's last layers, 256-512
channels) much of each vector is padding, and every output is summed over
all nine taps, though on a 2×2 image five of the nine fall on the zero
border.  Here the vectors hold channels instead, as in oneDNN's blocked
layouts, and each tap visits only the outputs whose input pixel is inside
the image:

**Layout.**  A chunk of images goes channels-last, one row of C channels
per pixel (:func:`to_nhwc`), with a row of zeros after the last pixel.
:func:`tap_lists` lists, for each tap (i, j), the output positions whose
pixel (oy + i − 1, ox + j − 1) is inside the image, with the offsets of
their output row and of that pixel's row (on a 2×2 image, 4 of the 9 taps
of each output; on 8×8, 84% of them).

**Forward** (:func:`conv3x3_nhwc`): a register block is PB listed positions
by KV vectors of output channels (6 x 4 = 24 accumulators of 16 float32
with AVX-512: 64 output channels), loaded from the output rows, then for
each input channel c of a pass::

    acc[p][k] += x[pixel p of the tap, c] · w[k, c, tap]

one broadcast input value per position times KV vectors of weights
(packed by :func:`pack_nhwc`, so that the KV vectors are consecutive):
6 broadcasts and 4 vector loads for 24 fused multiply-adds, then the block
is stored back.  The output is positions × channels, and
:func:`nhwc_to_nchw` copies it into the images.

**Input gradient**: for stride 1, the same kernel on dY with the kernel
flipped and its channel axes swapped (:func:`pack_nhwc` with ``flip``).
For stride 2 (:func:`input_grad_s2_nhwc_chunk`) the forward's tap lists
are read the other way round: ``dx[pixel p of tap t at q, c] += w[k, c, t] ·
dY[q, k]``, the same kernel gathering from dY's rows and adding into the
rows of dx's pixels (within one tap no two positions share a pixel, so a
register block never holds one twice).

**Weight gradient** (:func:`weight_grad_nhwc`): for each tap t,
``dW_t[k, c] = Σ_q dY[q, k] · x[pixel of tap t at q, c]`` over the listed
positions.  A register block is CW input channels by KW vectors of output
channels: per position, CW broadcasts of x and KW vector loads of dY.  The
images go in tiles whose x and dY stay in the L2 cache, and each thread
owns some blocks of output channels of dW, adding the tiles into them in
order: the result depends on the shapes only, never on the threads.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .cpu_conv3x3 import kernel_tap, to_nhwc
from .simd import (FLOAT32_LANES, lanes, load_at, load_n, load_rows, load_square, outer_fma,
                   prefer_512_bit_vectors, splat_at, splat_n, store_at, store_rows,
                   transpose_square)

_FMA = {"contract"}

PB = 6                                  # output positions per register block
KV = 4 if FLOAT32_LANES == 16 else 2    # vectors of output channels per block
CB = 64                                 # input channels per pass over the weights
CW = 6                                  # input channels per weight-gradient block
CT = 2                                  # (the same, for the channels past the last whole block)
KW = 4 if FLOAT32_LANES == 16 else 2    # vectors of output channels per weight-gradient block
TILE = 256                              # positions per tile of the weight gradient (whole images)


def channel_block(dtype):
    """Output channels per forward register block (KV vectors)."""
    return KV * FLOAT32_LANES * 4 // np.dtype(dtype).itemsize


def weight_grad_block(dtype):
    """Output channels per weight-gradient register block (KW vectors)."""
    return KW * FLOAT32_LANES * 4 // np.dtype(dtype).itemsize


@njit(nogil=True, cache=True)
def tap_lists(b0, nb, h, w, stride, c_in, step, spare_q, spare_p, rows, offs, counts):
    """For each tap t = 3i + j, the output positions of images b0 .. b0 + nb
    − 1 (H x W, output Ho x Wo for ``stride``) whose input pixel
    (stride·oy + i − 1, stride·ox + j − 1) lies inside the image: rows[t, n]
    = q·step for the position's index q = (b·Ho + oy)·Wo + ox (its output
    row), offs[t, n] = p·C for the pixel's index p = (b·H + iy)·W + ix (its
    row of channels in :func:`to_nhwc`'s layout).  Each list is padded to a
    multiple of PB with the rows ``spare_q`` (a spare output row, or one of
    zeros) and ``spare_p`` (a row of zeros in the input); counts[t] = its
    padded length."""
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    for t in range(9):
        di, dj = t // 3 - 1, t % 3 - 1
        y0, x0 = (1 if di < 0 else 0), (1 if dj < 0 else 0)    # the first inside
        y1, x1 = min(ho, (h - 1 - di) // stride + 1), min(wo, (w - 1 - dj) // stride + 1)
        n = 0
        for b in range(b0, b0 + nb):
            for oy in range(y0, y1):
                for ox in range(x0, x1):
                    rows[t, n] = ((b * ho + oy) * wo + ox) * step
                    offs[t, n] = ((b * h + stride * oy + di) * w + stride * ox + dj) * c_in
                    n += 1
        while n % PB:
            rows[t, n] = spare_q * step
            offs[t, n] = spare_p * c_in
            n += 1
        counts[t] = n


@njit(nogil=True, cache=True)
def pack_nhwc(weight, flip, wl, kb0, kb1):
    """wl[kb, t, c, r] = w[KL·kb + r, c, i, j] (t = 3i + j, 0 past K) for the
    blocks kb0 <= kb < kb1: the weights (K, C, 3, 3) by blocks of KL output
    channels, KL = wl.shape[3].
    ``flip``: the input gradient's kernel, w[c, k, 2 − i, 2 − j] with k the
    output channel KL·kb + r.  (The taps innermost: each step reads the
    nine taps of one channel pair, which lie together in ``weight``.)"""
    kl = wl.shape[3]
    for kb in range(kb0, kb1):
        for c in range(wl.shape[2]):
            for r in range(kl):
                for t in range(9):
                    wl[kb, t, c, r] = kernel_tap(weight, flip, kl * kb + r, c, t)


@njit(nogil=True, cache=True, fastmath=_FMA)
def conv3x3_nhwc(xt, rows, offs, counts, wl, nq, out):
    """out[q, k] = Σ_{t,c} w[k, c, t] · x[pixel of tap t at q, c] for the nq
    output positions of the chunk in ``xt`` (:func:`to_nhwc`), every output
    channel of ``wl`` (:func:`pack_nhwc`), each tap over the positions of
    its list only (:func:`tap_lists`).  ``out`` has nq + 1 rows (the last is
    spare) of at least KL·KB columns.

    Per tap and block of output channels, in passes of CB input channels: a
    block's sums are loaded from ``out``, PB broadcast inputs times KV
    vectors of weights are added to them for each channel of the pass, and
    they are stored back.  Each of the PB inputs of a step is one pointer
    moving along a row of channels."""
    prefer_512_bit_vectors()
    c_in, kl = wl.shape[2], wl.shape[3]
    step = out.shape[1]
    xf, wf, of = xt.reshape(-1), wl.reshape(-1), out.reshape(-1)
    of[:(nq + 1) * step] = 0
    for kb in range(wl.shape[0]):
        k0 = kb * kl
        for t in range(9):
            r, o = rows[t], offs[t]
            for c0 in range(0, c_in, CB):
                cn = min(c_in, c0 + CB) - c0
                wq = ((kb * 9 + t) * c_in + c0) * kl
                for n in range(0, counts[t], PB):
                    at = (r[n] + k0, r[n + 1] + k0, r[n + 2] + k0, r[n + 3] + k0,
                          r[n + 4] + k0, r[n + 5] + k0)
                    src = (o[n] + c0, o[n + 1] + c0, o[n + 2] + c0, o[n + 3] + c0,
                           o[n + 4] + c0, o[n + 5] + c0)
                    acc = load_at(of, at, KV)
                    for c in range(cn):
                        acc = outer_fma(acc, splat_at(xf, c, src), load_n(wf, wq + c * kl, KV))
                    store_at(of, at, acc, KV)


@njit(nogil=True, cache=True, fastmath=_FMA)
def nhwc_to_nchw(out, nb, bias, use_bias, y, n0):
    """y[n0 + b, k, q] = out[b·P + q, k] (+ bias[k]) for the nb images of a
    chunk, y (N, K, P): L x L blocks transposed in registers where they fill
    the plane and the channels (and there is no bias), else element by
    element."""
    k_out, plane, step = y.shape[1], y.shape[2], out.shape[1]
    yf, of = y.reshape(-1), out.reshape(-1)
    n = lanes(y)
    if plane % n == 0 and k_out % n == 0 and not use_bias:     # L x L blocks in registers
        for b in range(nb):
            for q0 in range(0, plane, n):
                for k0 in range(0, k_out, n):
                    blk = load_square(of, (b * plane + q0) * step + k0, step)
                    store_rows(yf, ((n0 + b) * k_out + k0) * plane + q0, plane,
                               transpose_square(blk), 1)
        return
    # (unsigned indices: see cpu_conv3x3.shifted_planes)
    uk, up, step = np.uint64(k_out), np.uint64(plane), np.uint64(step)
    for b in range(np.uint64(nb)):
        img = (np.uint64(n0) + b) * uk * up
        for q0 in range(0, plane, 16):      # 16 positions at a time: their rows stay in L1
            q1 = min(plane, q0 + 16)
            for k in range(uk):
                b0 = bias[k] if use_bias else 0
                d = img + k * up
                for q in range(np.uint64(q0), np.uint64(q1)):
                    yf[d + q] = of[(b * up + q) * step + k] + b0


@njit(nogil=True, cache=True)
def conv3x3_nhwc_chunk(x, n0, n1, stride, xt, rows, offs, counts, wl, out, bias, use_bias, y):
    """y[n0:n1] = the convolution of images n0:n1 of x (N, C, H, W) with
    ``stride``: the channels-last layout and the tap lists,
    :func:`conv3x3_nhwc`, and the images out into y (N, K, Ho·Wo).  Also the
    input gradient (stride 1), from dY and the flipped kernel."""
    nb = n1 - n0
    _, c_in, h, w = x.shape
    nq = nb * y.shape[2]                # output positions
    npix = nb * h * w                   # input pixels
    to_nhwc(x, n0, n1, xt)
    xt[npix].fill(0)                    # (where the padding entries of the lists point)
    tap_lists(0, nb, h, w, stride, c_in, out.shape[1], nq, npix, rows, offs, counts)
    conv3x3_nhwc(xt, rows, offs, counts, wl, nq, out)
    nhwc_to_nchw(out, nb, bias, use_bias, y, n0)


@njit(nogil=True, cache=True)
def input_grad_s2_nhwc_chunk(g, n0, n1, h, w, gt, rows, offs, counts, wl, out, dx):
    """dx[n0:n1] of the stride-2, padding-1 3x3 convolution of images H x W:
    dY of those images (g, (N, K, Ho, Wo)) channels-last in ``gt`` (with a
    row of zeros after the last position), the forward's tap lists, and
    :func:`conv3x3_nhwc` with the lists' two sides swapped: each listed pair
    of an output position q and the pixel p that its tap reads becomes
    ``dx[p] += w_t · dY[q]``, ``out`` holding dx's pixels (one spare row
    past the last, where the lists' padding points).  ``wl`` is the weights
    with the channel axes swapped, unflipped (:func:`pack_nhwc` of
    w.transpose(1, 0, 2, 3)); dx is (N, C, H·W)."""
    nb = n1 - n0
    nq = nb * g.shape[2] * g.shape[3]   # dY's positions
    npix = nb * h * w                   # dx's pixels
    to_nhwc(g, n0, n1, gt)
    gt[nq].fill(0)                      # (read by the lists' padding, into out's spare row)
    tap_lists(0, nb, h, w, 2, out.shape[1], gt.shape[1], nq, npix, rows, offs, counts)
    conv3x3_nhwc(gt, offs, rows, counts, wl, npix, out)
    nhwc_to_nchw(out, nb, np.zeros(1, gt.dtype), False, dx, n0)


@njit(inline="always", fastmath=_FMA)
def _grad_block(df, d, k_all, xf, gf, r, o, count, c, k0, cw):
    """dW rows c .. c + cw − 1 of tap t (from df[d], rows k_all apart) and
    the KW vectors of output channels from k0 += Σ over the ``count``
    entries e of the tap's list: cw broadcasts of x (row o[e], from channel
    c) times KW vectors of dY (row r[e], from k0).  ``cw`` is a constant."""
    acc = load_rows(df, d, k_all, cw, KW)
    for e in range(count):
        acc = outer_fma(acc, splat_n(xf, o[e] + c, cw), load_n(gf, r[e] + k0, KW))
    store_rows(df, d, k_all, acc, KW)


@njit(nogil=True, cache=True, fastmath=_FMA)
def weight_grad_nhwc(xt, gt, n, h, w, stride, tile, kb0, kb1, c0, c1, rows, offs, counts, dwt,
                     dw):
    """dw[k, c, t] = Σ_q x[pixel of tap t at q, c] · dY[q, k] over the
    output positions q of all n images (H x W, ``stride``), for the output
    channels of the blocks kb0 <= kb < kb1 (KW vectors each) and the input
    channels c0 <= c < c1 (c1 − c0 even).  ``xt`` and ``gt`` are x and
    dY channels-last (:func:`to_nhwc`), each with a row of zeros after the
    last pixel; the sums go into dwt (9, C, K), float32, a scratch array
    whose part this call zeroes first, and then into dw (K, C, 9).

    The images go in tiles of ``tile`` (their x and dY stay in the L2 cache
    while every block reads them), each tap over its list of positions
    (:func:`tap_lists`).  A register block is CW input channels by KW
    vectors of output channels: per position, CW broadcasts of x and KW
    vectors of dY.  A thread owns its part of dW and adds the tiles into it
    in order, so the sums do not depend on the threads."""
    prefer_512_bit_vectors()
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    c_in, k_all = xt.shape[1], gt.shape[1]
    kl = KW * lanes(gt)
    xf, gf, df = xt.reshape(-1), gt.reshape(-1), dwt.reshape(-1)
    whole = c1 - (c1 - c0) % CW                     # channels in whole blocks, the rest by CT
    ka, kz = kb0 * kl, min(k_all, kb1 * kl)
    dwt[:, c0:c1, ka:kz] = 0
    for b0 in range(0, n, tile):
        nb = min(n, b0 + tile) - b0
        tap_lists(b0, nb, h, w, stride, c_in, k_all, n * ho * wo, n * h * w, rows, offs, counts)
        for t in range(9):
            r, o = rows[t], offs[t]
            for kb in range(kb0, kb1):
                k0 = kb * kl
                for c in range(c0, whole, CW):
                    _grad_block(df, (t * c_in + c) * k_all + k0, k_all, xf, gf, r, o, counts[t],
                                c, k0, CW)
                for c in range(whole, c1, CT):
                    _grad_block(df, (t * c_in + c) * k_all + k0, k_all, xf, gf, r, o, counts[t],
                                c, k0, CT)
    for k in range(ka, kz):                         # this part of dW, in the weights' layout
        for c in range(c0, c1):
            for t in range(9):
                dw[k, c, t] = dwt[t, c, k]
