"""``DataLoader``: batches of (images, labels) with seeded shuffling,
augmentation and background prefetching.

    loader = DataLoader(CIFAR10(root), batch_size=128, shuffle=True, seed=0,
                        transform=Compose([SubtractMean(m), RandomCrop(32, 4),
                                           RandomHorizontalFlip()]))
    for epoch in range(epochs):
        for images, labels in loader:      # float32 (N, C, H, W), int64 (N,)
            ...

What it yields: **NumPy arrays**, ``images`` float32 NCHW and ``labels``
int64.  uint8 images are converted to float32 and multiplied by ``scale``
(1/255 by default, so pixels are in [0, 1]) before the transform runs; float
images are passed as they are.  The training loop wraps them in Tensors (and
moves them to the GPU).

Randomness, repeatable and resumable.  All random numbers come from the
loader's ``seed`` (drawn once from the OS when ``seed=None``):

* the order of epoch ``e`` is a permutation drawn from
  ``np.random.default_rng([seed, e, 0])``;
* the augmentation of batch ``b`` of epoch ``e`` draws from
  ``np.random.default_rng([seed, e, 1, b])``.

So the loader's whole random state is the three numbers
``state_dict() = {"seed", "epoch", "batch"}`` (epoch and position within it):
restoring them reproduces the same batches, bit for bit, even in the middle
of an epoch, and a batch is the same whether it was prepared in the
background thread or not.

A ``sampler`` (e.g. :class:`DistributedSampler`, each rank's share) replaces
the loader's own order: epoch ``e`` takes the sampler's indices after
``sampler.set_epoch(e)``, and ``len(loader)`` counts the sampler's indices.

Prefetching: with ``prefetch=k > 0`` a background thread prepares up to
``k`` batches ahead (indexing, conversion and augmentation, mostly NumPy
code that releases the GIL) while the main thread computes; ``prefetch=0``
does everything in the main thread.
"""
from __future__ import annotations

import queue
import threading

import numpy as np

__all__ = ["DataLoader"]

_END = object()


def _class_indices(labels):
    """The labels as int64 class indices; float labels only when they are
    whole numbers (0.7 is an error, never silently class 0)."""
    if labels.dtype.kind in "biu":
        return labels.astype(np.int64)
    if labels.dtype.kind != "f":
        raise TypeError(f"DataLoader: labels must be integer class indices, got dtype "
                        f"{labels.dtype}")
    whole = np.isfinite(labels) & (labels == np.round(labels))
    if not whole.all():
        i = int(np.argmin(whole))
        raise ValueError(f"DataLoader: labels must be integer class indices, but label {i} is "
                         f"{labels[i].item()!r} ({labels.dtype} labels); round or convert "
                         "them yourself if that is what you mean")
    return labels.astype(np.int64)


class DataLoader:
    """``DataLoader(dataset_or_arrays, batch_size=1, shuffle=False,
    drop_last=False, seed=None, transform=None, prefetch=2, scale=1/255,
    sampler=None)``.

    ``dataset_or_arrays``: an object with ``.data`` (N, C, H, W) and
    ``.targets`` (N,) (:class:`CIFAR10`, :class:`SyntheticImages`, ...) or a
    pair ``(images, labels)``.  ``transform(x, rng)``: a batch transform from
    :mod:`minigrad.data.transforms`.
    """

    def __init__(self, dataset_or_arrays, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed=None, transform=None, prefetch: int = 2,
                 scale: float = 1.0 / 255, sampler=None):
        if isinstance(dataset_or_arrays, (tuple, list)) and len(dataset_or_arrays) == 2:
            images, labels = dataset_or_arrays
        elif hasattr(dataset_or_arrays, "data") and hasattr(dataset_or_arrays, "targets"):
            images, labels = dataset_or_arrays.data, dataset_or_arrays.targets
        else:
            raise TypeError("DataLoader: expected a dataset with .data and .targets or a pair "
                            f"(images, labels), got {type(dataset_or_arrays).__name__}")
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or labels.shape != (len(images),):
            raise ValueError(f"DataLoader: images must be (N, C, H, W) and labels (N,), got "
                             f"{images.shape} and {labels.shape}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give shuffle=True or a sampler, not both "
                             "(the sampler decides the order)")
        if prefetch < 0:
            raise ValueError(f"DataLoader: prefetch must be >= 0, got {prefetch!r}")
        self.images, self.labels = images, _class_indices(labels)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), drop_last
        self.transform, self.prefetch, self.scale = transform, int(prefetch), scale
        self.sampler = sampler
        self.seed = int(np.random.SeedSequence().entropy % (2 ** 63)) if seed is None else int(seed)
        self.epoch = 0          # the epoch the next iteration runs
        self.batch = 0          # batches of that epoch already delivered

    # ---- sizes ----------------------------------------------------------------------
    def __len__(self):
        n = len(self.labels) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self):
        """Images delivered per epoch (fewer than the data with drop_last)."""
        n = len(self.labels) if self.sampler is None else len(self.sampler)
        return len(self) * self.batch_size if self.drop_last else n

    # ---- state --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"seed", "epoch", "batch"}``: everything needed to continue exactly."""
        return {"seed": self.seed, "epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self.batch = int(state["seed"]), int(state["epoch"]), \
            int(state["batch"])

    def set_epoch(self, epoch: int) -> None:
        """Start the next iteration at the beginning of ``epoch``."""
        self.epoch, self.batch = int(epoch), 0

    # ---- making batches ---------------------------------------------------------------
    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (a seeded permutation when shuffling,
        the sampler's indices when there is one)."""
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(n)

    def make_batch(self, epoch: int, b: int, order=None):
        """Batch ``b`` of ``epoch``: (float32 images, int64 labels)."""
        order = self.order(epoch) if order is None else order
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        x = self.images[idx]
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float32) * np.float32(self.scale)
        else:
            x = x.astype(np.float32, copy=False)
        if self.transform is not None:
            x = self.transform(x, np.random.default_rng([self.seed, epoch, 1, b]))
            x = np.ascontiguousarray(x, dtype=np.float32)
        return x, self.labels[idx]

    def __iter__(self):
        epoch, start = self.epoch, self.batch
        order = self.order(epoch)
        batches = range(start, len(self))
        if self.prefetch == 0:
            source = (self.make_batch(epoch, b, order) for b in batches)
            stop = None
        else:
            source, stop = self._background(epoch, batches, order)
        try:
            for item in source:
                self.batch += 1
                yield item
            self.epoch, self.batch = epoch + 1, 0
        finally:
            if stop is not None:
                stop()

    def _background(self, epoch, batches, order):
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stopping = threading.Event()

        def put(item):
            while not stopping.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def work():
            try:
                for b in batches:
                    if stopping.is_set() or not put(self.make_batch(epoch, b, order)):
                        return
                put(_END)
            except BaseException as exc:  # handed to the main thread
                put(exc)

        thread = threading.Thread(target=work, name="minigrad-prefetch", daemon=True)
        thread.start()

        def items():
            while True:
                item = q.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        def stop():
            stopping.set()
            thread.join(timeout=5)

        return items(), stop

    def __repr__(self):
        return (f"DataLoader({len(self.labels)} samples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}, "
                f"prefetch={self.prefetch}, transform={self.transform!r})")
