"""``DistributedSampler``: each rank's share of a dataset, PyTorch's rules.

    sampler = DistributedSampler(train_set, shuffle=True, seed=0)   # rank, world from the group
    loader = DataLoader(train_set, batch_size=64, sampler=sampler)

Epoch e's order is one permutation of all n indices, the same on every rank
(``np.random.default_rng([seed, e])``, so every rank must use the same
``seed``).  It is made a multiple of the number of ranks R, then rank r takes
every R-th index starting at r:

* ``drop_last=False`` (default): the order is padded by repeating its
  beginning (wrap-around), so each rank gets ⌈n/R⌉ indices and a few images
  are seen twice per epoch;
* ``drop_last=True``: the end of the order is dropped, each rank gets ⌊n/R⌋.

Either way every rank has the same number of indices, hence the same number
of batches: no rank waits in a collective for a step the others never take.
The shares are disjoint (apart from the padding) and together cover the data.
``set_epoch(e)`` picks epoch e's order; a :class:`DataLoader` given the
sampler calls it at the start of each of its epochs.
"""
from __future__ import annotations

import numpy as np

from .. import distributed as dist

__all__ = ["DistributedSampler"]


def _dataset_length(dataset) -> int:
    """n for a dataset with ``.targets``, a pair (images, labels), or anything sized."""
    if hasattr(dataset, "targets"):
        return len(dataset.targets)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and hasattr(dataset[1], "shape"):
        return len(dataset[1])
    return len(dataset)


class DistributedSampler:
    """``DistributedSampler(dataset, num_replicas=None, rank=None, shuffle=True,
    seed=0, drop_last=False)``: the indices of rank ``rank`` among
    ``num_replicas`` (by default this process's rank and the world size of
    the initialized process group)."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if num_replicas is None or rank is None:
            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: give num_replicas and rank, or call "
                                   "minigrad.distributed.init_process_group() first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if isinstance(num_replicas, bool) or int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer, "
                             f"got {num_replicas!r}")
        if isinstance(rank, bool) or int(rank) != rank or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in 0..{int(num_replicas) - 1}, "
                             f"got {rank!r}")
        self.dataset_size = _dataset_length(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n, r = self.dataset_size, self.num_replicas
        self.num_samples = n // r if self.drop_last else -(-n // r)    # per rank
        self.total_size = self.num_samples * r

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order (call it on every rank with the same value)."""
        self.epoch = int(epoch)

    def __len__(self):
        return self.num_samples

    def __iter__(self):
        n = self.dataset_size
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        if self.drop_last:
            order = order[:self.total_size]
        elif n > 0:
            order = np.resize(order, self.total_size)   # wrap around: repeats the beginning
        return iter(order[self.rank:self.total_size:self.num_replicas].tolist())

    def __repr__(self):
        return (f"DistributedSampler({self.dataset_size} samples, num_replicas="
                f"{self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
