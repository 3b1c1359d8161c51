"""The 3x3 conv kernels of conv3x3.cu on a batch of more than 2^31 elements, emulated.

Run as ``python _big_batch_check.py LIBRARY.so`` (the emulation library the tests
built); prints one JSON line {kernel: null or what went wrong}.  In a process of its
own because a kernel that computes an image's offset in 32 bits reads and writes far
outside the arrays, which can crash the process.

The arrays hold 2^22 + 2 images of 8 x 8 x 8 values (just over 2^31 elements each)
in anonymous memory mapped without reserving it: only the pages of the last image,
the one the kernels are run on (the emulation's first_block_z), are ever touched.
"""
import ctypes
import json
import mmap
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _numba_conv_checks as ref  # noqa: E402
from _emulation import launch  # noqa: E402

C = K = 8
H = W = 8
N = 2**31 // (C * H * W) + 2


def sparse(shape):
    """A float32 array of ``shape`` whose pages exist only once written."""
    nbytes = int(np.prod(shape)) * 4
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000)   # Linux's value where mmap lacks it
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve)
    return np.frombuffer(buf, np.float32).reshape(shape)


def main(library):
    from minigrad import cuda as gpu
    lib = ctypes.CDLL(library)
    rng = np.random.default_rng(0)
    x, gy = sparse((N, C, H, W)), sparse((N, K, H, W))
    y, gx = sparse((N, K, H, W)), sparse((N, C, H, W))
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    last = N - 1
    x[last] = rng.standard_normal((C, H, W))
    gy[last] = rng.standard_normal((K, H, W))
    y[last], gx[last] = np.nan, np.nan
    want_y = ref.reference_forward(x[last:], w, 1, 1)[0]
    want_gx, want_gw = ref.reference_backward(x[last:], w, gy[last:], 1, 1)
    problems = {}

    def check(name, got, want):
        ok = np.isfinite(got).all() and np.allclose(got, want, rtol=1e-4, atol=1e-4)
        problems[name] = None if ok else f"wrong values (max error {np.nanmax(np.abs(got - want))})"

    grid, block = gpu.conv3x3_launch(H, W, K, N)
    launch(lib, "conv3x3_forward", grid, block, x, w, y, N, C, H, W, K, H, W, 1, 1,
           first_block_z=last)
    check("conv3x3_forward", y[last], want_y)
    grid, block = gpu.conv3x3_launch(H, W, C, N)
    launch(lib, "conv3x3_backward_input", grid, block, gy, w, gx, N, C, H, W, K, H, W, 1, 1,
           first_block_z=last)
    check("conv3x3_backward_input", gx[last], want_gx[0])
    # one (image, tile) unit per slice: the last slice is the last image's contribution
    grid, block, per_slice, slices = gpu.conv3x3_weight_launch(N, C, K, H, W, slices=N)
    part = sparse((slices, K, C, 3, 3))
    part[last] = np.nan
    launch(lib, "conv3x3_backward_weight", grid, block, x, gy, part, N, C, H, W, K, H, W, 1, 1,
           per_slice, first_block_z=last)
    check("conv3x3_backward_weight", part[last], want_gw)
    print(json.dumps(problems))


if __name__ == "__main__":
    main(sys.argv[1])
