"""Between the host and the device of a run, without stalling a GPU.

Every ``.item()``, ``float()`` or copy back of a GPU array waits until the GPU
has finished all the work queued before it.  The loop therefore never reads
a number back in a training step: the labels are checked on the host before
they are copied, the loss and the error count of each step stay on the device
(:class:`StepMetrics`), and they come back together, in one copy, once per
log interval.  On the CPU the same code runs on NumPy arrays and nothing is
copied at all.
"""
from __future__ import annotations

import numpy as np

from .. import backend

__all__ = ["BatchCopier", "StepMetrics", "model_device"]


def model_device(model) -> str:
    """'cpu' or 'cuda': where the model's parameters live."""
    for p in model.parameters():
        return p.device
    return "cpu"


class BatchCopier:
    """``copy(array)`` puts a host (NumPy) batch on the run's device.

    On the CPU it returns the array itself.  On a GPU each array is first
    copied into page-locked (pinned) host memory, from which the copy to the
    device runs asynchronously on the current CUDA stream, behind the work
    already queued; a staging buffer is reused only after its last copy has
    finished (its event), by which time the copy has long been done.
    """

    SLOTS = 4            # two arrays (images, labels) per step, two steps apart

    def __init__(self, device="cpu"):
        self.device = backend.normalize_device(device)
        self._slots = [None] * self.SLOTS
        self._next = 0

    def __call__(self, array):
        if self.device == "cpu":
            return array
        cp = backend.require_cupy()
        array = np.ascontiguousarray(array)
        slot = self._slot(cp, array.nbytes)
        staged = slot["host"][:array.nbytes].view(array.dtype).reshape(array.shape)
        staged[...] = array
        out = cp.empty(array.shape, dtype=array.dtype)
        out.set(staged, stream=cp.cuda.get_current_stream())
        slot["done"].record()
        return out

    def _slot(self, cp, nbytes):
        i, self._next = self._next, (self._next + 1) % self.SLOTS
        slot = self._slots[i]
        if slot is not None:
            slot["done"].synchronize()          # its previous copy has finished
        if slot is None or slot["host"].nbytes < nbytes:
            size = max(nbytes, 1)
            memory = cp.cuda.alloc_pinned_memory(size)
            slot = {"memory": memory, "host": np.frombuffer(memory, np.uint8, size),
                    "done": cp.cuda.Event(disable_timing=True)}
            self._slots[i] = slot
        return slot


class StepMetrics:
    """The loss and error count of every step since the last :meth:`fetch`,
    kept as arrays where they were computed (on the GPU: on the device)."""

    def __init__(self):
        self._steps = []

    def __len__(self):
        return len(self._steps)

    def add(self, iteration, epoch, loss, errors, n, lr) -> None:
        """``loss`` (mean over the batch) and ``errors`` (count) are 0-d arrays;
        the other numbers are already on the host."""
        self._steps.append((iteration, epoch, loss, errors, n, lr))

    def fetch(self) -> list:
        """``[(iteration, epoch, loss, errors, n, lr), ...]`` with Python numbers,
        brought to the host in one copy; the buffer is emptied."""
        steps, self._steps = self._steps, []
        if not steps:
            return []
        xp = backend.get_array_module(steps[0][2])
        values = xp.stack([xp.stack([s[2] for s in steps]).astype(np.float64),
                           xp.stack([s[3] for s in steps]).astype(np.float64)])
        losses, errors = backend.to_numpy(values).tolist()
        return [(it, ep, loss, int(err), n, lr)
                for (it, ep, _, _, n, lr), loss, err in zip(steps, losses, errors)]
