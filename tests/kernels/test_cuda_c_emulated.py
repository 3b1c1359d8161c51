"""The CUDA C kernels of kernels/*.cu, run on the CPU, against NumPy references.

g++ compiles the .cu sources together with cuda_emulation.h (one fiber per CUDA
thread, barriers for __syncthreads and warp shuffles) into a shared library;
ctypes launches each kernel with the same grid/block that minigrad.cuda uses on a
GPU.  So the kernels' indexing, tiling, halos, gathers and reductions are tested on
machines without a GPU.  (On a GPU, tests/test_gpu.py runs them for real.)
The ``lib`` fixture (conftest.py) builds the library once per session.
"""
import numpy as np
import pytest

import _numba_conv_checks as ref
from _emulation import launch
from minigrad import cuda as gpu


def shuffled(shape, rng):
    """Distinct values in random order: no ties for max-pooling."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 7.0 - 3.0).astype(np.float32)


# --- 3x3 convolution -------------------------------------------------------------------
CONV_CASES = [  # N, C, K, H, W, stride
    (2, 3, 2, 5, 7, 1), (2, 3, 2, 5, 7, 2),
    (1, 9, 17, 9, 10, 1), (1, 17, 9, 11, 10, 2),   # several tiles, chunks and channel blocks
    (2, 5, 3, 16, 16, 2),
    (2, 3, 2, 40, 40, 1),        # the launcher cuts the weight gradient into 3 slices
    (3, 6, 5, 33, 30, 2),        # stride 2: partial tiles, odd sizes, several images
]


@pytest.mark.parametrize("N,C,K,H,W,s", CONV_CASES)
def test_conv3x3_kernels(lib, N, C, K, H, W, s):
    rng = np.random.default_rng(N * 1000 + C * 100 + K + s)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)
    want_gx, want_gw = ref.reference_backward(x, w, gy, s, 1)

    y = np.full((N, K, Ho, Wo), np.nan, np.float32)
    grid, block = gpu.conv3x3_launch(Ho, Wo, K, N)
    launch(lib, "conv3x3_forward", grid, block, x, w, y, N, C, H, W, K, Ho, Wo, s, 1)
    np.testing.assert_allclose(y, ref.reference_forward(x, w, s, 1), rtol=1e-4, atol=1e-4)

    gx = np.full(x.shape, np.nan, np.float32)
    grid, block = gpu.conv3x3_launch(H, W, C, N)
    launch(lib, "conv3x3_backward_input", grid, block, gy, w, gx, N, C, H, W, K, Ho, Wo, s, 1)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-4, atol=1e-4)

    # the launcher's slicing, and (on the small cases) the (image, tile) units cut into
    # 1 and 3 slices
    units = N * -(-Ho // 8) * -(-Wo // 8)
    slice_counts = {gpu.conv3x3_weight_launch(N, C, K, Ho, Wo)[3]} | (
        {1, min(3, units)} if K * C <= 16 else set())
    for slices in sorted(slice_counts):
        grid, block, per_slice, _ = gpu.conv3x3_weight_launch(N, C, K, Ho, Wo, slices)
        part = np.full((slices, K, C, 3, 3), np.nan, np.float32)
        launch(lib, "conv3x3_backward_weight", grid, block,
               x, gy, part, N, C, H, W, K, Ho, Wo, s, 1, per_slice)
        np.testing.assert_allclose(part.sum(0), want_gw, rtol=1e-4, atol=1e-4)


# --- im2col / col2im ------------------------------------------------------------------------
def im2col_reference(x, kh, kw, s, p):
    N, C, H, W = x.shape
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    cols = np.zeros((C * kh * kw, N * Ho * Wo), np.float32)
    for c in range(C):
        for ky in range(kh):
            for kx in range(kw):
                for n in range(N):
                    for oy in range(Ho):
                        for ox in range(Wo):
                            iy, ix = oy * s - p + ky, ox * s - p + kx
                            if 0 <= iy < H and 0 <= ix < W:
                                cols[(c * kh + ky) * kw + kx, (n * Ho + oy) * Wo + ox] = x[n, c, iy, ix]
    return cols


# every kernel of im2col.cu and maxpool.cu comes with 32-bit and 64-bit indices
INDEX_WIDTHS = pytest.mark.parametrize("suffix", ["", "_i64"])


@INDEX_WIDTHS
@pytest.mark.parametrize("kh,kw,s,p", [(3, 3, 1, 1), (3, 3, 2, 1), (1, 1, 2, 0), (2, 3, 1, 0)])
@pytest.mark.parametrize("small_grid", [False, True])
def test_im2col_col2im(lib, kh, kw, s, p, small_grid, suffix):
    rng = np.random.default_rng(kh * 10 + s)
    N, C, H, W = 2, 3, 5, 7
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    cols = np.full((C * kh * kw, N * Ho * Wo), np.nan, np.float32)
    grid, block = ((3,), (64,)) if small_grid else gpu.launch_1d(cols.size)  # grid-stride loop
    launch(lib, "im2col" + suffix, grid, block, x, cols, N, C, H, W, kh, kw, s, s, p, p, Ho, Wo)
    np.testing.assert_array_equal(cols, im2col_reference(x, kh, kw, s, p))

    # col2im is the adjoint: <im2col(x), c> == <x, col2im(c)> for every x, so col2im(c)
    # is the gradient of that inner product, here by linearity on one-hot x
    c = rng.standard_normal(cols.shape).astype(np.float32)
    back = np.full(x.shape, np.nan, np.float32)
    grid, block = ((3,), (64,)) if small_grid else gpu.launch_1d(back.size)
    launch(lib, "col2im" + suffix, grid, block, c, back, N, C, H, W, kh, kw, s, s, p, p, Ho, Wo)
    want = np.zeros(x.shape, np.float32)
    for idx in np.ndindex(x.shape):
        e = np.zeros(x.shape, np.float32)
        e[idx] = 1
        want[idx] = (im2col_reference(e, kh, kw, s, p) * c).sum()
    np.testing.assert_allclose(back, want, rtol=1e-5, atol=1e-5)


# --- max pooling -------------------------------------------------------------------------------
@INDEX_WIDTHS
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_kernels(lib, k, s, p, suffix):
    rng = np.random.default_rng(k * 10 + s + p)
    N, C, H, W = 2, 3, 5, 7
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    x = shuffled((N, C, H, W), rng)
    y = np.full((N, C, Ho, Wo), np.nan, np.float32)
    arg = np.full((N, C, Ho, Wo), -7, np.int32)
    grid, block = gpu.launch_1d(y.size)
    launch(lib, "maxpool2d_forward" + suffix, grid, block, x, y, arg, N * C, H, W, Ho, Wo, k, k, s, s, p, p)

    gy = rng.standard_normal(y.shape).astype(np.float32)
    want_y = np.zeros(y.shape, np.float32)
    want_gx = np.zeros(x.shape, np.float32)
    for n, c, oy, ox in np.ndindex(y.shape):
        y0, x0 = oy * s - p, ox * s - p
        win = x[n, c, max(y0, 0):y0 + k, max(x0, 0):x0 + k]
        iy, ix = np.unravel_index(np.argmax(win), win.shape)
        iy, ix = iy + max(y0, 0), ix + max(x0, 0)
        want_y[n, c, oy, ox] = x[n, c, iy, ix]
        want_gx[n, c, iy, ix] += gy[n, c, oy, ox]
        assert arg[n, c, oy, ox] == iy * W + ix
    np.testing.assert_array_equal(y, want_y)

    gx = np.full(x.shape, np.nan, np.float32)
    grid, block = ((2,), (32,))      # a small grid: every thread loops
    launch(lib, "maxpool2d_backward" + suffix, grid, block, gy, arg, gx, N * C, H, W, Ho, Wo, k, k, s, s, p, p)
    np.testing.assert_allclose(gx, want_gx, rtol=1e-6, atol=1e-6)


# --- local response normalisation -----------------------------------------------------------------
def lrn_reference(x, size, alpha, beta, k):
    """The papers' LRN in float64: b_c = a_c / (k + alpha * sum_{window} a^2)^beta."""
    x = x.astype(np.float64)
    C = x.shape[1]
    out = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
        out[:, c] = x[:, c] / (k + alpha * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** beta
    return out


@pytest.mark.parametrize("size", [5, 3, 4])
def test_lrn_kernels(lib, size):
    rng = np.random.default_rng(size)
    N, C, H, W = 2, 7, 2, 3
    alpha, beta, k = 0.1, 0.75, 2.0       # a large alpha so the cross-channel term matters
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    y = np.full(x.shape, np.nan, np.float32)
    scale = np.full(x.shape, np.nan, np.float32)
    grid, block = gpu.launch_1d(N * H * W)
    launch(lib, "lrn_forward", grid, block, x, y, scale, N, C, H * W, size, alpha, beta, k)
    np.testing.assert_allclose(y, lrn_reference(x, size, alpha, beta, k), rtol=1e-5, atol=1e-6)

    gy = rng.standard_normal(x.shape).astype(np.float32)
    gx = np.full(x.shape, np.nan, np.float32)
    launch(lib, "lrn_backward", (1,), (5,), x, scale, gy, gx, N, C, H * W, size, alpha, beta)
    # oracle: central differences of <lrn(x), gy> in float64
    want = np.zeros(x.shape)
    x64, eps = x.astype(np.float64), 1e-6
    for idx in np.ndindex(x.shape):
        xp, xm = x64.copy(), x64.copy()
        xp[idx] += eps
        xm[idx] -= eps
        want[idx] = ((lrn_reference(xp, size, alpha, beta, k) -
                      lrn_reference(xm, size, alpha, beta, k)) * gy).sum() / (2 * eps)
    np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-5)


