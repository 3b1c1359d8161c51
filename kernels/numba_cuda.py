"""The direct 3x3 convolution and its two gradients as Numba CUDA kernels.

The same algorithm as ``conv3x3.cu``, written in Python syntax, so a learner can
compare the two line by line (and run this one without a GPU in Numba's CUDA
simulator: ``NUMBA_ENABLE_CUDASIM=1``).

Thread / block mapping (identical to the CUDA C version; its header comment
explains the shared-memory layouts and why they avoid bank conflicts):

* ``conv3x3_forward``: a block computes an 8 x 8 tile of output pixels for 16
  output channels of one image.  Block = (8, 8, 4) threads; thread (tx, ty, tz)
  owns pixel (oy0+ty, ox0+tx) and the 4 output channels tz*4 .. tz*4+3 (four
  accumulators in a local array).  Grid = (spatial tiles, ceil(K/16), N).  The
  input channels are walked in chunks of 8: the block stages the input patch the
  tile needs *with its halo* ((8-1)*stride + 3 pixels a side; at stride 2 each row
  is stored with its even columns first, then its odd ones) and the weights as
  [input channel][tap][output channel] in shared memory, synchronises, and
  multiplies from shared memory.
* ``conv3x3_backward_input``: the same shape run in reverse: a block owns a tile of
  *input* pixels for 16 input channels, stages a gy patch of at most 10 x 10 and
  gathers, for each tap (ky, kx), gy[oy, ox] with oy*stride - pad + ky == iy
  (only taps on the stride grid contribute).  No atomics.
* ``conv3x3_backward_weight``: a block owns 4 output channels, 4 input channels
  and one slice of the (image, 8 x 8 output tile) units.  For each unit it stages
  the input patch of its 4 input channels and the gy tile of its 4 output channels;
  thread (pixel, channel) adds its 9 taps x 4 output channels to 36 partial sums.
  These are then reduced over the 64 pixels of each channel through shared memory
  (a tree: 32, 16, ... 1 threads add pairs).  Each slice writes its own partial
  result; the caller sums the slices.

Every shared and local array has a shape fixed when the module is compiled (the
module-level constants below): Numba's CUDA compiler accepts nothing else.

Host helpers (``forward``, ``backward_input``, ``backward_weight``) launch the
kernels on arrays the caller allocated: CuPy arrays on a GPU, NumPy arrays in the
simulator.  A CuPy array is handed to Numba as a view without synchronising
(``cuda.as_cuda_array(a, sync=False)``), and the kernel runs on CuPy's current
stream, so it is ordered after the CuPy work that made its inputs and before the
CuPy work that reads its outputs, with no wait on the host.

``numba.cuda`` is imported when this module is imported, so import it lazily
(minigrad.cuda does).  With NVIDIA's ``numba-cuda`` package installed (the
maintained home of Numba's CUDA target), ``from numba import cuda`` resolves to it.
"""
from __future__ import annotations

import math
import sys

from numba import cuda, float32, int32

TILE = 8                                  # output pixels per block side
CO_PER_THREAD = 4                         # output channels per thread
CO_GROUPS = 4                             # blockDim.z
CO_BLOCK = CO_PER_THREAD * CO_GROUPS      # output channels per block (16)
CI_TILE = 8                               # input channels staged per step
IN_ROWS = (TILE - 1) * 2 + 3              # rows of the input patch at stride <= 2 (17)
IN_PITCH = 24                             # floats per staged row at stride 1
IN_PITCH_S2 = 20                          # ... and at stride 2 (de-interleaved)
IN_EVEN = (IN_ROWS + 1) // 2              # even columns of a stride-2 row (9)
IN_PLANE = IN_ROWS * IN_PITCH             # floats per staged channel (408)
G_SIDE = TILE + 2                         # gy patch side in backward_input (10)
G_PITCH = 24                              # floats per staged gy row
G_PLANE = G_SIDE * G_PITCH
NTHREADS = TILE * TILE * CO_GROUPS        # threads of a conv block (256)
WG_PIX = TILE * TILE                      # output pixels of a weight-gradient unit (64)
WG_CI = 4                                 # input channels per weight-gradient block
WG_K = 4                                  # output channels per weight-gradient block
WG_THREADS = WG_PIX * WG_CI               # threads of a weight-gradient block (256)
WG_SUMS = WG_K * 9                        # partial sums per weight-gradient thread (36)
# the shared-array sizes, as plain constants (a shape must be a compile-time constant)
S_IN_CONV = CI_TILE * IN_PLANE
S_G_CONV = CI_TILE * G_PLANE
S_IN_WG = WG_CI * IN_PLANE
S_G_WG = WG_PIX * WG_K
S_RED_WG = WG_SUMS * WG_THREADS


