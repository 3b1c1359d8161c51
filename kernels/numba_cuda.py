"""The direct 3x3 convolution and its two gradients as Numba CUDA kernels.

The same algorithm as ``conv3x3.cu``, written in Python syntax, so a learner can
compare the two line by line (and run this one without a GPU in Numba's CUDA
simulator: ``NUMBA_ENABLE_CUDASIM=1``).

Thread / block mapping (identical to the CUDA C version):

* ``conv3x3_forward``: a block computes an 8 x 8 tile of output pixels for 16
  output channels of one image.  Block = (8, 8, 4) threads; thread (tx, ty, tz)
  owns pixel (oy0+ty, ox0+tx) and the 4 output channels tz*4 .. tz*4+3 (four
  accumulators in a local array).  Grid = (spatial tiles, ceil(K/16), N).  The
  input channels are walked in chunks of 8: the block stages the input patch the
  tile needs *with its halo* ((8-1)*stride + 3 pixels a side) and the 16 x 8 x 9
  weights in shared memory, synchronises, and multiplies from shared memory.
* ``conv3x3_backward_input``: the same shape run in reverse: a block owns a tile of
  *input* pixels for 16 input channels, stages a gy patch of at most 10 x 10 and
  gathers, for each tap (ky, kx), gy[oy, ox] with oy*stride - pad + ky == iy
  (only taps on the stride grid contribute).  No atomics.
* ``conv3x3_backward_weight``: a block owns output channel k, 4 input channels and
  one slice of the N*Ho*Wo positions; 256 threads stride over the positions keeping
  36 partial sums, which are then reduced through shared memory (each thread writes
  its 36 sums, thread i < 36 adds up column i).  Each slice writes its own partial
  result; the caller sums the slices.

Host helpers (``forward``, ``backward_input``, ``backward_weight``) launch the
kernels on arrays the caller allocated: CuPy arrays on a GPU (Numba reads them
through ``__cuda_array_interface__``), NumPy arrays in the simulator.

``numba.cuda`` is imported when this module is imported, so import it lazily
(minigrad.cuda does).  With NVIDIA's ``numba-cuda`` package installed (the
maintained home of Numba's CUDA target), ``from numba import cuda`` resolves to it.
"""
from __future__ import annotations

import math

from numba import cuda, float32

TILE = 8                                  # output pixels per block side
CO_PER_THREAD = 4                         # output channels per thread
CO_GROUPS = 4                             # blockDim.z
CO_BLOCK = CO_PER_THREAD * CO_GROUPS      # output channels per block (16)
CI_TILE = 8                               # input channels staged per step
IN_MAX = (TILE - 1) * 2 + 3               # input patch side at stride <= 2 (17)
G_MAX = TILE + 2                          # gy patch side in backward_input (10)
WG_THREADS = 256                          # threads of a weight-gradient block
WG_CI = 4                                 # input channels per weight-gradient block
NTHREADS = TILE * TILE * CO_GROUPS        # threads of a conv block (256)


