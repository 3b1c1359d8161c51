"""Finding and loading the data of a run: CIFAR-10 wherever it can be found (or
downloaded), otherwise a loudly announced synthetic set; ``--subset`` and
``--val-split`` applied the same way on every resume."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["DataBundle", "find_cifar", "load_data", "BANNER_SYNTHETIC"]

BANNER_SYNTHETIC = "\n".join([
    "#" * 78,
    "#  NO CIFAR-10 DATA FOUND (and it could not be downloaded).",
    "#  TRAINING ON A SYNTHETIC DATASET INSTEAD: the numbers below say NOTHING",
    "#  about CIFAR-10.  Pass --data-dir (the folder with data_batch_1...), set",
    "#  $MINIGRAD_CIFAR10_DIR, or run once online to download it.",
    "#" * 78])


class DataBundle:
    """Train / val / test arrays (uint8 NCHW + int64) and where they came from."""

    def __init__(self, train, val, test, classes, name, source, synthetic, fallback=False):
        self.train, self.val, self.test = train, val, test
        self.fallback = fallback          # synthetic because CIFAR-10 could not be had
        self.classes, self.name, self.source, self.synthetic = classes, name, source, synthetic


def _candidates(args):
    """(label, folder) pairs to look for CIFAR-10 in, in order."""
    from ..data import default_cache_dir
    found = []
    if args.data_dir:
        found.append(("--data-dir", args.data_dir))
    if os.environ.get("MINIGRAD_CIFAR10_DIR"):
        found.append(("$MINIGRAD_CIFAR10_DIR", os.environ["MINIGRAD_CIFAR10_DIR"]))
    # the layout of a checkout: data/ inside it, or the shared data folder beside it
    for local in (Path("data") / "cifar-10-batches-py",
                  Path("..") / "shared" / "data" / "cifar-10-batches-py"):
        if local.is_dir():
            found.append(("local folder", str(local.resolve())))
    found.append(("cache", str(default_cache_dir())))
    return found


def find_cifar(args, log):
    """(train set, test set) of CIFAR-10 from the first folder that has it,
    or downloaded into the cache."""
    from ..data import CIFAR10, DatasetNotFoundError, default_cache_dir
    tried = []
    for label, root in _candidates(args):
        try:
            return CIFAR10(root, train=True), CIFAR10(root, train=False)
        except DatasetNotFoundError:
            tried.append(f"{label} {root}")
            if label == "--data-dir":          # an explicit folder must be right
                raise
    if args.no_download:
        raise DatasetNotFoundError("CIFAR-10 not found (looked in: " + "; ".join(tried)
                                   + ") and --no-download was given. Pass --data-dir.")
    log(f"CIFAR-10 not found (looked in: {'; '.join(tried)}); trying to download it "
        f"to {default_cache_dir()} ...")
    return (CIFAR10(default_cache_dir(), train=True, download=True),
            CIFAR10(default_cache_dir(), train=False))


def _split(args, x, y, log):
    """Apply --subset, then hold out --val-split images; returns (train, val)."""
    if args.subset:
        if args.subset > len(y):
            log(f"--subset {args.subset} is more than the {len(y)} training images; using all")
        x, y = x[:args.subset], y[:args.subset]
    if not args.val_split:
        return (x, y), None
    if not 0 < args.val_split < len(y):
        raise ConfigError(f"--val-split {args.val_split} must be between 1 and "
                          f"{len(y) - 1} (the training images)")
    perm = np.random.default_rng([args.seed, 7]).permutation(len(y))
    keep, held = np.sort(perm[:-args.val_split]), np.sort(perm[-args.val_split:])
    return (x[keep], y[keep]), (x[held], y[held])


def load_data(args, log=print) -> DataBundle:
    """The data the arguments ask for; with ``--dataset auto`` CIFAR-10 or, when
    it cannot be found or downloaded, the synthetic set (``synthetic=True``)."""
    from ..data import DatasetError, SyntheticImages
    synthetic = args.dataset == "synthetic"
    fallback = False
    if not synthetic:
        try:
            train_set, test_set = find_cifar(args, log)
            name, source, classes = "cifar10", str(train_set.source), list(train_set.classes)
        except DatasetError as exc:
            if args.dataset == "cifar10" or args.data_dir:
                raise
            log(f"could not get CIFAR-10: {exc}")
            synthetic = fallback = True
    if synthetic:
        n = int(args.synthetic_size)
        train_set = SyntheticImages(n, seed=args.seed)
        test_set = SyntheticImages(max(n // 5, 1), seed=args.seed + 10_000)
        name, source, classes = "synthetic", "SyntheticImages", list(train_set.classes)
    train, val = _split(args, train_set.data, train_set.targets, log)
    return DataBundle(train, val, (test_set.data, test_set.targets), classes, name, source,
                      synthetic, fallback)
