"""Direct 3×3 convolution (stride 1, padding 1) for minigrad's CPU fast path.

The im2col route (``cpu_numba.im2col`` + a BLAS product) copies every input
pixel nine times and then runs a skinny matrix product, which BLAS does
slowly when the layer has few channels.  The kernels here compute the same
sums directly from the input, with three copies instead of nine:

**Shifted planes.**  For a chunk of images, ``shifted_planes`` lays out each
channel of the images end to end, every image after ``m = W`` zeros (one row
of zero padding; the zeros after one image are the padding before the next),
three times: ``sh[1]`` is the image itself, ``sh[0]`` the image shifted one
column right (``sh[0][oy, ox] = x[oy, ox − 1]``, 0 in column 0) and ``sh[2]``
shifted one column left (``x[oy, ox + 1]``, 0 in column W − 1).  Then every
tap (i, j) of the 3×3 kernel, at flat output position u, reads the same
offset in one of the three::

    x_pad[oy + i, ox + j]  =  sh[j][u + (i − 1)·W]      (u = image start + oy·W + ox)

so an output row, a whole plane, even several images in a row, are computed
by one loop over u that reads nine arrays at fixed offsets and writes one:
exactly the loop a compiler turns into vector instructions (16 float32 per
AVX-512 register).  Where an image's positions do not fill whole register
blocks (below), the positions between images are computed too and thrown
away (W of every H·W + W); where they fill whole blocks and one narrower
block (8x8, 16x16, 32x32 planes), the blocks go image by image and skip them.

**Forward** (``conv3x3_blocks``), a register block at a time: KR = 8
output channels by VR = 2 vectors of positions (32 positions for float32;
with AVX2, 4 output channels by 3 vectors of 8), 16 accumulator vectors
that stay in registers over every input channel c and tap (i, j)::

    acc_k[u] += Σ_{c,i,j} w[k, c, i, j] · sh[j][c, u + (i − 1)·W]

Per tap: 2 vector loads of the input and 8 broadcast weights feed 16 fused
multiply-adds; the accumulators touch memory once per block, when they are
stored, whole vectors straight from the registers, into an output laid out
like the input (``planes_to_nchw`` then copies the images out of it).
``kernels/simd.py`` spells the vectors out (``load_n``, ``splat_n``,
``outer_fma``), because left to itself the compiler keeps too few sums in
registers and stores them back after every tap.  A block may
read up to ``READ_AHEAD`` positions past the last image of a chunk (those
sums are thrown away), so every buffer has that many zeros to spare.

**Input gradient**: for stride 1 it is the same convolution of dY with the
kernel flipped and its channel axes swapped, so the same kernel.

**Weight gradient** (``conv3x3_weight_grad``): for 2 output channels k and one
input channel c, 18 sums over every position u of the chunk at once::

    dW[k, c, i, j] += Σ_u dY[k, u] · sh[j][c, u + (i − 1)·W]

with dY laid out like ``sh[1]`` (zeros between the images, so the positions
outside the images add nothing).

The loops are written for the compiler: the nine inputs are nine views
indexed by the loop counter only, and every sum is spelled out, because the
compiler vectorises straight runs of independent loop iterations, not loops
over small tables.  ``prefer_512_bit_vectors`` lets LLVM use the full
AVX-512 width in these kernels (by default it stops at 256 bits on Intel
CPUs); elsewhere it changes nothing.
"""
from __future__ import annotations

import numpy as np
from numba import carray, njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .simd import (FLOAT32_LANES, lanes, load_n, load_square, outer_fma, prefer_512_bit_vectors,
                   splat_at, splat_n, store_n, store_rows, transpose_square, zeros_n)

# The float arithmetic may be contracted into fused multiply-adds (one
# rounding instead of two); the sums of the weight gradient may also be
# reassociated, which is what lets them run as vector sums (16 partial sums
# added at the end).  Either way the result depends only on the shapes, never
# on the run: the order is fixed when the kernel is compiled.
_FMA = {"contract"}
_FMA_SUMS = {"contract", "reassoc"}


