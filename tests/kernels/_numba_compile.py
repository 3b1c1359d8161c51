"""Compile every Numba CUDA kernel of kernels/numba_cuda.py with Numba's real CUDA
compiler (numba-cuda and NVVM; no GPU needed), for the argument types minigrad's
launchers pass.

Run as a script in a subprocess with NUMBA_ENABLE_CUDASIM=0 (the tests in this folder
may have switched the simulator on in their own process).  It prints one JSON line:

    {"kernels": {name: {"argtypes": [...], "ok": bool, "error": str|null,
                        "ptx": path|null}},
     "not_launched": [kernel names no launcher used], "no_nvvm": null or why}

How the argument types are found: every kernel object of the module is replaced by a
recorder, and minigrad.cuda's conv wrappers run with impl="numba" on NumPy arrays
(standing in for CuPy's: both are C-contiguous float32, which Numba types as
``float32[:, :, :, ::1]``, and minigrad's own CuPy views become the same type).  Each
recorded launch gives ``numba.typeof`` of its arguments; those are compiled with
``numba.cuda.compile_ptx(kernel.py_func, argtypes, cc=(9, 0))``.

Device functions (``@cuda.jit(device=True)``) are compiled for "the current device",
which numba-cuda asks the driver for; with no GPU here that device is declared to be
an sm_90 one, the architecture every kernel is compiled for anyway.
"""
import json
import os
import sys
import types
from pathlib import Path

import numpy as np

CC = (9, 0)


def main(out_dir):
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "0":
        raise SystemExit("run with NUMBA_ENABLE_CUDASIM=0: the simulator has no compiler")
    import numba
    from numba import cuda
    from numba.cuda import dispatcher as cuda_dispatcher
    if hasattr(cuda_dispatcher, "get_current_device"):
        cuda_dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=CC)

    try:
        from numba.cuda.cudadrv import nvvm
        nvvm.NVVM()
    except Exception as exc:                    # no libNVVM: nothing can be compiled
        print(json.dumps({"kernels": {}, "not_launched": [], "no_nvvm": str(exc)[-500:]}))
        return

    from minigrad import cuda as gpu
    from minigrad.kernels import numba_cuda as nc

    kernels = {name: obj for name, obj in vars(nc).items()
               if isinstance(obj, cuda_dispatcher.CUDADispatcher)
               and not obj.targetoptions.get("device")}
    launches = {}

    class Recorder:
        """Stands in for a kernel: kernel[grid, block, stream](*args) records the types."""

        def __init__(self, name):
            self.name = name

        def __getitem__(self, config):
            def launch(*args):
                launches.setdefault(self.name, set()).add(tuple(numba.typeof(a) for a in args))
            return launch

    for name in kernels:
        setattr(nc, name, Recorder(name))
    gpu._xp = lambda: np                       # NumPy arrays stand in for CuPy's
    gpu._numba_module = nc
    rng = np.random.default_rng(0)
    for stride in (1, 2):
        x = rng.standard_normal((2, 5, 11, 9)).astype(np.float32)
        w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
        y = gpu.conv2d_forward(x, w, stride, 1, impl="numba")
        gpu.conv2d_backward_input(y, w, x.shape, stride, 1, impl="numba")
        gpu.conv2d_backward_weight(x, y, stride, 1, impl="numba")

    results = {}
    for name, kernel in kernels.items():
        for argtypes in sorted(launches.get(name, ()), key=str):
            entry = {"argtypes": [str(t) for t in argtypes], "ok": False, "error": None,
                     "ptx": None}
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, argtypes, cc=CC)
                path = Path(out_dir) / f"{name}_{len(results)}.ptx"
                path.write_text(ptx)
                entry.update(ok=True, ptx=str(path))
            except Exception as exc:           # the compiler's own message
                entry["error"] = f"{type(exc).__name__}: {exc}"[-3000:]
            results[f"{name}{tuple(entry['argtypes'])}"] = entry
    print(json.dumps({"kernels": results,
                      "not_launched": sorted(set(kernels) - set(launches)), "no_nvvm": None}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1])