@cuda.jit(device=True)
def staged_col(px, stride):
    """Where column px of a patch row is staged: as is at stride 1; even columns
    first, then odd ones, at stride 2 (see conv3x3.cu, SHARED-MEMORY BANKS)."""
    if stride == 1:
        return px
    return (px & 1) * IN_EVEN + (px >> 1)


@cuda.jit(device=True)
def stage_input_patch(s_in, x, n, c0, nc, iy0, ix0, stride, tid, nthreads):
    """Copy channels c0 .. c0+nc-1 of image n of x, rows iy0.., columns ix0.., into
    s_in (zeros outside the image: the padding)."""
    H, W = x.shape[2], x.shape[3]
    side = (TILE - 1) * stride + 3
    pitch = IN_PITCH if stride == 1 else IN_PITCH_S2
    patch = side * side
    for i in range(tid, nc * patch, nthreads):
        ci, r = i // patch, i % patch
        py, px = r // side, r % side
        iy, ix = iy0 + py, ix0 + px
        v = float32(0.0)
        if 0 <= iy < H and 0 <= ix < W:
            v = x[n, c0 + ci, iy, ix]
        s_in[ci * IN_PLANE + py * pitch + staged_col(px, stride)] = v


@cuda.jit(device=True)
def input_tap_offsets(at, tx, ty, stride):
    """at[ky*3 + kx] = where tap (ky, kx) of tile pixel (tx, ty) reads a staged channel."""
    pitch = IN_PITCH if stride == 1 else IN_PITCH_S2
    for ky in range(3):
        for kx in range(3):
            at[ky * 3 + kx] = (ty * stride + ky) * pitch + staged_col(tx * stride + kx, stride)


