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
A process killed in the middle of a save leaves its temporary file behind;
the next save of the same file removes it.

A file that is empty, cut short, damaged or not a checkpoint at all raises
:class:`CheckpointError` with the file's name and what is wrong with it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import struct
import time
import zipfile
import zlib

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


class CheckpointError(ValueError):
    """A file that :func:`load` cannot read as a checkpoint; the message names
    the file and what is wrong with it."""


# A temporary file is named after its target, the host and the process that
# writes it: ``.checkpoint.npz.<host>-<pid>-<random>.tmp``.  A process killed
# while writing leaves its file behind; the next save of the same target
# removes every such file whose process (on this host) is gone.
_TMP_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


STALE_AFTER_S = 24 * 3600.0     # a temporary file untouched this long is abandoned


def _process_gone(pid: int):
    """True / False where the OS can tell, None where it cannot."""
    if os.name != "posix":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:             # it exists, owned by another user
        return False
    return False


def _stale(name: str, prefix: str, folder: str) -> bool:
    """Is ``name`` a temporary file of the target with ``prefix`` whose writer
    is gone?"""
    if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
        return False
    parts = name[len(prefix):-len(_TMP_SUFFIX)].rsplit("-", 2)
    if len(parts) == 3 and parts[0] == _HOST and parts[1].isdigit():
        if int(parts[1]) == os.getpid():
            return False
        gone = _process_gone(int(parts[1]))
        if gone is not None:
            return gone
    # another host, an older naming, or no way to ask the OS: by age
    try:
        age = time.time() - os.stat(os.path.join(folder, name)).st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S


def remove_stale_temporaries(path) -> list:
    """Delete the temporary files that interrupted saves of ``path`` left
    beside it; returns their names."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if _stale(name, prefix, folder):
            try:
                os.remove(os.path.join(folder, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then move it
    into place with ``os.replace`` (atomic on POSIX and Windows).

    Leftovers of earlier interrupted writes of ``path`` are removed first.  An
    ``OSError`` (a full disk, a folder that cannot be written) carries ``path``
    as its ``filename`` when it had none, so the message names the file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{_HOST}-{os.getpid()}-"
                               f"{secrets.token_hex(4)}{_TMP_SUFFIX}")
    try:
        # created like any other file (the umask decides who may read it)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.strerror:
            exc.filename = path
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

    A plain ``.npz`` written by ``numpy.savez`` loads as a flat dict of arrays.
    A file that is empty, cut short, damaged or of another kind raises
    :class:`CheckpointError` naming the file; a missing or unreadable file
    raises the usual ``OSError``."""
    path = os.fspath(path)
    try:
        return _read_npz(path)
    except OSError:
        raise
    except _READ_ERRORS as exc:
        raise CheckpointError(f"cannot load {path}: the file is truncated, or not a minigrad "
                              f"checkpoint ({_what_is_wrong(path, exc)})") from None


_READ_ERRORS = (EOFError, ValueError, KeyError, TypeError, AttributeError, OverflowError,
                NotImplementedError, zipfile.BadZipFile, zlib.error, struct.error)


def _read_npz(path):
    archive = np.load(path, allow_pickle=False)
    if not hasattr(archive, "files"):           # a .npy file: one bare array
        raise _NotAnArchive
    with archive:
        arrays = {name: archive[name] for name in archive.files if name != TREE_KEY}
        for name, value in arrays.items():
            if not isinstance(value, np.ndarray):
                raise _NotAnArchive(f"its member {name!r} is not a NumPy array")
        if TREE_KEY not in archive.files:
            return arrays
        tree = json.loads(str(archive[TREE_KEY][()]))
    return _decode(tree, arrays)


class _NotAnArchive(ValueError):
    pass


def _what_is_wrong(path, exc) -> str:
    """A short reason for a failed load, in minigrad's words (NumPy's messages
    would suggest turning pickle on, which a checkpoint never needs)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if isinstance(exc, _NotAnArchive):
        return str(exc) if str(exc) else "it holds a single NumPy array (.npy), not an archive"
    if isinstance(exc, EOFError) or not head:
        return "the file is empty" if not head else "the file ends too early"
    if isinstance(exc, zipfile.BadZipFile):
        return "a member is damaged" if "CRC" in str(exc) else "not a complete .npz (zip) archive"
    if isinstance(exc, KeyError):
        return f"an entry it lists is missing: {exc}"
    if isinstance(exc, json.JSONDecodeError):
        return f"its table of contents {TREE_KEY} is damaged"
    if head.startswith(b"PK"):
        if "pickle" in str(exc).lower():
            return "it holds pickled Python objects, which minigrad never loads"
        return "a member of the archive cannot be read"
    return "not a NumPy .npz archive"


save = save_npz
load = load_npz