# --- dropout -----------------------------------------------------------------------------------
def splitmix64_uniform(seed, n):
    """u_i of kernels/dropout.cu in NumPy: the top 24 bits of SplitMix64's i-th number."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9e3779b97f4a7c15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) / np.float32(2 ** 24)


@pytest.mark.parametrize("p", [0.5, 0.1])
def test_dropout_kernel(lib, p):
    rng = np.random.default_rng(3)
    n, seed, scale = 4000, 123456789012345, 1.0 / (1.0 - p)
    x = rng.standard_normal(n).astype(np.float32)
    want_mask = np.where(splitmix64_uniform(seed, n) >= np.float32(p), np.float32(scale), 0)
    masks = []
    for grid, block in [gpu.launch_1d(n), ((3,), (64,))]:   # the mask is the same for any grid
        y, mask = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        launch(lib, "dropout_forward", grid, block, x, y, mask, np.int64(n), np.uint64(seed),
               np.float32(p), np.float32(scale))
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(y, x * mask)
        masks.append(mask)
    kept = (masks[0] > 0).mean()
    assert abs(kept - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n), kept   # the oracle is sane too
    other = np.full(n, np.nan, np.float32)
    launch(lib, "dropout_forward", *gpu.launch_1d(n), x, np.empty_like(x), other, np.int64(n),
           np.uint64(seed + 1), np.float32(p), np.float32(scale))
    # another seed, another (independent) mask: they disagree on about 2p(1-p) of the elements
    assert abs((other != masks[0]).mean() - 2 * p * (1 - p)) < 0.05


# --- the SGD update ------------------------------------------------------------------------------
def sgd_reference(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    """torch.optim.SGD's update, step by step, in float64."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    d = g + wd * p
    if momentum:
        buf = d.copy() if first else momentum * buf.astype(np.float64) + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    return p - lr * d, buf


