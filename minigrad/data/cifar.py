"""CIFAR-10 and CIFAR-100 from the official "python version" files.

The official archive ``cifar-10-python.tar.gz`` holds a folder
``cifar-10-batches-py/`` with five training batches ``data_batch_1`` ...
``data_batch_5``, one ``test_batch`` and ``batches.meta``.  Each batch is a
Python-2 pickle of a dict::

    b"data"     uint8 array (K, 3072): one image per row, the 1024 red values
                (row-major 32×32), then the 1024 green, then the 1024 blue
    b"labels"   K class indices in 0..9
    b"filenames", b"batch_label"

so ``data.reshape(K, 3, 32, 32)`` is already the NCHW layout.  K is read from
each file (10000 in the official files, fewer in subsets).  CIFAR-100 has one
``train`` and one ``test`` file with ``b"fine_labels"`` (100 classes) and
``b"coarse_labels"`` (20 super-classes).

The pickles are read with a restricted unpickler that only accepts the NumPy
array constructors these files use, so a tampered file cannot run code.

Layout: ``.data`` is uint8 **(N, 3, 32, 32)** (NCHW, like every minigrad
layer), ``.targets`` int64 (N,), ``.classes`` the class names.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .download import (CorruptDatasetError, DatasetError, DatasetNotFoundError,
                       default_cache_dir, download_url)

__all__ = ["CIFAR10", "CIFAR100", "load_cifar_batch"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


class _SafeUnpickler(pickle.Unpickler):
    """Allows only what a CIFAR pickle contains: dicts, lists, bytes, str,
    ints and NumPy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR file")
        if module.startswith("numpy.core"):          # NumPy 2 renamed numpy.core
            module = "numpy._core" + module[len("numpy.core"):]
        elif module in ("__builtin__", "copy_reg"):
            module = {"__builtin__": "builtins", "copy_reg": "copyreg"}[module]
        return super().find_class(module, name)


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # EOFError, UnpicklingError, ValueError, ...
        raise CorruptDatasetError(
            f"cannot read the CIFAR file {name}: {type(exc).__name__}: {exc}. The file is "
            "truncated or not a CIFAR python batch; download it again "
            "(https://www.cs.toronto.edu/~kriz/cifar.html).") from None
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"the CIFAR file {name} holds a {type(obj).__name__}, "
                                  "not the expected dict of data and labels")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def load_cifar_batch(raw: bytes, name: str, label_key: str = "labels",
                     num_classes: int = 10, extra_keys=()):
    """Decode one CIFAR batch (the bytes of the file) to ``(images, labels, extras)``:
    uint8 (K, 3, 32, 32), int64 (K,), and a dict of int64 arrays for ``extra_keys``.
    Raises :class:`CorruptDatasetError` naming ``name`` on any problem."""
    d = _unpickle(raw, name)
    missing = [k for k in ("data", label_key, *extra_keys) if k not in d]
    if missing:
        raise CorruptDatasetError(f"the CIFAR file {name} has no {', '.join(map(repr, missing))} "
                                  f"entry (it has {sorted(d)}); is it the right dataset?")
    data = d["data"]
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.size % 3072 or (data.ndim == 2 and data.shape[1] != 3072):
        raise CorruptDatasetError(f"the CIFAR file {name}: 'data' is {data.dtype} of shape "
                                  f"{data.shape}, expected uint8 rows of 3072 values")
    images = data.reshape(-1, 3, 32, 32)
    labels = np.asarray(d[label_key], dtype=np.int64)
    if labels.shape != (len(images),):
        raise CorruptDatasetError(f"the CIFAR file {name} has {len(images)} images but "
                                  f"{labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDatasetError(f"the CIFAR file {name} has labels outside 0..{num_classes - 1}")
    extras = {k: np.asarray(d[k], dtype=np.int64) for k in extra_keys}
    return np.ascontiguousarray(images), labels, extras


class _Source:
    """Where the files are: a folder or a tar(.gz) archive."""

    def __init__(self, path: Path, folder_name: str):
        self.path, self.folder_name = path, folder_name
        self.is_archive = path.is_file()

    def read(self, name: str) -> bytes:
        if not self.is_archive:
            file = self.path / name
            if not file.exists():
                raise DatasetNotFoundError(f"the CIFAR file {file} is missing")
            return file.read_bytes()
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    if member.isfile() and os.path.basename(member.name) == name:
                        return tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise CorruptDatasetError(f"cannot read the archive {self.path}: {exc}. It is "
                                      "truncated or not a tar.gz; download it again.") from None
        raise CorruptDatasetError(f"the archive {self.path} has no member {name!r}")

    def describe(self, name):
        return f"{self.path}:{name}" if self.is_archive else str(self.path / name)


class _CIFARBase:
    folder = ""
    archive = ""
    url = ""
    md5 = ""
    train_files: tuple = ()
    test_files: tuple = ()
    first_file = ""
    num_classes = 10
    label_key = "labels"
    extra_keys: tuple = ()

    def __init__(self, root=None, train: bool = True, download: bool = False):
        self.train = bool(train)
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        source = self._find(self.root)
        if source is None and download:
            target_dir = self.root if not self.root.suffix else self.root.parent
            download_url(self.url, target_dir / self.archive, self.md5)
            source = self._find(target_dir)
        if source is None:
            raise DatasetNotFoundError(self._not_found_message())
        self.source = source.path
        images, labels, extras = [], [], {k: [] for k in self.extra_keys}
        for name in (self.train_files if self.train else self.test_files):
            x, y, ex = load_cifar_batch(source.read(name), source.describe(name), self.label_key,
                                        self.num_classes, self.extra_keys)
            images.append(x)
            labels.append(y)
            for k in self.extra_keys:
                extras[k].append(ex[k])
        self.data = np.concatenate(images) if len(images) > 1 else images[0]
        self.targets = np.concatenate(labels) if len(labels) > 1 else labels[0]
        self._extras = {k: np.concatenate(v) for k, v in extras.items()}
        self.classes = list(self._read_classes(source))

    def _candidates(self, root: Path):
        if root.is_file():
            return [root]
        return [root, root / self.folder, root / self.archive]

    def _find(self, root: Path):
        for c in self._candidates(root):
            if c.is_dir() and (c / self.first_file).exists():
                return _Source(c, self.folder)
            if c.is_file() and (c.name.endswith((".tar.gz", ".tgz", ".tar"))):
                return _Source(c, self.folder)
        return None

    def _not_found_message(self):
        return (f"{type(self).__name__}: no data found in {self.root} (looked for "
                f"{self.root / self.first_file}, {self.root / self.folder}/ and "
                f"{self.root / self.archive}). Pass the folder holding the "
                f"'{self.folder}' files (e.g. --data-dir), place the official archive at "
                f"{self.root / self.archive}, or use download=True when online "
                f"({self.url}).")

    def _read_classes(self, source):
        return CIFAR10_CLASSES

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])

    def __repr__(self):
        split = "train" if self.train else "test"
        return (f"{type(self).__name__}({split}, {len(self)} images of shape "
                f"{tuple(self.data.shape[1:])}, {len(self.classes)} classes, from {self.source})")


