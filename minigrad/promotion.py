"""The dtype of ``a + b``, ``a * b``, ... : PyTorch's type-promotion rules.

NumPy and PyTorch disagree on mixed dtypes; minigrad follows PyTorch so that
a model and its numbers behave the same in both.  Operands fall into three
groups, in order of strength:

1. tensors (and arrays) with at least one dimension;
2. zero-dimensional tensors (and 0-d arrays);
3. Python and NumPy scalars (``2``, ``0.5``, ``True``, ``np.float64(0.5)``).

and dtypes into four categories: bool < integer < floating point < complex.
The dtypes of the strongest group present decide, and a weaker group only
counts when its category is higher.  A weaker floating-point (complex) operand
then brings its own dtype if it is a tensor, and the default dtype (float32;
complex64) if it is a scalar.  Hence:

===============================  ==========  ==========================
``Tensor([1, 2]) * 0.5``         float32     int ⊕ Python float
``Tensor([1., 2.]) * 0.5``       float32     float32 ⊕ Python float
``Tensor([1, 2]) * 3``           int64       int ⊕ Python int
``Tensor([True]) + 1``           int64       bool ⊕ Python int
``Tensor([True]) + True``        bool
``int8 tensor * 1000``           int8        (wraps around, as in C)
``int64 tensor + float32 t.``    float32     (NumPy: float64)
``float32 t. + float64 0-d t.``  float32     a 0-d tensor does not widen
``int tensor + float64 0-d t.``  float64     ... unless its category is higher
``Tensor([1, 2]) / 2``           float32     true division of integers
``Tensor([1, 2]) ** 0.5``        float32
===============================  ==========  ==========================

Subtraction with a bool operand and negation of a bool tensor are errors, as
in PyTorch (use ``~`` / ``logical_not`` for masks).
"""
from __future__ import annotations

import numbers

import numpy as np

DEFAULT_FLOAT = np.dtype(np.float32)
DEFAULT_COMPLEX = np.dtype(np.complex64)
_SCALAR_DTYPES = {"b": np.dtype(np.bool_), "i": np.dtype(np.int64),
                  "f": DEFAULT_FLOAT, "c": DEFAULT_COMPLEX}
_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _category(dtype) -> int:
    return _RANK[np.dtype(dtype).kind]


def _scalar_kind(value):
    """'b', 'i', 'f' or 'c' for a Python/NumPy scalar, None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return "b"
    if isinstance(value, numbers.Integral):
        return "i"
    if isinstance(value, numbers.Real):
        return "f"
    if isinstance(value, numbers.Complex):
        return "c"
    return None


def promote_types(a, b):
    """The smallest dtype that holds both ``a`` and ``b`` (``torch.promote_types``):
    within a category as NumPy; across categories the higher one's dtype
    (``int64`` with ``float16`` is float16), widened only for complex from a
    wider float."""
    if a is None or b is None:
        return b if a is None else a
    a, b = np.dtype(a), np.dtype(b)
    ca, cb = _category(a), _category(b)
    if ca == cb or (max(ca, cb) == 3 and min(ca, cb) == 2):
        return np.promote_types(a, b)
    return a if ca > cb else b


def _combine(higher, lower):
    """A stronger group's dtype ``higher`` met by a weaker group's ``lower``."""
    if higher is None or lower is None:
        return lower if higher is None else higher
    ch, cl = _category(higher), _category(lower)
    if ch == 3:
        return higher
    if cl == 3:
        return np.promote_types(higher, DEFAULT_COMPLEX) if ch == 2 else lower
    if ch == 2:
        return higher
    if ch == 0 or cl == 2:
        return promote_types(higher, lower)
    return higher


def result_type(*operands):
    """The dtype of an arithmetic op on ``operands`` (Tensors, arrays, scalars),
    as ``torch.result_type`` computes it."""
    dims = zero = scalars = None
    for x in operands:
        dtype = getattr(x, "dtype", None)
        if dtype is not None and not isinstance(x, np.generic):
            if len(x.shape):
                dims = promote_types(dims, dtype)
            else:
                zero = promote_types(zero, dtype)
            continue
        kind = _scalar_kind(x)
        if kind is None:
            raise TypeError(f"unsupported operand of type {type(x).__name__}")
        scalars = promote_types(scalars, _SCALAR_DTYPES[kind])
    return _combine(dims, _combine(zero, scalars))


def is_bool(value) -> bool:
    """A bool tensor/array or a Python/NumPy bool."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return np.dtype(dtype).kind == "b"
    return isinstance(value, (bool, np.bool_))
