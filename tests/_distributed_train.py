"""``minigrad.training.main`` under ``mpiexec`` for tests/test_train_distributed.py,
with a fault on one rank::

    mpiexec -n 2 python tests/_distributed_train.py FAULT RANK STEP [training arguments]

FAULT ``none``; ``raise``: rank RANK raises after its STEP-th SGD update;
``term``: it sends itself SIGTERM then (as ``kill`` would); ``nodata``: its
data loading fails as if the data were missing on its machine.
"""
import os
import signal
import sys

import minigrad.distributed as dist
import minigrad.optim
import minigrad.training.loop
from minigrad.data import DatasetNotFoundError
from minigrad.training import main

fault, rank, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
step, load_data, updates = minigrad.optim.SGD.step, minigrad.training.loop.load_data, [0]


def faulty_step(self, *args):
    out = step(self, *args)
    updates[0] += 1
    if dist.get_rank() == rank and updates[0] == after:
        if fault == "raise":
            raise RuntimeError(f"rank {rank} fails on purpose")
        os.kill(os.getpid(), signal.SIGTERM)
    return out


def faulty_load_data(args, log):
    if dist.get_rank() == rank:
        raise DatasetNotFoundError(f"no data on the machine of rank {rank}")
    return load_data(args, log)


if fault in ("raise", "term"):
    minigrad.optim.SGD.step = faulty_step
elif fault == "nodata":
    minigrad.training.loop.load_data = faulty_load_data
sys.exit(main(sys.argv[4:]))
