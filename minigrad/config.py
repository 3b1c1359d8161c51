"""Run-time settings: the CPU fast path and its thread count.

minigrad has two CPU implementations of its hot operations (convolution,
pooling, batch norm, ReLU, the SGD update):

* the **reference path**: the vectorised NumPy code in ``minigrad/ops``, written
  to be read next to the math;
* the **fast path** (the default): parallel Numba kernels from
  ``minigrad/kernels/cpu_numba.py`` that compute the same numbers with fewer
  passes over memory and on every core.

Switch between them to compare, to teach, or to debug::

    minigrad.set_fast(False)            # reference NumPy code from now on
    with minigrad.reference_mode():     # ... or only inside this block
        loss = model(x)

The fast path applies only to NumPy arrays of float32/float64; CuPy arrays
and other dtypes always take the generic path.  ``MINIGRAD_FAST=0`` in the
environment starts a program with the fast path off.
"""
from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from . import backend

_state = {
    "fast": os.environ.get("MINIGRAD_FAST", "1").strip().lower() not in ("0", "false", "no", "off"),
    "kernels": None,        # the cpu_numba module once imported, False if Numba is missing
}


def set_fast(flag: bool = True) -> None:
    """Turn the CPU fast path on (default) or off (reference NumPy code)."""
    _state["fast"] = bool(flag)


def is_fast() -> bool:
    """True when the CPU fast path is enabled."""
    return _state["fast"]


@contextlib.contextmanager
def reference_mode():
    """Context manager: use the reference NumPy implementations inside the block."""
    old = _state["fast"]
    _state["fast"] = False
    try:
        yield
    finally:
        _state["fast"] = old


@contextlib.contextmanager
def fast_mode():
    """Context manager: use the CPU fast path inside the block."""
    old = _state["fast"]
    _state["fast"] = True
    try:
        yield
    finally:
        _state["fast"] = old


def cpu_kernels():
    """The Numba kernel module, imported on first use (None if Numba is unavailable)."""
    mod = _state["kernels"]
    if mod is None:
        _keep_freed_memory()
        try:
            from .kernels import cpu_numba as mod
        except ImportError as exc:   # Numba missing or broken: the reference path still works
            import warnings
            warnings.warn(f"minigrad's fast CPU kernels could not be imported ({exc}); "
                          "running the reference NumPy code, which is several times slower. "
                          "Reinstall minigrad (pip install -e .) or set MINIGRAD_FAST=0 to "
                          "silence this.", RuntimeWarning, stacklevel=3)
            mod = False
        _state["kernels"] = mod
    return mod or None


def _keep_freed_memory():
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse.

    A training step allocates and frees hundreds of MiB of activations and
    gradients.  By default glibc hands big blocks straight back to the kernel,
    so the next step's arrays are fresh pages, and touching a fresh page costs
    a page fault (several times the cost of the arithmetic on it, on a virtual
    machine).  Keeping them makes the second step reuse the first step's
    memory; the peak resident size does not grow.  Does nothing off glibc.
    """
    if _state.get("malloc_tuned"):
        return
    _state["malloc_tuned"] = True
    if os.environ.get("MINIGRAD_KEEP_MALLOC"):      # leave the allocator alone
        return
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)      # glibc's largest allowed value
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):
        pass


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def use_fast(*arrays) -> bool:
    """Should an op run its fast CPU kernels on these arrays?

    Yes when the fast path is on, every array is a NumPy ``ndarray`` of one
    float dtype (float32 or float64), and Numba is importable.  ``None``
    entries (an absent bias) are ignored.
    """
    if not _state["fast"]:
        return False
    dtype = None
    for a in arrays:
        if a is None:
            continue
        if (type(a) is not np.ndarray or a.dtype not in _FAST_DTYPES
                or backend.device_of(a) != "cpu"):
            return False
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            return False
    return cpu_kernels() is not None


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels (at most the number of cores Numba
    found; the BLAS keeps its own setting, e.g. ``OPENBLAS_NUM_THREADS``, except
    inside a convolution, where each of these threads runs its own products)."""
    kernels = sys.modules.get(f"{__package__}.kernels.cpu_numba")
    if kernels is not None:                # they keep the count they last read
        kernels.set_threads(n)             # (and set Numba's)
    else:
        import numba
        numba.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads used by the CPU kernels."""
    import numba
    return numba.get_num_threads()


__all__ = ["set_fast", "is_fast", "reference_mode", "fast_mode", "use_fast", "cpu_kernels",
           "set_num_threads", "get_num_threads"]