class CIFAR10(_CIFARBase):
    """``CIFAR10(root, train=True, download=False)``.

    ``root`` may be the ``cifar-10-batches-py`` folder itself, a folder that
    contains it or the archive, or the path of ``cifar-10-python.tar.gz``
    (read directly, no extraction).  Default root: the cache folder
    (``$MINIGRAD_DATA`` or ``~/.cache/minigrad``).  ``download=True``
    fetches the official archive (MD5-checked) into ``root`` when nothing is
    found.  Each batch file may hold any number of images.
    """
    folder = "cifar-10-batches-py"
    archive = "cifar-10-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    first_file = "data_batch_1"

    def _read_classes(self, source):
        try:
            meta = _unpickle(source.read("batches.meta"), source.describe("batches.meta"))
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
            if len(names) == 10:
                return names
        except (DatasetError, KeyError):
            pass
        return CIFAR10_CLASSES


class CIFAR100(_CIFARBase):
    """``CIFAR100(root, train=True, download=False)``: like :class:`CIFAR10`;
    ``.targets`` are the 100 fine labels, ``.coarse_targets`` the 20
    super-classes, ``.classes`` / ``.coarse_classes`` their names."""
    folder = "cifar-100-python"
    archive = "cifar-100-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_files = ("train",)
    test_files = ("test",)
    first_file = "train"
    num_classes = 100
    label_key = "fine_labels"
    extra_keys = ("coarse_labels",)

    @property
    def coarse_targets(self):
        return self._extras["coarse_labels"]

    def _read_classes(self, source):
        self.coarse_classes = [f"superclass{i}" for i in range(20)]
        try:
            meta = _unpickle(source.read("meta"), source.describe("meta"))
            fine = [n.decode() if isinstance(n, bytes) else str(n)
                    for n in meta["fine_label_names"]]
            self.coarse_classes = [n.decode() if isinstance(n, bytes) else str(n)
                                   for n in meta["coarse_label_names"]]
            return fine
        except (DatasetError, KeyError):
            return [f"class{i}" for i in range(100)]