# ---------------------------------------------------------------------------
# Two small compiler helpers
# ---------------------------------------------------------------------------
@intrinsic
def _stack_pointer(typingctx, like, size):
    """Pointer to ``size`` (a constant) elements of ``like``'s dtype on the
    stack, 64-byte aligned: scratch memory the compiler can prove overlaps no
    array."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value

    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, context.get_value_type(like.dtype), size=n)
        ptr.align = 64
        return ptr
    return types.CPointer(like.dtype)(like, size), codegen


@intrinsic
def _zero_of(typingctx, like):
    """0 in the dtype of the array ``like`` (so sums stay in float32 for float32)."""
    def codegen(context, builder, signature, args):
        return context.get_constant(like.dtype, 0)
    return like.dtype(like), codegen


# ---------------------------------------------------------------------------
# The layout
# ---------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def shifted_planes(x, n0, n1, m, sh, j0=0, j1=3):
    """sh[j, c] = images n0:n1 of channel c of ``x`` (N, C, H, W), end to end,
    each after m zeros (and m zeros after the last), shifted by j − 1 columns:
    sh[j, c, m + b·S + oy·W + ox] = x[n0 + b, c, oy, ox + j − 1] (0 outside the
    image), S = H·W + m.  Only the copies j0 <= j < j1 are written.

    Indices are unsigned and into flat views made once (so are those of
    :func:`phase_planes` and :func:`planes_to_nchw`): Numba tests signed ones
    for being negative, which keeps a loop out of vector instructions, and
    each view costs two atomic reference counts, which on small images took
    longer than the copying."""
    _, c_in, h, w = x.shape
    plane = h * w
    s = plane + m
    xf, shf = x.reshape(-1), sh.reshape(-1)
    length = sh.shape[2]
    up = np.uint64(plane)
    for c in range(c_in):
        for j in range(j0, j1):
            d = np.uint64((j * c_in + c) * length)
            for t in range(np.uint64(m)):
                shf[d + t] = 0
        for b in range(n1 - n0):
            src = np.uint64(((n0 + b) * c_in + c) * plane)
            base = m + b * s
            for j in range(j0, j1):         # one copy at a time, each a straight copy
                d = np.uint64((j * c_in + c) * length + base + 1 - j)
                for t in range(up):
                    shf[d + t] = xf[src + t]
            # each shift wraps one pixel per row into the next row: the zero
            # padding column (copy 2 also one into the padding before the
            # image); then the padding after the image
            if j0 == 0:
                d = c * length + base           # (copy 0)
                for oy in range(h):
                    shf[d + oy * w] = 0
            if j1 == 3:
                d = (2 * c_in + c) * length + base
                shf[d - 1] = 0
                for oy in range(h):
                    shf[d + oy * w + w - 1] = 0
            # (after the last image: zeros to the end of the buffer, which
            # the register blocks may read past the last position)
            pad = m if b < n1 - n0 - 1 else length - base - plane
            for j in range(j0, j1):
                d = np.uint64((j * c_in + c) * length + base + plane)
                for t in range(np.uint64(pad)):
                    shf[d + t] = 0


@njit(nogil=True, cache=True)
def phase_planes(x, n0, n1, m, ph, j0=0, j1=3):
    """The layout of a stride-2 convolution: ph[3p + j, c] holds the rows
    p, p + 2, p + 4, ... of images n0:n1 of channel c (Ho = ⌈H/2⌉ of them,
    zeros past the image), in the layout of :func:`shifted_planes` with row
    length m = Wo = ⌈W/2⌉: j = 1 the even columns 0, 2, 4, ..., j = 2 the odd
    columns 1, 3, 5, ..., j = 0 the odd columns one place to the right (0 in
    column 0).  Then tap (i, j) of output (oy, ox), the input pixel
    (2·oy + i − 1, 2·ox + j − 1), is ph[3 + j] one row up for i = 0,
    ph[j] for i = 1 and ph[3 + j] for i = 2, at the output position.
    Only the copies j0 <= j < j1 are written."""
    _, c_in, h, w = x.shape
    if w % 2 == 1:
        _phase_planes_any(x, n0, n1, m, ph, j0, j1)
        return
    # W even: the rows of one parity, one after the other (a buffer in the
    # L1 cache), hold the even and odd columns alternately, so that each
    # copy is one long loop over every other element, which runs in vector
    # instructions (row by row the loops are too short for them).  Indices
    # are unsigned and into flat views made once, as in shifted_planes.
    ho = (h + 1) // 2
    plane = ho * m
    s = plane + m
    rows_in = max(1, _PHASE_TMP // w)             # image rows per pass through the buffer
    tmp = carray(_stack_pointer(ph, _PHASE_TMP), (_PHASE_TMP,))
    xf, phf = x.reshape(-1), ph.reshape(-1)
    length = ph.shape[2]
    one, two = np.uint64(1), np.uint64(2)
    uw = np.uint64(w)
    for p in range(2):
        for c in range(c_in):
            for j in range(j0, j1):
                d = np.uint64(((3 * p + j) * c_in + c) * length)
                for t in range(np.uint64(m)):
                    phf[d + t] = 0
            for b in range(n1 - n0):
                img = np.uint64(((n0 + b) * c_in + c) * h * w)
                base = m + b * s
                for a0 in range(0, ho, rows_in):
                    a1 = min(ho, a0 + rows_in)
                    for a in range(a0, a1):
                        iy = 2 * a + p
                        row = np.uint64((a - a0) * w)
                        if iy < h:
                            sr = img + np.uint64(iy * w)
                            for t in range(uw):
                                tmp[row + t] = xf[sr + t]
                        else:                       # (H odd: the row below the image)
                            for t in range(uw):
                                tmp[row + t] = 0
                    n = np.uint64((a1 - a0) * m)
                    o = base + a0 * m
                    de = np.uint64(((3 * p + 1) * c_in + c) * length + o)
                    do = np.uint64(((3 * p + 2) * c_in + c) * length + o)
                    if j0 <= 1 and j1 == 3:         # even and odd columns in one loop
                        for u in range(n):          # (a pair of loads, then shuffles)
                            phf[de + u] = tmp[two * u]
                            phf[do + u] = tmp[two * u + one]
                    elif j0 <= 1 < j1:              # even columns
                        for u in range(n):
                            phf[de + u] = tmp[two * u]
                    elif j1 == 3:                   # odd columns
                        for u in range(n):
                            phf[do + u] = tmp[two * u + one]
                    if j0 == 0:                     # odd columns one place right
                        d = np.uint64((3 * p * c_in + c) * length + o + 1)
                        if j1 == 3:                 # a straight copy of the odd ones
                            for u in range(n - one):
                                phf[d + u] = phf[do + u]
                        else:
                            for u in range(n - one):
                                phf[d + u] = tmp[two * u + one]
                        for a in range(a0, a1):
                            ph[3 * p, c, base + a * m] = 0
                end = s if b < n1 - n0 - 1 else length - base
                for j in range(j0, j1):             # the padding after the image
                    d = np.uint64(((3 * p + j) * c_in + c) * length + base)
                    for t in range(np.uint64(plane), np.uint64(end)):
                        phf[d + t] = 0


_PHASE_TMP = 4096   # floats of the row buffer of phase_planes


@njit(nogil=True, cache=True)
def _phase_planes_any(x, n0, n1, m, ph, j0, j1):
    """:func:`phase_planes` for any W, one element at a time."""
    _, c_in, h, w = x.shape
    ho = (h + 1) // 2
    plane = ho * m
    s = plane + m
    for p in range(2):
        for c in range(c_in):
            for j in range(j0, j1):
                d = ph[3 * p + j, c]
                for t in range(m):
                    d[t] = 0
                q = 0 if j == 1 else 1              # even or odd input columns
                shift = 1 if j == 0 else 0
                for b in range(n1 - n0):
                    src = x[n0 + b, c]
                    dv = d[m + b * s:]
                    for a in range(ho):
                        iy = 2 * a + p
                        row = dv[a * m:]
                        for t in range(shift):
                            row[t] = 0
                        for t in range(shift, m):
                            ix = 2 * (t - shift) + q
                            row[t] = src[iy, ix] if iy < h and ix < w else 0
                    end = s if b < n1 - n0 - 1 else d.shape[0] - m - b * s
                    for t in range(plane, end):     # the padding after the image
                        dv[t] = 0                   # (the last: to the buffer's end)


@njit(nogil=True, cache=True, fastmath=_FMA_SUMS)
def plane_sums(g1, m, total, out):
    """out[k] += Σ_u g1[k, m + u] for u < total (float64): the bias gradient,
    from dY in the shifted-planes layout (zeros between the images)."""
    for k in range(g1.shape[0]):
        gv = g1[k, m:]
        acc = 0.0
        for t in range(total):
            acc += gv[t]
        out[k] += acc


@njit(nogil=True, cache=True)
def image_sums(g, n0, n1, out):
    """out[k] += Σ_{n0 <= b < n1, q} g[b, k, q] (float64): the bias gradient
    from dY (N, K, Ho·Wo) as it is."""
    for b in range(n0, n1):
        plane_sums(g[b], 0, g.shape[2], out)


# ---------------------------------------------------------------------------
# Forward (and the stride-1 input gradient)
# ---------------------------------------------------------------------------
@njit(inline="always")
def _image_run(u, end, s, plane):
    """The run of positions from u (before ``end``) inside one image of the
    layout (images of ``plane`` positions, every s positions): (image,
    position in the image, length); length 0 if u is in the padding after an
    image, and then the position where the next image starts."""
    b = u // s
    q = u - b * s
    if q >= plane:
        return b, q, 0, u + s - q
    e = min(plane - q, end - u)
    return b, q, e, u + e


@njit(nogil=True, cache=True, fastmath=_FMA)
def planes_to_nchw(out, m, nb, bias, use_bias, y, n0):
    """y[n0 + b, k, q] = out[k, b·S + q] (+ bias[k]) for the nb images of a
    chunk: the output of :func:`conv3x3_blocks`, in the layout of its input
    (image b's positions from b·S, S = Ho·Wo + m), copied into y (N, K, Ho·Wo)
    image by image, leaving out the positions between the images."""
    k_out, plane = y.shape[1], y.shape[2]
    s = plane + m
    yf, of = y.reshape(-1), out.reshape(-1)     # (flat views, unsigned indices:
    step = out.shape[1]                         # see shifted_planes)
    for k in range(k_out):
        b0 = bias[k] if use_bias else 0
        for b in range(nb):
            d = np.uint64(((n0 + b) * k_out + k) * plane)
            src = np.uint64(k * step + b * s)
            for t in range(np.uint64(plane)):
                yf[d + t] = of[src + t] + b0


# Register blocks: KR output channels x VR vectors of positions, KR·VR
# accumulators that stay in registers over all the input channels and taps.
# Per tap: VR loads of the input, KR broadcast weights, KR·VR fused
# multiply-adds.  With AVX-512 (32 registers of 16 float32) a block is 8 x 2:
# 16 accumulators, and each vector of input, which comes from the L2 cache
# (every block reads all the chunk's channels), feeds 8 multiply-adds; the
# weights are broadcast from L1.  Measured on one core of an Intel Xeon
# (family 6, model 167; AVX-512) on 2026-12-02, the kernel alone on a
# chunk: 222-235 GFLOP/s at the four ResNet shapes, against 141-201 with
# 4 x 6 blocks (24 accumulators, 4 multiply-adds per input vector), 211-224
# with 4 x 4, 197-217 with 6 x 3.
# With AVX2 (16 registers of 8 float32) 4 x 3, which leaves the 4 registers
# a tap needs besides.
KR = 8 if FLOAT32_LANES == 16 else 4
VR = 2 if FLOAT32_LANES == 16 else 3
READ_AHEAD = VR * FLOAT32_LANES     # positions a block may read past the last one it keeps


@njit(inline="always")
def kernel_tap(weight, flip, k, c, t):
    """Tap t = 3i + j of the kernel from input channel c to output channel k:
    w[k, c, i, j], or for ``flip`` (the input gradient's kernel) w[c, k,
    2 − i, 2 − j]; 0 for an output channel past the last (k >= K)."""
    i, j = t // 3, t % 3
    if flip:
        return weight[c, k, 2 - i, 2 - j] if k < weight.shape[1] else 0
    return weight[k, c, i, j] if k < weight.shape[0] else 0


@njit(nogil=True, cache=True)
def pack_blocks(weight, flip, wk):
    """wk[kb, c, 3i + j, r] = w[KR·kb + r, c, i, j] (0 past K): the weights
    (K, C, 3, 3) by blocks of KR output channels, the layout of
    :func:`conv3x3_blocks`.  ``flip``: the kernel of the input gradient
    instead, w[c, k, 2 − i, 2 − j] for output channel k = KR·kb + r."""
    for kb in range(wk.shape[0]):
        for c in range(wk.shape[1]):
            for t in range(9):
                for r in range(KR):
                    wk[kb, c, t, r] = kernel_tap(weight, flip, KR * kb + r, c, t)


def _block_of(vr):
    """The register block of :func:`conv3x3_blocks` with ``vr`` vectors of
    positions (a compile-time constant): KR output channels from block kb at
    positions u0 .. u0 + vr·L − 1, summed over the input channels and the
    nine taps, and stored into ``of`` (rows ``step`` apart)."""
    nacc = KR * vr

    @njit(inline="always", fastmath=_FMA)
    def block(top, mid, bot, o0, o1, o2, cs, length, m, wf, kb, c_in, u0, of, step):
        acc = zeros_n(of, nacc)
        for c in range(c_in):
            p = c * length + m + u0
            wq = (kb * c_in + c) * 9 * KR
            acc = outer_fma(acc, splat_n(wf, wq, KR), load_n(top, p + o0, vr))
            acc = outer_fma(acc, splat_n(wf, wq + KR, KR), load_n(top, cs + p + o0, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 2 * KR, KR), load_n(top, 2 * cs + p + o0, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 3 * KR, KR), load_n(mid, p + o1, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 4 * KR, KR), load_n(mid, cs + p + o1, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 5 * KR, KR), load_n(mid, 2 * cs + p + o1, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 6 * KR, KR), load_n(bot, p + o2, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 7 * KR, KR), load_n(bot, cs + p + o2, vr))
            acc = outer_fma(acc, splat_n(wf, wq + 8 * KR, KR), load_n(bot, 2 * cs + p + o2, vr))
        store_rows(of, KR * kb * step + u0, step, acc, vr)
    return block


# The narrower block that ends an image whose vectors of positions are not a
# whole number of blocks: 1 vector with AVX-512 (on a 4x4 or 12x12 plane;
# 8x8, 16x16 and 32x32 planes are 4, 16 and 64 vectors of 16 float32, whole
# blocks); 2 with AVX2 (8, 32 and 128 vectors of 8: 3 + 3 + 2, ...).
VR_TAIL = 1 if VR == 2 else 2
_block = _block_of(VR)
_tail_block = _block_of(VR_TAIL)


@njit(cache=True)
def image_blocks(plane, lanes_):
    """Whether :func:`conv3x3_blocks` goes image by image (its blocks inside
    each image, the last one narrower: VR_TAIL vectors) rather than over the
    chunk's positions in one run, whose blocks also cover the m positions
    between two images: where each image is a whole number of vectors that
    splits into blocks of VR and at most one of VR_TAIL."""
    vectors, rest = divmod(plane, lanes_)
    return rest == 0 and vectors % VR in (0, VR_TAIL)


@njit(nogil=True, cache=True, fastmath=_FMA)
def conv3x3_blocks(rows, offsets, wk, m, plane, nb, out, kb0, kb1):
    """out[k, u] = Σ_{c,i,j} w[k, c, i, j] · (tap (i, j) of channel c at u)
    for every output position u of the nb images of a chunk (each of
    ``plane`` = Ho·Wo positions, after m zeros) and the output channels
    KR·kb0 <= k < KR·kb1.

    Tap (i, j) of channel c at output position u is
    rows[i][(j·C + c)·length + m + u + offsets[i]]: for stride 1, rows are
    three flat views of ``sh`` from :func:`shifted_planes` and offsets
    (−W, 0, W); for stride 2, of the row phases of :func:`phase_planes`.
    ``m`` is the output row length (the zeros before each image), ``wk`` is
    (KB, C, 9, KR), the weights packed by blocks of KR output channels:
    wk[kb, c, 3i + j, r] = w[KR·kb + r, c, i, j] (zeros past K).  ``out``
    is (KR·KB, T), T at least the chunk's positions (nb·(plane + m) − m)
    rounded up to a whole block (:func:`out_columns`): each register block
    goes to memory in whole vectors, straight from the registers, and
    :func:`planes_to_nchw` copies the images out of it afterwards (writing
    each block into the images directly, around the gaps between them, made
    the kernel 10-35% slower).

    Where each image's positions split into whole blocks and one narrower
    block (:func:`image_blocks`), the blocks go image by image and skip the
    m positions between the images (on 16x16 planes 16 of every 272), else
    they run over all the chunk's positions.
    """
    prefer_512_bit_vectors()
    top, mid, bot = rows
    o0, o1, o2 = offsets
    c_in = wk.shape[1]
    length = mid.shape[0] // (3 * c_in)
    cs = c_in * length                  # from one shifted copy to the next
    step = out.shape[1]
    s = plane + m
    total = nb * s - m
    span = VR * lanes(out)
    of = out.ravel()
    wf = wk.ravel()
    by_image = image_blocks(plane, lanes(out))
    whole = plane - plane % span        # positions of an image in whole blocks
    for kb in range(kb0, kb1):
        if not by_image:
            for u0 in range(0, total, span):
                _block(top, mid, bot, o0, o1, o2, cs, length, m, wf, kb, c_in, u0, of, step)
            continue
        for b in range(nb):
            for q0 in range(0, whole, span):
                _block(top, mid, bot, o0, o1, o2, cs, length, m, wf, kb, c_in, b * s + q0, of,
                       step)
            if whole < plane:
                _tail_block(top, mid, bot, o0, o1, o2, cs, length, m, wf, kb, c_in, b * s + whole,
                            of, step)


@njit(nogil=True, cache=True)
def _phase_tiles_to_nchw(even, odd, u0, n, s, wo, py, dx, n0, c):
    """Write tile positions u0 <= u < u0 + n of the parity planes (py, 0) and
    (py, 1) of channel c into dx (N, C, H, W): position (a, b) of an image
    is the pixel pair (2a + py, 2b) and (2a + py, 2b + 1), where inside."""
    h, w = dx.shape[2], dx.shape[3]
    u = u0
    while u < u0 + n:
        b, q, e, after = _image_run(u, u0 + n, s, s - wo)
        if e == 0:                          # in the padding after image b
            u = after
            continue
        a = q // wo
        col = q - a * wo
        e = min(wo - col, e)                # the rest of this row of the image
        iy = 2 * a + py
        if iy < h:
            row = dx[n0 + b, c, iy, 2 * col:]
            ev, ov = even[u - u0:], odd[u - u0:]
            pairs = min(e, (w - 2 * col) // 2)  # whole (even, odd) pixel pairs
            for t in range(pairs):
                row[2 * t] = ev[t]
                row[2 * t + 1] = ov[t]
            if pairs < e:                   # W odd: the last even pixel alone
                row[2 * pairs] = ev[pairs]
        u += e


def out_columns(total):
    """Columns of :func:`conv3x3_blocks`' output for ``total`` positions: a
    whole number of register blocks (of the widest, float32, blocks)."""
    return -(-total // READ_AHEAD) * READ_AHEAD


PHASE_TILE = 256    # positions per tile of the stride-2 input gradient (8 accumulators)
_PHASE_ACC = 8 * PHASE_TILE


@njit(nogil=True, cache=True, fastmath=_FMA)
def conv3x3_input_grad_s2(sg, w9t, m, nb, dx, n0, c0, c1):
    """dx of a stride-2, padding-1 convolution for the channels c0 <= c < c1,
    from dY in the shifted-planes layout ``sg`` (row length m = Wo).

    Each pixel of dx receives from the outputs whose window covers it: the
    even-even pixels (2a, 2b) from tap (1, 1) of output (a, b) only, the
    even-odd ones (2a, 2b + 1) from taps (1, 2) of (a, b) and (1, 0) of
    (a, b + 1), and so on, 9 taps over the four parity planes together::

        dx[2a,     2b    ] = Σ_k w11·dY[a, b]
        dx[2a,     2b + 1] = Σ_k w12·dY[a, b] + w10·dY[a, b + 1]
        dx[2a + 1, 2b    ] = Σ_k w21·dY[a, b] + w01·dY[a + 1, b]
        dx[2a + 1, 2b + 1] = Σ_k w22·dY[a, b] + w20·dY[a, b + 1]
                                 + w02·dY[a + 1, b] + w00·dY[a + 1, b + 1]

    (w_ij = w[k, c, i, j]).  dY[a, b + 1] is ``sg[2]``, one row down is one
    row length further.  ``w9t`` is (C, K2, 9): w9t[c, k, 3i + j] = w[k, c, i, j],
    K2 = K rounded up to even (zeros in the extra row).  Two input channels
    by two output channels at a time: 8 accumulators, 36 multiply-adds per
    8 loads of dY and 8 of the accumulators.
    """
    prefer_512_bit_vectors()
    k_out = sg.shape[1]
    plane = (dx.shape[2] + 1) // 2 * m
    s = plane + m
    total = nb * s - m
    tile = min(total, PHASE_TILE)
    acc = carray(_stack_pointer(dx, _PHASE_ACC), (_PHASE_ACC,))
    e00, e01, e10, e11 = acc[:tile], acc[tile:2 * tile], acc[2 * tile:3 * tile], acc[3 * tile:]
    f00, f01 = acc[4 * tile:5 * tile], acc[5 * tile:6 * tile]
    f10, f11 = acc[6 * tile:7 * tile], acc[7 * tile:]
    for c in range(c0, c1, 2):
        c2 = min(c + 1, c1 - 1)                     # an odd last c is done twice
        for u0 in range(0, total, tile):
            n = min(tile, total - u0)
            for t in range(8 * tile):
                acc[t] = 0
            for k in range(0, k_out, 2):                   # two output channels at a time
                k2 = min(k + 1, k_out - 1)                  # (an odd last one has zero weights)
                p = m + u0
                ga, gb, gc, gd = sg[1, k, p:], sg[2, k, p:], sg[1, k, p + m:], sg[2, k, p + m:]
                ha, hb, hc, hd = sg[1, k2, p:], sg[2, k2, p:], sg[1, k2, p + m:], sg[2, k2, p + m:]
                wa, wb, xa, xb = w9t[c, k], w9t[c2, k], w9t[c, k + 1], w9t[c2, k + 1]
                for t in range(n):
                    va, vb, vc, vd = ga[t], gb[t], gc[t], gd[t]
                    ua, ub, uc, ud = ha[t], hb[t], hc[t], hd[t]
                    e00[t] = e00[t] + wa[4] * va + xa[4] * ua
                    e01[t] = e01[t] + wa[5] * va + wa[3] * vb + xa[5] * ua + xa[3] * ub
                    e10[t] = e10[t] + wa[7] * va + wa[1] * vc + xa[7] * ua + xa[1] * uc
                    e11[t] = (e11[t] + wa[8] * va + wa[6] * vb + wa[2] * vc + wa[0] * vd
                              + xa[8] * ua + xa[6] * ub + xa[2] * uc + xa[0] * ud)
                    f00[t] = f00[t] + wb[4] * va + xb[4] * ua
                    f01[t] = f01[t] + wb[5] * va + wb[3] * vb + xb[5] * ua + xb[3] * ub
                    f10[t] = f10[t] + wb[7] * va + wb[1] * vc + xb[7] * ua + xb[1] * uc
                    f11[t] = (f11[t] + wb[8] * va + wb[6] * vb + wb[2] * vc + wb[0] * vd
                              + xb[8] * ua + xb[6] * ub + xb[2] * uc + xb[0] * ud)
            for cc in range(c2 - c + 1):
                for py in range(2):
                    even = acc[(4 * cc + 2 * py) * tile:]
                    _phase_tiles_to_nchw(even, even[tile:], u0, n, s, m, py, dx, n0, c + cc)


# ---------------------------------------------------------------------------
# Weight gradient
# ---------------------------------------------------------------------------
SUM_TILE = 2048     # positions per partial sum (dY's tile stays in L1)


@njit(nogil=True, cache=True, fastmath=_FMA_SUMS)
def conv3x3_weight_grad(x1, x0, sg, g0, w, total, dw):
    """dw[k, c, 3i + j] += Σ_u x[c, u] · dY_pad[k, u − (i − 1)·W − (j − 1)], over
    every position u of the chunk (each image and the padding between); u is
    x1[:, x0 + u] and sg[:, :, g0 + u].

    That is Σ_{oy,ox} dY[k, oy, ox] · x_pad[c, oy + i, ox + j] with the shift
    moved from x to dY, so x is needed unshifted (``x1``, the copy j = 1 of
    :func:`shifted_planes`) and dY in all three shifted copies ``sg``, which
    the input gradient has made anyway:
    dY_pad[k, u − (i − 1)·W − (j − 1)] = sg[2 − j, k, u − (i − 1)·W].
    ``dw`` is (K, C, 9), float64.  The positions are taken SUM_TILE at a time
    and, for each output channel, the nine shifted views of its dY tile stay
    in the L1 cache while the input channels stream past, two at a time.
    """
    prefer_512_bit_vectors()
    k_out, c_in = sg.shape[1], x1.shape[0]
    for u0 in range(0, total, SUM_TILE):
        n = min(SUM_TILE, total - u0)
        for k in range(k_out):
            p = g0 + u0 + w                         # i = 0: dY one row below
            g00, g01, g02 = sg[2, k, p:], sg[1, k, p:], sg[0, k, p:]
            p -= w
            g10, g11, g12 = sg[2, k, p:], sg[1, k, p:], sg[0, k, p:]
            p -= w
            g20, g21, g22 = sg[2, k, p:], sg[1, k, p:], sg[0, k, p:]
            for c in range(0, c_in, 2):
                xa = x1[c, x0 + u0:]
                xb = x1[min(c + 1, c_in - 1), x0 + u0:]     # an odd last c is done twice
                z = _zero_of(x1)
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = z
                b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = z
                for t in range(n):
                    ea, eb = xa[t], xb[t]
                    a0, b0 = _mul_add2(a0, b0, ea, eb, g00[t])
                    a1, b1 = _mul_add2(a1, b1, ea, eb, g01[t])
                    a2, b2 = _mul_add2(a2, b2, ea, eb, g02[t])
                    a3, b3 = _mul_add2(a3, b3, ea, eb, g10[t])
                    a4, b4 = _mul_add2(a4, b4, ea, eb, g11[t])
                    a5, b5 = _mul_add2(a5, b5, ea, eb, g12[t])
                    a6, b6 = _mul_add2(a6, b6, ea, eb, g20[t])
                    a7, b7 = _mul_add2(a7, b7, ea, eb, g21[t])
                    a8, b8 = _mul_add2(a8, b8, ea, eb, g22[t])
                _add9(dw[k, c], a0, a1, a2, a3, a4, a5, a6, a7, a8)
                if c + 1 < c_in:
                    _add9(dw[k, c + 1], b0, b1, b2, b3, b4, b5, b6, b7, b8)


@njit(nogil=True, cache=True)
def weight_grad_shifting_x(g, n0, n1, sx, m, dwt):
    """The weight gradient of a stride-1 convolution from x in its three
    shifted copies ``sx`` (:func:`shifted_planes`, images n0:n1, row length
    m = W) and dY as it is, ``g`` (N, K, H·W): the shifts of
    :func:`conv3x3_weight_grad` go back to x, and the roles of x and dY swap::

        dwt[c, k, 8 − (3i + j)] += Σ_{oy,ox} dY[k, oy, ox] · x_pad[c, oy + i, ox + j]

    (``dwt`` is dW with its channel axes swapped and the taps reversed, the
    order in which the kernel, called with dY as its "x", produces them),
    image by image.  For a layer with no dx to compute (a network's first
    layer, whose few input channels make x's copies small), dY needs no
    layout at all."""
    plane = g.shape[2]
    for b in range(n1 - n0):
        conv3x3_weight_grad(g[n0 + b], 0, sx, m + b * (plane + m), m, plane, dwt)


# positions per partial sum of the stride-2 weight gradient: one input
# channel's four parity planes stay in the L1 cache while dY streams past
S2_SUM_TILE = 1024


@njit(nogil=True, cache=True, fastmath=_FMA_SUMS)
def conv3x3_weight_grad_s2(ph, sg, m, total, dw):
    """The weight gradient of a stride-2 convolution:
    dw[k, c, 3i + j] += Σ_{oy,ox} dY[k, oy, ox] · x_pad[c, 2·oy + i, 2·ox + j].

    The tap's input pixel is, at output position u, one of the four parity
    planes X_pq (rows ≡ p, columns ≡ q mod 2: ``ph[3p + 1 + q]`` of
    :func:`phase_planes`), one row up when i = 0 and one column left when
    j = 0; moving that shift to dY (the same trick as
    :func:`conv3x3_weight_grad`) leaves four views of dY: G = sg[1] and
    sg[2] (dY one column left), at u and one row down (u + Wo).

    The positions are taken S2_SUM_TILE at a time; for each input channel
    its four planes stay in the L1 cache while the output channels stream
    past, two at a time (x's planes the other way round, eight streams from
    the L2 cache per position, took 1.7x as long: AMD EPYC family 26, one
    thread, 16 -> 32 from 32x32, 2026-12-02).
    """
    prefer_512_bit_vectors()
    k_out, c_in = sg.shape[1], ph.shape[1]
    for u0 in range(0, total, S2_SUM_TILE):
        n = min(S2_SUM_TILE, total - u0)
        p = m + u0
        for c in range(c_in):
            x00, x01, x10, x11 = ph[1, c, p:], ph[2, c, p:], ph[4, c, p:], ph[5, c, p:]
            for k in range(0, k_out, 2):
                k2 = min(k + 1, k_out - 1)                  # an odd last k is done twice
                ga, gb = sg[1, k, p:], sg[2, k, p:]          # dY[a, b], dY[a, b + 1]
                gc, gd = sg[1, k, p + m:], sg[2, k, p + m:]  # dY[a + 1, b], dY[a + 1, b + 1]
                ha, hb = sg[1, k2, p:], sg[2, k2, p:]        # the same of channel k2
                hc, hd = sg[1, k2, p + m:], sg[2, k2, p + m:]
                z = _zero_of(sg)
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = z
                b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = z
                for t in range(n):
                    e00, e01, e10, e11 = x00[t], x01[t], x10[t], x11[t]
                    a0, b0 = _mul_add2(a0, b0, gd[t], hd[t], e11)     # (0, 0)
                    a1, b1 = _mul_add2(a1, b1, gc[t], hc[t], e10)     # (0, 1)
                    a2, b2 = _mul_add2(a2, b2, gc[t], hc[t], e11)     # (0, 2)
                    a3, b3 = _mul_add2(a3, b3, gb[t], hb[t], e01)     # (1, 0)
                    a4, b4 = _mul_add2(a4, b4, ga[t], ha[t], e00)     # (1, 1)
                    a5, b5 = _mul_add2(a5, b5, ga[t], ha[t], e01)     # (1, 2)
                    a6, b6 = _mul_add2(a6, b6, gb[t], hb[t], e11)     # (2, 0)
                    a7, b7 = _mul_add2(a7, b7, ga[t], ha[t], e10)     # (2, 1)
                    a8, b8 = _mul_add2(a8, b8, ga[t], ha[t], e11)     # (2, 2)
                _add9(dw[k, c], a0, a1, a2, a3, a4, a5, a6, a7, a8)
                if k + 1 < k_out:
                    _add9(dw[k + 1, c], b0, b1, b2, b3, b4, b5, b6, b7, b8)


@njit(nogil=True, cache=True)
def to_nhwc(x, n0, n1, xt):
    """xt[(b·H + y)·W + x, c] = x[n0 + b, c, y, x]: images n0:n1 of x
    (N, C, H, W) channels-last, one row of channels per pixel.  Where the
    plane and the channels fill whole L x L blocks (L lanes), a block at a
    time, transposed in registers; else by 16 pixels at a time, so the rows
    being written stay in the L1 cache while every channel is read.  The
    layout of :func:`weight_grad_lanes` here, and of the channels-last
    kernels (cpu_conv3x3_nhwc.py)."""
    _, c_in, h, w = x.shape
    plane, row = h * w, xt.shape[1]
    xf, tf = x.reshape(-1), xt.reshape(-1)
    n = lanes(xt)
    if plane % n == 0 and c_in % n == 0:        # L x L blocks, transposed in registers
        for b in range(n1 - n0):
            for q0 in range(0, plane, n):
                for c0 in range(0, c_in, n):
                    blk = load_square(xf, ((n0 + b) * c_in + c0) * plane + q0, plane)
                    store_rows(tf, (b * plane + q0) * row + c0, row, transpose_square(blk), 1)
        return
    # (unsigned indices: see cpu_conv3x3.shifted_planes)
    uc, up, row = np.uint64(c_in), np.uint64(plane), np.uint64(row)
    for b in range(np.uint64(n1 - n0)):
        src = (np.uint64(n0) + b) * uc * up
        for q0 in range(0, plane, 16):
            q1 = min(plane, q0 + 16)
            for c in range(uc):
                s = src + c * up
                for q in range(np.uint64(q0), np.uint64(q1)):
                    tf[(b * up + q) * row + c] = xf[s + q]


# The weight gradient with the input channels in the vector lanes: blocks of
# CV vectors of channels by the 9 taps (18 accumulators), summed over this many
# positions in registers before they go into the float64 total.
CV = 2
FLUSH_POSITIONS = 1024
_NACC_W = 9 * CV                    # accumulator vectors
_LANES_PART = _NACC_W * FLOAT32_LANES


@njit(nogil=True, cache=True, fastmath=_FMA)
def weight_grad_lanes(xt, sg, w, m, nb, plane, dw):
    """dw[k, c, 3i + j] += Σ_u x[c, u] · dY_pad[k, u − (i − 1)·W − (j − 1)], the
    sum of :func:`conv3x3_weight_grad` with the input channels in the vector
    lanes instead of the positions: for one output channel k and CV·L input
    channels c (L lanes), per position u of the chunk::

        acc[3i + j][c] += dY_pad[k, u − (i − 1)·W − (j − 1)] · xt[u, c]

    nine broadcast values of dY (from its three shifted copies ``sg``, as in
    :func:`conv3x3_weight_grad`) times CV vectors of ``xt`` (the chunk's x from
    :func:`to_nhwc`, one row of channels per position).  The sums
    stay in the lanes, each its own input channel, so there is nothing to
    add across a vector at the end (the other kernel sums 16 positions in
    16 lanes and then adds those up: on 8x8 images, where the sums are short,
    that took a fifth of its time).  ``dw`` is (K, C, 9), float64; C is a
    multiple of CV·L.
    """
    prefer_512_bit_vectors()
    k_out, c_in = sg.shape[1], dw.shape[1]
    block = CV * lanes(xt)
    length = sg.shape[2]
    cs = k_out * length                             # from one shifted copy of dY to the next
    s = plane + m
    offsets = (2 * cs + w, cs + w, w, 2 * cs, cs, 0, 2 * cs - w, cs - w, -w)
    sgf, xtf = sg.reshape(-1), xt.reshape(-1)
    row = xt.shape[1]
    part = carray(_stack_pointer(xt, _LANES_PART), (_LANES_PART,))
    for k in range(k_out):
        for c0 in range(0, c_in, block):
            acc = zeros_n(xt, _NACC_W)
            since = 0
            for b in range(nb):
                gb = k * length + m + b * s
                xb = b * plane * row + c0
                for q0 in range(0, plane, FLUSH_POSITIONS):
                    q1 = min(plane, q0 + FLUSH_POSITIONS)
                    for q in range(q0, q1):
                        acc = outer_fma(acc, splat_at(sgf, gb + q, offsets),
                                        load_n(xtf, xb + q * row, CV))
                    since += q1 - q0
                    if since >= FLUSH_POSITIONS or (b == nb - 1 and q1 == plane):
                        store_n(part, 0, acc)
                        for t in range(9):
                            for v in range(block):
                                dw[k, c0 + v, t] += part[t * block + v]
                        acc = zeros_n(xt, _NACC_W)
                        since = 0


@njit(inline="always", fastmath=_FMA_SUMS)
def _mul_add2(a, b, ea, eb, v):
    """(a + ea·v, b + eb·v): one input value into two running sums."""
    return a + ea * v, b + eb * v


@njit(inline="always")
def _add9(d, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    """d[0:9] += (a0, ..., a8)."""
    d[0] += a0
    d[1] += a1
    d[2] += a2
    d[3] += a3
    d[4] += a4
    d[5] += a5
    d[6] += a6
    d[7] += a7
    d[8] += a8


# ---------------------------------------------------------------------------
# A chunk in one call
# ---------------------------------------------------------------------------
# Each thread of a convolution takes chunks of images and runs a few of the
# kernels above on each.  Between two calls from Python a thread needs the
# interpreter's lock, and when the other thread holds it, it sleeps until the
# lock is handed over (10-50 us on a virtual machine).  So the steps of a chunk
# run in one compiled call each side (measured: a layer's forward 5-14% faster
# than with one call per step).
WG_PLANES, WG_LANES, WG_SHIFT_X = 0, 1, 2     # how weight_grad_chunk sums


@njit(nogil=True, cache=True)
def fill_planes(x, n0, n1, stride, m, buf, j0, j1):
    """Lay images n0:n1 of x out for a stride-1 (:func:`shifted_planes`) or
    stride-2 (:func:`phase_planes`) convolution, the copies j0 <= j < j1."""
    if stride == 1:
        shifted_planes(x, n0, n1, m, buf, j0, j1)
    else:
        phase_planes(x, n0, n1, m, buf, j0, j1)


@njit(nogil=True, cache=True)
def conv3x3_chunk(x, n0, n1, stride, m, buf, j0, j1, rows, offsets, wk, out, bias, use_bias, y):
    """y[n0:n1] = the convolution of images n0:n1 of x (N, C, H, W) by the
    register blocks (packed weights ``wk``), (+ bias): the planes of the
    chunk in ``buf``, :func:`conv3x3_blocks` into ``out``, and the images out
    into y (N, K, Ho·Wo).  ``rows``, ``offsets``: the kernel rows' sources in
    ``buf`` and their offsets.  Also the stride-1 input gradient, from dY and
    the flipped kernel."""
    plane = y.shape[2]
    fill_planes(x, n0, n1, stride, m, buf, j0, j1)
    conv3x3_blocks(rows, offsets, wk, m, plane, n1 - n0, out, 0, wk.shape[0])
    planes_to_nchw(out, m, n1 - n0, bias, use_bias, y, n0)


@njit(nogil=True, cache=True)
def weight_grad_chunk(how, x, g, n0, n1, stride, m, sx, xt, sg, dw):
    """dw += the part of images n0:n1 in the weight gradient: x's layout for
    the chunk, then the sums, one of

    * WG_PLANES: x unshifted (stride 1: the copy j = 1 of
      :func:`shifted_planes`) or its four parity planes (stride 2), and
      :func:`conv3x3_weight_grad` or :func:`conv3x3_weight_grad_s2` with dY's
      planes ``sg`` (row length Wo); dw is (K, C, 9);
    * WG_LANES: x channels-last in ``xt`` (:func:`to_nhwc`) and :func:`weight_grad_lanes`;
    * WG_SHIFT_X: x's three shifted copies and :func:`weight_grad_shifting_x`
      with dY ``g`` (N, K, Ho·Wo) as it is; dw is (C, K, 9), taps reversed.

    ``m`` is the output row length Wo (the row length of both layouts)."""
    nb = n1 - n0
    plane = g.shape[2]                  # Ho·Wo
    total = nb * (plane + m) - m
    if how == WG_SHIFT_X:
        shifted_planes(x, n0, n1, m, sx, 0, 3)
        weight_grad_shifting_x(g, n0, n1, sx, m, dw)
    elif how == WG_LANES:
        to_nhwc(x, n0, n1, xt)
        weight_grad_lanes(xt, sg, m, m, nb, plane, dw)
    elif stride == 1:
        shifted_planes(x, n0, n1, m, sx, 1, 2)
        conv3x3_weight_grad(sx[1], m, sg, m, m, total, dw)
    else:
        phase_planes(x, n0, n1, m, sx, 1, 3)
        conv3x3_weight_grad_s2(sx, sg, m, total, dw)
