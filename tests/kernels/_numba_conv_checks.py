"""The checks of the Numba CUDA 3x3 convolution kernels against a NumPy reference.

Imported by test_numba_conv.py, or run as a script (``python _numba_conv_checks.py``)
in a subprocess with NUMBA_ENABLE_CUDASIM=1; the script prints one JSON line of
{case name: error message or null}.
"""
import json
import os
import sys

import numpy as np

# (name, N, C, K, H, W, stride, weight slices, kernels checked); tiny, since the
# simulator runs every CUDA thread (256 per block) as a Python thread
ALL = ("forward", "grad_x", "grad_w")
CASES = [
    ("odd_s1", 2, 3, 2, 5, 7, 1, 1, ALL),
    ("odd_s2", 2, 3, 2, 5, 7, 2, 1, ALL),
    # several spatial tiles, input-channel chunks (C > 8) and output-channel blocks (K > 16)
    ("tiles_forward_s1", 1, 9, 17, 9, 10, 1, 1, ("forward",)),
    # several tiles, gy-channel chunks (K > 8) and input-channel blocks (C > 16)
    ("tiles_grad_x_s2", 1, 17, 9, 11, 10, 2, 1, ("grad_x",)),
    # stride 2 over several tiles: the de-interleaved (even, then odd columns) patch rows
    ("tiles_forward_s2", 1, 3, 5, 18, 17, 2, 1, ("forward",)),
    # two input-channel groups (C > 4) and two slices of the (image, tile) units
    ("slices_grad_w_s2", 1, 5, 2, 9, 10, 2, 2, ("grad_w",)),
    # two output- and input-channel groups, two images, four units in each of two slices
    ("units_grad_w_s1", 2, 5, 6, 9, 10, 1, 2, ("grad_w",)),
]


def reference_forward(x, w, stride, pad):
    """conv2d as 9 shifted matrix products (float64): y[n,k] = sum_c,ky,kx x*w."""
    N, C, H, W = x.shape
    K = w.shape[0]
    Ho, Wo = (H + 2 * pad - 3) // stride + 1, (W + 2 * pad - 3) // stride + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    y = np.zeros((N, K, Ho, Wo))
    for ky in range(3):
        for kx in range(3):
            patch = xp[:, :, ky:ky + stride * (Ho - 1) + 1:stride, kx:kx + stride * (Wo - 1) + 1:stride]
            y += np.einsum("nchw,kc->nkhw", patch, w[:, :, ky, kx].astype(np.float64))
    return y


def reference_backward(x, w, gy, stride, pad):
    """Input and weight gradients of sum(y * gy) by naive loops over the definition."""
    N, C, H, W = x.shape
    K = w.shape[0]
    Ho, Wo = gy.shape[2:]
    gx = np.zeros(x.shape)
    gw = np.zeros(w.shape)
    for n in range(N):
        for k in range(K):
            for oy in range(Ho):
                for ox in range(Wo):
                    g = float(gy[n, k, oy, ox])
                    for ky in range(3):
                        iy = oy * stride - pad + ky
                        if not 0 <= iy < H:
                            continue
                        for kx in range(3):
                            ix = ox * stride - pad + kx
                            if 0 <= ix < W:
                                gx[n, :, iy, ix] += g * w[k, :, ky, kx]
                                gw[k, :, ky, kx] += g * x[n, :, iy, ix]
    return gx, gw


def check(name):
    """Run one case; return None when all three kernels match, else a message."""
    from minigrad.kernels import numba_cuda as nc

    _, N, C, K, H, W, s, slices, kernels = next(c for c in CASES if c[0] == name)
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    Ho, Wo = nc.out_size(H, s, 1), nc.out_size(W, s, 1)
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)

    want_gx, want_gw = reference_backward(x, w, gy, s, 1)
    # on a GPU the arrays go to the device explicitly; the simulator takes NumPy arrays
    from numba import cuda
    from numba.core import config
    on_gpu = not config.ENABLE_CUDASIM
    dev = cuda.to_device if on_gpu else (lambda a: a)
    host = (lambda a: a.copy_to_host()) if on_gpu else (lambda a: a)
    results = []   # (what, got, want); outputs start as NaN so unwritten entries show
    if "forward" in kernels:
        y = dev(np.full((N, K, Ho, Wo), np.nan, np.float32))
        nc.forward(dev(x), dev(w), y, s, 1)
        results.append(("forward", host(y), reference_forward(x, w, s, 1)))
    if "grad_x" in kernels:
        gx = dev(np.full(x.shape, np.nan, np.float32))
        nc.backward_input(dev(gy), dev(w), gx, s, 1)
        results.append(("grad_x", host(gx), want_gx))
    if "grad_w" in kernels:
        part = dev(np.full((slices, K, C, 3, 3), np.nan, np.float32))
        nc.backward_weight(dev(x), dev(gy), part, s, 1)
        results.append(("grad_w", host(part).sum(0), want_gw))

    problems = []
    for what, got, want in results:
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            err = np.nanmax(np.abs(got - want)) if np.isfinite(got).all() else "NaN (unwritten)"
            problems.append(f"{name} {what}: max abs error {err}")
    return "; ".join(problems) or None


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(json.dumps({c[0]: check(c[0]) for c in CASES}))
