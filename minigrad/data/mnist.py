"""MNIST and Fashion-MNIST from the standard IDX files (``*-idx3-ubyte.gz``).

An IDX file is a big-endian header (magic number, then one 32-bit size per
dimension) followed by the raw uint8 values: magic 2051 for images
(N, 28, 28), 2049 for labels (N,).  ``.data`` is uint8 (N, 1, 28, 28)
(NCHW), ``.targets`` int64, ``.classes`` the names.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .download import (CorruptDatasetError, DatasetNotFoundError, default_cache_dir,
                       download_url)

__all__ = ["MNIST", "FashionMNIST", "read_idx"]


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise CorruptDatasetError(f"cannot read {path}: {exc}; download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CorruptDatasetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise CorruptDatasetError(f"{path}: the header announces shape {shape} but the file "
                                  f"holds {len(raw) - header} values")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class MNIST:
    """``MNIST(root, train=True, download=False)``: the four IDX ``.gz``
    files in ``root`` (or ``root/<ClassName>/raw``); ``download=True`` fetches
    them with an MD5 check."""

    mirror = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    resources = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    classes = [str(i) for i in range(10)]

    def __init__(self, root=None, train: bool = True, download: bool = False):
        self.train = bool(train)
        root = Path(root).expanduser() if root is not None else default_cache_dir()
        prefix = "train" if train else "t10k"
        names = (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
        folder = next((d for d in (root, root / type(self).__name__ / "raw",
                                   root / type(self).__name__)
                       if all((d / n).exists() for n in names)), None)
        if folder is None and download:
            folder = root / type(self).__name__ / "raw"
            for n in names:
                download_url(self.mirror + n, folder / n, self.resources[n])
        if folder is None:
            raise DatasetNotFoundError(
                f"{type(self).__name__}: {names[0]} and {names[1]} not found in {root} (nor in "
                f"{root / type(self).__name__ / 'raw'}). Place the IDX files there, pass the "
                f"right folder, or use download=True when online.")
        images, labels = read_idx(folder / names[0]), read_idx(folder / names[1])
        if images.ndim != 3 or labels.shape != (len(images),):
            raise CorruptDatasetError(f"{folder}: {len(images)} images of shape "
                                      f"{images.shape[1:]} but labels of shape {labels.shape}")
        self.root, self.source = root, folder
        self.data = np.ascontiguousarray(images[:, None])
        self.targets = labels.astype(np.int64)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])

    def __repr__(self):
        return (f"{type(self).__name__}({'train' if self.train else 'test'}, {len(self)} images, "
                f"from {self.source})")


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: same format and sizes as MNIST, 10 clothing classes."""

    mirror = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    resources = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