@cuda.jit
def conv3x3_forward_kernel(x, w, y, stride, pad):
    s_in = cuda.shared.array(S_IN_CONV, float32)
    s_w = cuda.shared.array((CI_TILE, 9, CO_BLOCK), float32)   # [ci][tap][co]
    C = x.shape[1]
    K, Ho, Wo = y.shape[1], y.shape[2], y.shape[3]

    tiles_w = (Wo + TILE - 1) // TILE
    oy0 = (cuda.blockIdx.x // tiles_w) * TILE
    ox0 = (cuda.blockIdx.x % tiles_w) * TILE
    k0 = cuda.blockIdx.y * CO_BLOCK
    n = cuda.blockIdx.z
    tx, ty, tz = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
    tid = (tz * TILE + ty) * TILE + tx

    tap_at = cuda.local.array(9, int32)
    input_tap_offsets(tap_at, tx, ty, stride)
    acc = cuda.local.array(CO_PER_THREAD, float32)
    for j in range(CO_PER_THREAD):
        acc[j] = 0.0

    for c0 in range(0, C, CI_TILE):
        nc = min(CI_TILE, C - c0)
        # 1. stage the input patch (zeros in the padding)
        stage_input_patch(s_in, x, n, c0, nc, oy0 * stride - pad, ox0 * stride - pad,
                          stride, tid, NTHREADS)
        # 2. stage w[k0.., c0.., :, :] as s_w[ci, tap, co] (co fastest)
        for i in range(tid, nc * 9 * CO_BLOCK, NTHREADS):
            co, r = i % CO_BLOCK, i // CO_BLOCK
            ci, tap = r // 9, r % 9
            k = k0 + co
            v = float32(0.0)
            if k < K:
                v = w[k, c0 + ci, tap // 3, tap % 3]
            s_w[ci, tap, co] = v
        cuda.syncthreads()
        # 3. multiply-accumulate from shared memory
        for ci in range(nc):
            for t in range(9):
                v = s_in[ci * IN_PLANE + tap_at[t]]
                for j in range(CO_PER_THREAD):
                    acc[j] += v * s_w[ci, t, tz * CO_PER_THREAD + j]
        cuda.syncthreads()

    oy, ox = oy0 + ty, ox0 + tx
    if oy < Ho and ox < Wo:
        for j in range(CO_PER_THREAD):
            k = k0 + tz * CO_PER_THREAD + j
            if k < K:
                y[n, k, oy, ox] = acc[j]


@cuda.jit
def conv3x3_backward_input_kernel(gy, w, gx, stride, pad):
    s_g = cuda.shared.array(S_G_CONV, float32)
    s_w = cuda.shared.array((CI_TILE, 9, CO_BLOCK), float32)   # [k][tap][c]
    C, H, W = gx.shape[1], gx.shape[2], gx.shape[3]
    K, Ho, Wo = gy.shape[1], gy.shape[2], gy.shape[3]

    tiles_w = (W + TILE - 1) // TILE
    iy0 = (cuda.blockIdx.x // tiles_w) * TILE
    ix0 = (cuda.blockIdx.x % tiles_w) * TILE
    c0 = cuda.blockIdx.y * CO_BLOCK
    n = cuda.blockIdx.z
    tx, ty, tz = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
    tid = (tz * TILE + ty) * TILE + tx

    # first gy row/column that can reach this tile: ceil((i0 + pad - 2) / stride)
    # (Python's // floors, also for negative numbers)
    oy_lo = -((-(iy0 + pad - 2)) // stride)
    ox_lo = -((-(ix0 + pad - 2)) // stride)
    iy, ix = iy0 + ty, ix0 + tx

    # which taps reach this input pixel, and where each reads in the staged gy patch
    g_at = cuda.local.array(9, int32)       # -1: the tap does not contribute
    for ky in range(3):
        for kx in range(3):
            t_row, t_col = iy + pad - ky, ix + pad - kx        # = oy*stride, ox*stride
            g_at[ky * 3 + kx] = -1
            if t_row % stride == 0 and t_col % stride == 0:
                g_at[ky * 3 + kx] = (t_row // stride - oy_lo) * G_PITCH + (t_col // stride - ox_lo)

    acc = cuda.local.array(CO_PER_THREAD, float32)
    for j in range(CO_PER_THREAD):
        acc[j] = 0.0

    for k0 in range(0, K, CI_TILE):
        nk = min(CI_TILE, K - k0)
        for i in range(tid, nk * G_SIDE * G_SIDE, NTHREADS):
            ki, r = i // (G_SIDE * G_SIDE), i % (G_SIDE * G_SIDE)
            row, col = r // G_SIDE, r % G_SIDE
            oy, ox = oy_lo + row, ox_lo + col
            v = float32(0.0)
            if 0 <= oy < Ho and 0 <= ox < Wo:
                v = gy[n, k0 + ki, oy, ox]
            s_g[ki * G_PLANE + row * G_PITCH + col] = v
        for i in range(tid, nk * 9 * CO_BLOCK, NTHREADS):
            co, r = i % CO_BLOCK, i // CO_BLOCK
            ki, tap = r // 9, r % 9
            c = c0 + co
            v = float32(0.0)
            if c < C:
                v = w[k0 + ki, c, tap // 3, tap % 3]
            s_w[ki, tap, co] = v
        cuda.syncthreads()
        # gather: the taps on the stride grid
        for ki in range(nk):
            for t in range(9):
                at = g_at[t]
                if at < 0:
                    continue
                g = s_g[ki * G_PLANE + at]
                for j in range(CO_PER_THREAD):
                    acc[j] += g * s_w[ki, t, tz * CO_PER_THREAD + j]
        cuda.syncthreads()

    if iy < H and ix < W:
        for j in range(CO_PER_THREAD):
            c = c0 + tz * CO_PER_THREAD + j
            if c < C:
                gx[n, c, iy, ix] = acc[j]


@cuda.jit
def conv3x3_backward_weight_kernel(x, gy, gw_part, stride, pad, units_per_slice):
    s_in = cuda.shared.array(S_IN_WG, float32)
    s_g = cuda.shared.array(S_G_WG, float32)          # gy of the tile: [pixel][channel]
    s_red = cuda.shared.array(S_RED_WG, float32)      # [sum][thread]
    N, C = x.shape[0], x.shape[1]
    K, Ho, Wo = gy.shape[1], gy.shape[2], gy.shape[3]
    k0 = cuda.blockIdx.x * WG_K
    c0 = cuda.blockIdx.y * WG_CI
    sl = cuda.blockIdx.z
    tid = cuda.threadIdx.x
    pix, ci = tid % WG_PIX, tid // WG_PIX
    ty, tx = pix // TILE, pix % TILE
    nc = min(WG_CI, C - c0)
    tiles_w = (Wo + TILE - 1) // TILE
    tiles = tiles_w * ((Ho + TILE - 1) // TILE)
    first = sl * units_per_slice
    last = min(first + units_per_slice, N * tiles)

    tap_at = cuda.local.array(9, int32)
    input_tap_offsets(tap_at, tx, ty, stride)
    acc = cuda.local.array(WG_SUMS, float32)          # acc[kk * 9 + tap]
    for i in range(WG_SUMS):
        acc[i] = 0.0

    for u in range(first, last):
        n, tile = u // tiles, u % tiles
        oy0, ox0 = (tile // tiles_w) * TILE, (tile % tiles_w) * TILE
        stage_input_patch(s_in, x, n, c0, nc, oy0 * stride - pad, ox0 * stride - pad,
                          stride, tid, WG_THREADS)
        for i in range(tid, WG_K * WG_PIX, WG_THREADS):
            kk, p = i // WG_PIX, i % WG_PIX
            oy, ox, k = oy0 + p // TILE, ox0 + p % TILE, k0 + kk
            v = float32(0.0)
            if k < K and oy < Ho and ox < Wo:
                v = gy[n, k, oy, ox]
            s_g[p * WG_K + kk] = v
        cuda.syncthreads()
        if ci < nc:
            for t in range(9):
                v = s_in[ci * IN_PLANE + tap_at[t]]
                for kk in range(WG_K):
                    acc[kk * 9 + t] += s_g[pix * WG_K + kk] * v
        cuda.syncthreads()

    # reduce over the 64 pixel-threads of each input channel: a tree in shared memory
    for i in range(WG_SUMS):
        s_red[i * WG_THREADS + tid] = acc[i]
    cuda.syncthreads()
    half = WG_PIX // 2
    while half > 0:
        if pix < half:
            for i in range(WG_SUMS):
                s_red[i * WG_THREADS + tid] += s_red[i * WG_THREADS + tid + half]
        cuda.syncthreads()
        half //= 2
    if tid < WG_CI * WG_SUMS:
        cc, i = tid // WG_SUMS, tid % WG_SUMS
        k, c = k0 + i // 9, c0 + cc
        if k < K and c < C:
            gw_part[sl, k, c, (i % 9) // 3, i % 3] = s_red[i * WG_THREADS + cc * WG_PIX]


# --- host-side launchers -------------------------------------------------------
def out_size(size: int, stride: int, pad: int) -> int:
    """Output side of a 3x3 convolution."""
    return (size + 2 * pad - 3) // stride + 1


_streams = {}    # CuPy stream pointer -> numba external stream


def _on_cupy_stream(arrays):
    """(stream, arrays) for a launch: CuPy arrays become Numba views of the same memory
    (no copy, and no synchronisation: ``sync=False``) and the stream is CuPy's current
    one; anything else (NumPy arrays in the simulator) goes as it is, on stream 0."""
    cp = sys.modules.get("cupy")
    if cp is None or not any(isinstance(a, cp.ndarray) for a in arrays):
        return 0, arrays
    ptr = cp.cuda.get_current_stream().ptr
    stream = 0 if ptr == 0 else _streams.get(ptr)
    if stream is None:
        stream = _streams[ptr] = cuda.external_stream(ptr)
    return stream, [cuda.as_cuda_array(a, sync=False) if isinstance(a, cp.ndarray) else a
                    for a in arrays]


def _launch(kernel, grid, block, arrays, *scalars):
    stream, arrays = _on_cupy_stream(arrays)
    kernel[grid, block, stream](*arrays, *scalars)


def forward(x, w, y, stride: int, pad: int):
    """Launch the forward kernel: y (N, K, Ho, Wo) <- conv(x (N, C, H, W), w (K, C, 3, 3))."""
    N, K, Ho, Wo = y.shape
    grid = (math.ceil(Ho / TILE) * math.ceil(Wo / TILE), math.ceil(K / CO_BLOCK), N)
    _launch(conv3x3_forward_kernel, grid, (TILE, TILE, CO_GROUPS), (x, w, y), stride, pad)
    return y


def backward_input(gy, w, gx, stride: int, pad: int):
    """Launch the input-gradient kernel: gx (N, C, H, W) <- gy (N, K, Ho, Wo), w."""
    N, C, H, W = gx.shape
    grid = (math.ceil(H / TILE) * math.ceil(W / TILE), math.ceil(C / CO_BLOCK), N)
    _launch(conv3x3_backward_input_kernel, grid, (TILE, TILE, CO_GROUPS), (gy, w, gx),
            stride, pad)
    return gx


def backward_weight(x, gy, gw_part, stride: int, pad: int):
    """Launch the weight-gradient kernel into ``gw_part`` (slices, K, C, 3, 3); the
    caller sums it over axis 0."""
    slices, K, C = gw_part.shape[:3]
    N, Ho, Wo = gy.shape[0], gy.shape[2], gy.shape[3]
    units = N * math.ceil(Ho / TILE) * math.ceil(Wo / TILE)
    grid = (math.ceil(K / WG_K), math.ceil(C / WG_CI), slices)
    _launch(conv3x3_backward_weight_kernel, grid, WG_THREADS, (x, gy, gw_part), stride, pad,
            math.ceil(units / slices))
    return gw_part
