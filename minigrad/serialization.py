"""Saving and loading checkpoints as ``.npz`` files (never pickle).

``save(obj, path)`` writes a (nested) dictionary to one NumPy ``.npz`` archive;
``load(path)`` reads it back.  A training checkpoint is typically::

    minigrad.save({"model": model.state_dict(),
                   "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(),
                   "rng": minigrad.random.get_rng_state(),
                   "epoch": 12}, "checkpoint.npz")
    ckpt = minigrad.load("checkpoint.npz")
    model.load_state_dict(ckpt["model"])

How it is stored:

* every array (NumPy, CuPy or a Tensor's values) becomes one member of the
  archive, named by its path in the dictionary joined with ``/``, e.g.
  ``model/layer1.0.conv1.weight`` or ``optimizer/state/0/momentum_buffer``;
  ``numpy.load(path)`` therefore shows readable names;
* everything else (ints, floats, strings, booleans, None, lists, tuples, dict
  keys that are ints) goes into one JSON document kept in the member
  ``__minigrad_tree__`` (a 0-d unicode array), which also records where each
  array sits in the structure.  Python's JSON keeps big integers exact (the
  128-bit state of the random generator) and writes inf/nan.

Loading uses ``allow_pickle=False``, so a checkpoint can never run code.
Arrays come back as NumPy arrays (Tensors are saved as their values).

Files are written atomically: to a temporary file in the same folder, then
moved over ``path`` with ``os.replace``, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from . import backend

TREE_KEY = "__minigrad_tree__"
SEP = "/"


def _is_array(value):
    if isinstance(value, np.ndarray):
        return True
    from .tensor import Tensor
    if isinstance(value, Tensor):
        return True
    return type(value).__module__.startswith("cupy") and hasattr(value, "dtype")


def _to_numpy(value):
    from .tensor import Tensor
    if isinstance(value, Tensor):
        value = value.data
    return np.array(backend.to_numpy(value), copy=True)


def _encode(value, path, arrays):
    """Turn ``value`` into JSON-able data, moving arrays into ``arrays``."""
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"save: dictionary keys must be str or int, got {key!r} "
                                f"at {path or '<top>'!r}")
            if key == "":
                raise ValueError(f"save: empty key at {path or '<top>'!r}")
            if isinstance(key, str) and SEP in key:
                raise ValueError(f"save: key {key!r} contains {SEP!r}, which separates levels")
            items.append([key, _encode(item, f"{path}{SEP}{key}" if path else str(key), arrays)])
        return {"dict": items}
    if isinstance(value, (list, tuple)):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [_encode(v, f"{path}{SEP}{i}", arrays) for i, v in enumerate(value)]}
    if _is_array(value) or isinstance(value, np.generic):
        if path in arrays or path == TREE_KEY:
            raise ValueError(f"save: two entries map to the archive name {path!r}")
        arr = _to_numpy(value)
        if arr.dtype == object:
            raise TypeError(f"save: {path!r} is an object array; only numeric/str arrays "
                            "can be stored without pickle")
        arrays[path] = arr
        return {"array": path}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"save: cannot store {type(value).__name__} at {path!r}; use arrays, "
                    "numbers, strings, None, lists, tuples and dicts")


def _decode(node, arrays):
    (kind, body), = node.items()
    if kind == "dict":
        return {key: _decode(item, arrays) for key, item in body}
    if kind == "list":
        return [_decode(v, arrays) for v in body]
    if kind == "tuple":
        return tuple(_decode(v, arrays) for v in body)
    if kind == "array":
        return arrays[body]
    if kind == "value":
        return body
    raise ValueError(f"load: unknown entry kind {kind!r} in {TREE_KEY}")


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it
    into place with ``os.replace`` (atomic on POSIX and Windows)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_npz(obj: dict, path) -> None:
    """Write a nested dict of arrays and plain values to ``path`` (.npz), atomically.

    ``path`` is used exactly as given (no ``.npz`` is appended)."""
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict, got {type(obj).__name__}")
    arrays = {}
    tree = _encode(obj, "", arrays)
    members = dict(arrays)
    members[TREE_KEY] = np.array(json.dumps(tree))
    atomic_write(path, lambda f: np.savez(f, **members))


def load_npz(path) -> dict:
    """Read a file written by :func:`save_npz` (pickle is never allowed).

    A plain ``.npz`` written by ``numpy.savez`` loads as a flat dict of arrays."""
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != TREE_KEY}
        if TREE_KEY not in archive.files:
            return arrays
        tree = json.loads(str(archive[TREE_KEY][()]))
    return _decode(tree, arrays)


save = save_npz
load = load_npz
