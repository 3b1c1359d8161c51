"""Run the Numba CUDA kernels without a GPU, in Numba's CUDA simulator.

The simulator is chosen by the environment variable NUMBA_ENABLE_CUDASIM, which
Numba reads when it is imported; so it is set here, at the very top, before
anything imports numba -- but only when this machine has no GPU (decided without
importing numba.cuda: no ``nvidia-smi`` and no ``libcuda``).  Force a choice with
``MINIGRAD_CUDASIM=1`` (always simulate) or ``MINIGRAD_CUDASIM=0`` (never).

If numba.cuda was already imported without the simulator (another test imported
it first), the checks run in a subprocess instead: see test_numba_conv.py.
"""
import ctypes.util
import os
import shutil
import sys


def _has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or ctypes.util.find_library("cuda") is not None


_force = os.environ.get("MINIGRAD_CUDASIM")
SIMULATE = _force == "1" if _force in ("0", "1") else not _has_gpu()
if SIMULATE:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules and "numba.cuda" not in sys.modules:
        # numba itself (its CPU part) was imported earlier, but its CUDA target not yet:
        # re-read the environment so numba.cuda picks the simulator when imported
        from numba.core import config
        config.reload_config()


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    """The CUDA C kernels compiled for the CPU (see cuda_emulation.h), once per session."""
    import _emulation
    library, why_not = _emulation.build(tmp_path_factory.mktemp("emulation"))
    if library is None:
        pytest.skip(why_not)
    return library