@pytest.mark.parametrize("momentum,dampening,wd,nesterov,first", [
    (0.0, 0.0, 0.0, False, False), (0.0, 0.0, 5e-4, False, False),
    (0.9, 0.0, 1e-4, False, True), (0.9, 0.1, 1e-4, False, False), (0.9, 0.0, 5e-4, True, False)])
def test_sgd_kernel(lib, momentum, dampening, wd, nesterov, first):
    rng = np.random.default_rng(4)
    n, lr = 1000, 0.1
    p, g, buf = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    want_p, want_buf = sgd_reference(p, g, buf, lr, momentum, dampening, wd, nesterov, first)
    g_before, buf_out = g.copy(), buf.copy()
    launch(lib, "sgd_update", (2,), (64,), p, g, buf_out, np.int64(n), np.float32(lr),
           np.float32(momentum), np.float32(dampening), np.float32(wd), int(momentum != 0),
           int(nesterov), int(first))
    np.testing.assert_allclose(p, want_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(g, g_before)     # the gradient is never modified
    if momentum:
        np.testing.assert_allclose(buf_out, want_buf, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(buf_out, buf)


def test_conv3x3_kernels_past_2_31_elements(lib):
    """A batch of more than 2^31 elements (as VGG-16 at 224 x 224 reaches at about 670
    images): the kernels must address its last image right (64-bit image offsets)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parent / "_big_batch_check.py"
    proc = subprocess.run([sys.executable, str(script), lib._name], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"the emulated kernels crashed (exit {proc.returncode}):\n" \
                                 f"{proc.stderr[-3000:]}"
    problems = json.loads(proc.stdout.strip().splitlines()[-1])
    assert problems == {"conv3x3_forward": None, "conv3x3_backward_input": None,
                        "conv3x3_backward_weight": None}, problems
