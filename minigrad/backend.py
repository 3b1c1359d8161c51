"""The array backend: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op in minigrad is written once, against an "array module" ``xp`` that is
either :mod:`numpy` or :mod:`cupy`.  ``get_array_module(x)`` picks the right one
for an array, so the same line ``xp.exp(x)`` runs on either device (the idea of
DeZero's ``get_array_module`` and CuPy's own helper of the same name).

CuPy is optional (``pip install "minigrad[cuda12]"`` or ``"minigrad[cuda13]"``) and
imported lazily: a machine without it never pays for the import, and asking for
``"cuda"`` there gives one clear :class:`RuntimeError`.  An array is recognised as a
CuPy array as soon as anyone has imported CuPy -- minigrad, or the user who made it.
"""
from __future__ import annotations

import sys

import numpy as np

_cupy = None          # the cupy module once imported, False when unavailable
_cupy_error = None    # why cupy could not be used, for the error message


def _try_cupy():
    """Import cupy once; return the module or None."""
    global _cupy, _cupy_error
    if _cupy is None:
        try:
            import cupy  # noqa: F401
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("CuPy found no CUDA device")
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _cupy = False
            _cupy_error = f"{type(exc).__name__}: {exc}"
    return _cupy or None


def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one GPU."""
    return _try_cupy() is not None


def require_cupy():
    """Return the cupy module or raise one clear error saying what to do."""
    cp = _try_cupy()
    if cp is None:
        raise RuntimeError(
            "device 'cuda' was requested but is not available "
            f"({_cupy_error}). Install the GPU extra with "
            "`pip install \"minigrad[cuda12]\"` (or `minigrad[cuda13]`, matching the CUDA "
            "version nvidia-smi shows) on a machine with an NVIDIA GPU, or use device='cpu'.")
    return cp


def _loaded_cupy():
    """The cupy module if anyone has imported it (never imports it): a CuPy array can
    exist only then, whether minigrad made it or the user did."""
    return _cupy or sys.modules.get("cupy")


def _is_cupy(array) -> bool:
    cp = _loaded_cupy()
    return cp is not None and isinstance(array, getattr(cp, "ndarray", ()))


def get_array_module(x):
    """Return ``numpy`` or ``cupy``, whichever owns the array ``x`` (or a Tensor's)."""
    if _is_cupy(x) or _is_cupy(getattr(x, "data", None)):   # Tensors carry .data
        return _loaded_cupy()
    return np


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' otherwise."""
    return "cuda" if _is_cupy(array) else "cpu"


def normalize_device(device) -> str:
    """Accept 'cpu', 'cuda', 'cuda:0' (and a Device-like with .type)."""
    name = str(getattr(device, "type", device)).lower()
    if name.startswith("cuda") or name == "gpu":
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def to_device(array, device):
    """Move an array to 'cpu' (NumPy) or 'cuda' (CuPy); no copy if already there."""
    device = normalize_device(device)
    if device == "cpu":
        if _is_cupy(array):
            return _loaded_cupy().asnumpy(array)
        return np.asarray(array)
    cp = require_cupy()
    return cp.asarray(array)


def to_numpy(array) -> np.ndarray:
    """A NumPy view/copy of any backend array (for printing, saving, plotting)."""
    return to_device(array, "cpu")
