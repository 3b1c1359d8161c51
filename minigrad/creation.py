"""Making tensors: zeros, ones, random, from NumPy (names as in PyTorch)."""
from __future__ import annotations

import numpy as np

from . import backend
from .random import get_rng
from .tensor import Tensor


def _shape(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def _make(array, dtype, device, requires_grad):
    array = array.astype(dtype or np.float32, copy=False)
    return Tensor(array, requires_grad=requires_grad, device=device)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _make(np.zeros(_shape(size)), dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _make(np.ones(_shape(size)), dtype, device, requires_grad)


def zeros_like(t, requires_grad=False):
    xp = backend.get_array_module(t.data)
    return Tensor(xp.zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    xp = backend.get_array_module(t.data)
    return Tensor(xp.ones_like(t.data), requires_grad=requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from minigrad's seeded generator."""
    return _make(get_rng().standard_normal(_shape(size)), dtype, device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform [0, 1) samples from minigrad's seeded generator."""
    return _make(get_rng().random(_shape(size)), dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None):
    a = np.arange(start, end, step) if end is not None else np.arange(start)
    return Tensor(a if dtype is None else a.astype(dtype), device=device)


def from_numpy(array):
    """A tensor sharing memory with a NumPy array (keeps its dtype)."""
    return Tensor(np.asarray(array))
