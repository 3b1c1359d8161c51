"""Build and call the CPU emulation of kernels/*.cu (see cuda_emulation.h)."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parents[1] / "kernels"


def build(out_dir):
    """Compile the harness into ``out_dir``; return (ctypes library, None) or
    (None, reason it cannot be built here)."""
    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        return None, "no C++ compiler (g++/clang++) to build the CPU emulation of the kernels"
    so = Path(out_dir) / "kernels_emulated.so"
    proc = subprocess.run([cxx, "-std=c++20", "-O1", "-fno-strict-aliasing", "-shared", "-fPIC", "-pthread",
                           f"-I{HERE}", f"-I{KERNELS}", "-x", "c++",
                           str(HERE / "cuda_emulation_harness.cpp"), "-o", str(so)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"building the kernel emulation failed:\n{proc.stderr[-4000:]}")
    return ctypes.CDLL(str(so)), None


def launch(lib, name, grid, block, *args, first_block_z=0):
    """Run kernel ``name`` with CUDA launch configuration (grid, block); with
    ``first_block_z`` only the blocks whose blockIdx.z is at least that."""
    grid = tuple(grid) + (1,) * (3 - len(grid))
    block = tuple(block) + (1,) * (3 - len(block))
    cargs = []
    for a in args:
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous, f"{name}: non-contiguous array argument"
            cargs.append(ctypes.c_void_p(a.ctypes.data))
        elif isinstance(a, (float, np.floating)):
            cargs.append(ctypes.c_float(a))
        elif isinstance(a, np.int64):                 # long long parameters
            cargs.append(ctypes.c_longlong(int(a)))
        elif isinstance(a, np.uint64):                # unsigned long long parameters
            cargs.append(ctypes.c_ulonglong(int(a)))
        else:
            cargs.append(ctypes.c_int(int(a)))
    lib.set_first_block_z(int(first_block_z))
    try:
        status = getattr(lib, "launch_" + name)(*map(ctypes.c_int, grid + block), *cargs)
    finally:
        lib.set_first_block_z(0)
    assert status == 0, f"{name}: the threads of a block deadlocked at a barrier"
