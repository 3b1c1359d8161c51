"""Data-parallel training over several processes, machines and GPUs.

Every process ("rank") runs the same script on its own share of each batch;
after backward the ranks average their gradients, so every rank takes the same
optimizer step and the weights stay identical.  The communication is done by
existing engines, never by minigrad itself:

* **MPI** (``backend="mpi"``) through mpi4py, for CPUs on one machine or
  many: ``pip install "minigrad[distributed]"`` brings mpi4py and an MPI
  (MPICH) with its ``mpiexec``;
* **NCCL** (``backend="nccl"``) through CuPy's ``cupy.cuda.nccl``, between
  GPUs; the ranks are still started by ``mpiexec`` and NCCL's unique id is
  sent to them over MPI.  NumPy arrays still go through MPI.

The names are PyTorch's (``torch.distributed``)::

    import minigrad.distributed as dist
    dist.init_process_group()              # reads the launcher's environment
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.all_reduce(t, op=dist.ReduceOp.AVG)   # in place, on every rank

    mpiexec -n 2 python my_script.py

A script started without ``mpiexec`` is a group of one process (no mpi4py
needed), so the same script runs alone too.  The layers built on this package
are :class:`minigrad.nn.parallel.DistributedDataParallel`,
:class:`minigrad.nn.SyncBatchNorm` and
:class:`minigrad.data.DistributedSampler`; ``docs/distributed.md`` explains
launching and what the communication costs.
"""
from .process_group import (ReduceOp, Work, abort, all_gather, all_gather_into_tensor,
                            all_gather_object, all_reduce, barrier, broadcast,
                            broadcast_object_list, destroy_process_group, get_backend,
                            get_local_rank, get_rank, get_world_size, init_process_group,
                            is_initialized,
                            launched_by_mpi, share_cores)
from .launch import find_mpiexec, mpiexec_command

__all__ = [
    "init_process_group", "destroy_process_group", "is_initialized", "get_backend",
    "get_rank", "get_world_size", "get_local_rank", "ReduceOp", "Work",
    "all_reduce", "broadcast", "barrier", "all_gather", "all_gather_into_tensor",
    "all_gather_object", "broadcast_object_list", "abort", "launched_by_mpi", "share_cores",
    "find_mpiexec", "mpiexec_command",
]