@cuda.jit
def conv3x3_forward_kernel(x, w, y, stride, pad):
    s_in = cuda.shared.array((CI_TILE, IN_MAX, IN_MAX), float32)
    s_w = cuda.shared.array((CO_BLOCK, CI_TILE, 9), float32)
    N, C, H, W = x.shape
    K, Ho, Wo = y.shape[1], y.shape[2], y.shape[3]

    tiles_w = (Wo + TILE - 1) // TILE
    oy0 = (cuda.blockIdx.x // tiles_w) * TILE
    ox0 = (cuda.blockIdx.x % tiles_w) * TILE
    k0 = cuda.blockIdx.y * CO_BLOCK
    n = cuda.blockIdx.z
    tx, ty, tz = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
    tid = (tz * TILE + ty) * TILE + tx

    in_side = (TILE - 1) * stride + 3          # input patch side with the halo
    iy0 = oy0 * stride - pad
    ix0 = ox0 * stride - pad
    patch = in_side * in_side

    acc = cuda.local.array(CO_PER_THREAD, float32)
    for j in range(CO_PER_THREAD):
        acc[j] = 0.0

    for c0 in range(0, C, CI_TILE):
        # 1. stage the input patch (zeros in the padding)
        for i in range(tid, CI_TILE * patch, NTHREADS):
            ci, r = i // patch, i % patch
            py, px = r // in_side, r % in_side
            c, iy, ix = c0 + ci, iy0 + py, ix0 + px
            v = float32(0.0)
            if c < C and 0 <= iy < H and 0 <= ix < W:
                v = x[n, c, iy, ix]
            s_in[ci, py, px] = v
        # 2. stage the weights of this chunk for the block's output channels
        for i in range(tid, CO_BLOCK * CI_TILE * 9, NTHREADS):
            co, r = i // (CI_TILE * 9), i % (CI_TILE * 9)
            ci, tap = r // 9, r % 9
            k, c = k0 + co, c0 + ci
            v = float32(0.0)
            if k < K and c < C:
                v = w[k, c, tap // 3, tap % 3]
            s_w[co, ci, tap] = v
        cuda.syncthreads()
        # 3. multiply-accumulate from shared memory
        for ci in range(CI_TILE):
            for ky in range(3):
                for kx in range(3):
                    v = s_in[ci, ty * stride + ky, tx * stride + kx]
                    for j in range(CO_PER_THREAD):
                        acc[j] += v * s_w[tz * CO_PER_THREAD + j, ci, ky * 3 + kx]
        cuda.syncthreads()

    oy, ox = oy0 + ty, ox0 + tx
    if oy < Ho and ox < Wo:
        for j in range(CO_PER_THREAD):
            k = k0 + tz * CO_PER_THREAD + j
            if k < K:
                y[n, k, oy, ox] = acc[j]


@cuda.jit
def conv3x3_backward_input_kernel(gy, w, gx, stride, pad):
    s_g = cuda.shared.array((CI_TILE, G_MAX, G_MAX), float32)
    s_w = cuda.shared.array((CO_BLOCK, CI_TILE, 9), float32)
    N, C, H, W = gx.shape
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

    acc = cuda.local.array(CO_PER_THREAD, float32)
    for j in range(CO_PER_THREAD):
        acc[j] = 0.0

    for k0 in range(0, K, CI_TILE):
        for i in range(tid, CI_TILE * G_MAX * G_MAX, NTHREADS):
            ki, r = i // (G_MAX * G_MAX), i % (G_MAX * G_MAX)
            row, col = r // G_MAX, r % G_MAX
            k, oy, ox = k0 + ki, oy_lo + row, ox_lo + col
            v = float32(0.0)
            if k < K and 0 <= oy < Ho and 0 <= ox < Wo:
                v = gy[n, k, oy, ox]
            s_g[ki, row, col] = v
        for i in range(tid, CO_BLOCK * CI_TILE * 9, NTHREADS):
            co, r = i // (CI_TILE * 9), i % (CI_TILE * 9)
            ki, tap = r // 9, r % 9
            c, k = c0 + co, k0 + ki
            v = float32(0.0)
            if k < K and c < C:
                v = w[k, c, tap // 3, tap % 3]
            s_w[co, ki, tap] = v
        cuda.syncthreads()
        # gather: tap (ky, kx) contributes when iy + pad - ky is a multiple of stride
        for ki in range(CI_TILE):
            for ky in range(3):
                t_row = iy + pad - ky
                if t_row % stride != 0:
                    continue
                ly = t_row // stride - oy_lo
                for kx in range(3):
                    t_col = ix + pad - kx
                    if t_col % stride != 0:
                        continue
                    lx = t_col // stride - ox_lo
                    g = s_g[ki, ly, lx]
                    for j in range(CO_PER_THREAD):
                        acc[j] += g * s_w[tz * CO_PER_THREAD + j, ki, ky * 3 + kx]
        cuda.syncthreads()

    if iy < H and ix < W:
        for j in range(CO_PER_THREAD):
            c = c0 + tz * CO_PER_THREAD + j
            if c < C:
                gx[n, c, iy, ix] = acc[j]


@cuda.jit
def conv3x3_backward_weight_kernel(x, gy, gw_part, stride, pad, per_slice):
    s_red = cuda.shared.array((WG_THREADS, WG_CI * 9), float32)
    N, C, H, W = x.shape
    K, Ho, Wo = gy.shape[1], gy.shape[2], gy.shape[3]
    k = cuda.blockIdx.x
    c0 = cuda.blockIdx.y * WG_CI
    sl = cuda.blockIdx.z
    tid = cuda.threadIdx.x
    P = N * Ho * Wo
    start = sl * per_slice
    end = min(start + per_slice, P)

    acc = cuda.local.array(WG_CI * 9, float32)
    for i in range(WG_CI * 9):
        acc[i] = 0.0

    for p in range(start + tid, end, WG_THREADS):
        ox, oy, n = p % Wo, (p // Wo) % Ho, p // (Ho * Wo)
        g = gy[n, k, oy, ox]
        for ci in range(WG_CI):
            c = c0 + ci
            if c >= C:
                break
            for ky in range(3):
                iy = oy * stride - pad + ky
                if iy < 0 or iy >= H:
                    continue
                for kx in range(3):
                    ix = ox * stride - pad + kx
                    if 0 <= ix < W:
                        acc[ci * 9 + ky * 3 + kx] += g * x[n, c, iy, ix]

    # block reduction through shared memory
    for i in range(WG_CI * 9):
        s_red[tid, i] = acc[i]
    cuda.syncthreads()
    if tid < WG_CI * 9:
        total = float32(0.0)
        for t in range(WG_THREADS):
            total += s_red[t, tid]
        c = c0 + tid // 9
        if c < C:
            gw_part[sl, k, c, (tid % 9) // 3, tid % 3] = total


# --- host-side launchers -------------------------------------------------------
def out_size(size: int, stride: int, pad: int) -> int:
    """Output side of a 3x3 convolution."""
    return (size + 2 * pad - 3) // stride + 1


def forward(x, w, y, stride: int, pad: int):
    """Launch the forward kernel: y (N, K, Ho, Wo) <- conv(x (N, C, H, W), w (K, C, 3, 3))."""
    N, K, Ho, Wo = y.shape
    grid = (math.ceil(Ho / TILE) * math.ceil(Wo / TILE), math.ceil(K / CO_BLOCK), N)
    conv3x3_forward_kernel[grid, (TILE, TILE, CO_GROUPS)](x, w, y, stride, pad)
    return y


def backward_input(gy, w, gx, stride: int, pad: int):
    """Launch the input-gradient kernel: gx (N, C, H, W) <- gy (N, K, Ho, Wo), w."""
    N, C, H, W = gx.shape
    grid = (math.ceil(H / TILE) * math.ceil(W / TILE), math.ceil(C / CO_BLOCK), N)
    conv3x3_backward_input_kernel[grid, (TILE, TILE, CO_GROUPS)](gy, w, gx, stride, pad)
    return gx


def backward_weight(x, gy, gw_part, stride: int, pad: int):
    """Launch the weight-gradient kernel into ``gw_part`` (slices, K, C, 3, 3); the
    caller sums it over axis 0."""
    slices, K, C = gw_part.shape[:3]
    P = gy.shape[0] * gy.shape[2] * gy.shape[3]
    per_slice = math.ceil(P / slices)
    grid = (K, math.ceil(C / WG_CI), slices)
    conv3x3_backward_weight_kernel[grid, WG_THREADS](x, gy, gw_part, stride, pad, per_slice)
    return gw_part
