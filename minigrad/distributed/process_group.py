"""The process group: which ranks there are, and the collectives on Tensors.

``init_process_group()`` makes one group of all the processes that ``mpiexec``
started (a group of one when the script was started without it).  The
collectives change a Tensor's array **in place on every rank** and must be
called by every rank in the same order, as in MPI and PyTorch:

=====================================  =========================================
``all_reduce(t, op)``                  every rank gets op(t of rank 0, t of rank 1, ...)
``broadcast(t, src)``                  every rank gets rank ``src``'s t
``all_gather_into_tensor(out, t)``     ``out[r]`` is rank r's t, on every rank
``barrier()``                          no rank goes on until all have arrived
=====================================  =========================================

The backends (``mpi.py``, ``nccl.py``, and the group of one below) share one
small interface: ``all_reduce(array, op) -> Work``, ``broadcast(array, src)``,
``all_gather(array, out)``, ``barrier()``, ``all_gather_object(obj)``,
``broadcast_object(obj, src)``, ``abort(exit_code)``, ``close()``, and the attributes ``name``,
``rank``, ``world_size``, ``local_rank``, ``local_world_size``.
"""
from __future__ import annotations

import enum
import os

import numpy as np

from .. import backend
from ..tensor import Tensor


class ReduceOp(enum.Enum):
    """How ``all_reduce`` combines the ranks' values (element by element).

    SUM and AVG of floating-point arrays add the ranks' values in rank order
    on the MPI backend (see ``mpi.py``), so the result does not depend on how
    an array is split into messages; AVG is that sum divided by the number of
    ranks.  MAX and MIN are exact in any order."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"


class Work:
    """A collective in flight (``all_reduce(..., async_op=True)`` returns one).

    ``wait()`` blocks until it is done; ``is_completed()`` checks without
    blocking (and so lets MPI move it forward).  A backend hands in the
    operation as an object with ``test() -> bool`` and ``wait()``;
    ``Work()`` is already complete.
    """

    def __init__(self, operation=None):
        self._operation = operation

    def is_completed(self) -> bool:
        if self._operation is not None and self._operation.test():
            self._operation = None
        return self._operation is None

    def wait(self) -> None:
        if self._operation is not None:
            self._operation.wait()
            self._operation = None


class SingleProcess:
    """The group of one process, for a script started without ``mpiexec``:
    every collective leaves the values as they are (the sum, mean, max or
    min over one rank is that rank's value).  Needs no MPI."""

    name = "single"
    rank, world_size, local_rank, local_world_size = 0, 1, 0, 1

    def all_reduce(self, array, op):
        return Work()

    def broadcast(self, array, src):
        pass

    def all_gather(self, array, out):
        out[...] = array.reshape(out.shape)

    def barrier(self):
        pass

    def all_gather_object(self, obj):
        return [obj]

    def broadcast_object(self, obj, src):
        return obj

    def abort(self, exit_code):
        raise SystemExit(exit_code)

    def close(self):
        pass


# the launchers' variables: MPICH and Intel MPI (Hydra), Open MPI, PMIx, MVAPICH
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE")
_BACKENDS = ("mpi", "nccl")
_group = None


def launched_by_mpi() -> bool:
    """True when this process was started by ``mpiexec``/``mpirun`` (its
    launcher left its variables in the environment)."""
    return any(v in os.environ for v in _LAUNCHER_VARIABLES)


def init_process_group(backend: str | None = None) -> None:
    """Join the group of all processes of this run.

    ``backend``: ``"mpi"`` (mpi4py; CPUs, one or many machines), ``"nccl"``
    (CuPy arrays between GPUs through NCCL, one GPU per rank; NumPy arrays
    still through MPI), or ``None``: ``$MINIGRAD_DIST_BACKEND`` if set;
    otherwise, without ``mpiexec``, a group of one process (mpi4py is not
    imported); under ``mpiexec``, ``"nccl"`` when CuPy and NCCL are there and
    the machine has a GPU for every rank on it, else ``"mpi"``.

    With more than one rank, an uncaught exception on any rank aborts every
    rank (``MPI_Abort``), so a crash cannot leave the others waiting forever.
    With several ranks on one machine, the cores are shared among them
    (:func:`share_cores`) unless ``NUMBA_NUM_THREADS`` or ``OMP_NUM_THREADS``
    says otherwise.
    """
    global _group
    if _group is not None:
        raise RuntimeError("init_process_group: the process group is already initialized "
                           "(call destroy_process_group() first)")
    if backend is None:
        backend = os.environ.get("MINIGRAD_DIST_BACKEND", "").strip().lower() or None
    if backend is not None and backend not in _BACKENDS:
        raise ValueError(f"init_process_group: unknown backend {backend!r}; "
                         f"expected one of {', '.join(map(repr, _BACKENDS))} or None")
    if backend is None and not launched_by_mpi():
        _group = SingleProcess()
        return
    if backend == "mpi" or launched_by_mpi():
        from .mpi import MPIBackend
        host = MPIBackend()
    else:                                   # "nccl" on one GPU, without mpiexec
        host = SingleProcess()
    if backend is None:
        from .nccl import nccl_usable
        backend = "nccl" if nccl_usable(host.local_world_size) else "mpi"
    if backend == "nccl":
        from .nccl import NCCLBackend
        try:
            _group = NCCLBackend(host)
        except BaseException:
            host.close()
            raise
    else:
        _group = host
    if _group.local_world_size > 1 and not any(
            os.environ.get(v) for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")):
        share_cores(_group.local_world_size)


def share_cores(ranks_on_this_machine: int):
    """Give this rank its share of the machine's cores: ``cores // ranks``
    threads (at least 1) for minigrad's kernels and for the BLAS.

    Each process would otherwise start one thread per core for each, and N
    ranks would run N times as many threads as there are cores; the BLAS
    threads spin while they wait, and a step then takes several times as
    long.  Returns threadpoolctl's limiter (``restore_original_limits()``
    undoes the BLAS part)."""
    from threadpoolctl import threadpool_limits
    from .. import config
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // ranks_on_this_machine)
    config.set_num_threads(min(threads, config.get_num_threads()))
    return threadpool_limits(limits=threads)


def destroy_process_group() -> None:
    """Leave the group (frees its communicators; MPI itself ends at exit)."""
    global _group
    if _group is not None:
        group, _group = _group, None
        group.close()


def _current():
    if _group is None:
        raise RuntimeError("minigrad.distributed: the process group is not initialized; "
                           "call minigrad.distributed.init_process_group() first")
    return _group


def is_initialized() -> bool:
    return _group is not None


def get_backend() -> str:
    """``"mpi"``, ``"nccl"`` or ``"single"`` (one process, no launcher)."""
    return _current().name


def get_rank() -> int:
    """This process's number, 0 … world size − 1."""
    return _current().rank


def get_world_size() -> int:
    """How many processes the group has."""
    return _current().world_size


def get_local_rank() -> int:
    """This process's number among the ranks on its own machine (the GPU it
    uses with NCCL)."""
    return _current().local_rank


def _array_of(value, who):
    """The array of a Tensor (or a NumPy/CuPy array itself), to be changed in place."""
    array = value.data if isinstance(value, Tensor) else value
    if not (isinstance(array, np.ndarray) or backend.device_of(array) == "cuda"):
        raise TypeError(f"{who}: expected a Tensor (or a NumPy/CuPy array), "
                        f"got {type(value).__name__}")
    return array


def all_reduce(tensor, op: ReduceOp = ReduceOp.SUM, async_op: bool = False):
    """Combine ``tensor`` over all ranks with ``op``, in place on every rank.

    ``async_op=True`` returns a :class:`Work` to ``wait()`` on instead of
    blocking (the array must not be touched until then)."""
    array = _array_of(tensor, "all_reduce")
    if not isinstance(op, ReduceOp):
        raise TypeError(f"all_reduce: op must be a ReduceOp (SUM, AVG, MAX, MIN), got {op!r}")
    if op is ReduceOp.AVG and array.dtype.kind not in "fc":
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating-point tensor, "
                        f"got {array.dtype}")
    work = _current().all_reduce(array, op)
    if async_op:
        return work
    work.wait()
    return None


def broadcast(tensor, src: int = 0) -> None:
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every rank."""
    array = _array_of(tensor, "broadcast")
    group = _current()
    if not 0 <= src < group.world_size:
        raise ValueError(f"broadcast: src must be a rank in 0..{group.world_size - 1}, got {src}")
    group.broadcast(array, src)


def all_gather_into_tensor(output_tensor, input_tensor) -> None:
    """Gather every rank's ``input_tensor`` into ``output_tensor``, rank by
    rank: ``output_tensor`` has world size × as many elements, of the same
    dtype, e.g. shape (world_size, *input.shape)."""
    out = _array_of(output_tensor, "all_gather_into_tensor")
    inp = _array_of(input_tensor, "all_gather_into_tensor")
    group = _current()
    if out.size != group.world_size * inp.size or out.dtype != inp.dtype:
        raise ValueError(f"all_gather_into_tensor: output must hold {group.world_size} x "
                         f"{inp.size} {inp.dtype} values, got shape {out.shape} {out.dtype}")
    if backend.device_of(out) != backend.device_of(inp):
        raise ValueError("all_gather_into_tensor: output and input must be on the same device")
    group.all_gather(inp, out)


def all_gather(tensor_list, tensor) -> None:
    """``tensor_list[r]`` (one Tensor per rank, ``tensor``'s shape) receives
    rank r's ``tensor``."""
    inp = _array_of(tensor, "all_gather")
    group = _current()
    if len(tensor_list) != group.world_size:
        raise ValueError(f"all_gather: tensor_list must have one entry per rank "
                         f"({group.world_size}), got {len(tensor_list)}")
    xp = backend.get_array_module(inp)
    out = xp.empty((group.world_size,) + inp.shape, inp.dtype)
    group.all_gather(xp.ascontiguousarray(inp), out)
    for r, t in enumerate(tensor_list):
        target = _array_of(t, "all_gather")
        if target.shape != inp.shape:
            raise ValueError(f"all_gather: tensor_list[{r}] has shape {target.shape}, "
                             f"expected {inp.shape}")
        target[...] = out[r]


def all_gather_object(object_list: list, obj) -> None:
    """``object_list[r]`` receives rank r's ``obj`` (any picklable object)."""
    group = _current()
    if len(object_list) != group.world_size:
        raise ValueError(f"all_gather_object: object_list must have one entry per rank "
                         f"({group.world_size}), got {len(object_list)}")
    object_list[:] = group.all_gather_object(obj)


def barrier() -> None:
    """Wait until every rank has called ``barrier()``."""
    _current().barrier()


def broadcast_object_list(object_list: list, src: int = 0) -> None:
    """Every rank's ``object_list`` receives rank ``src``'s entries (any
    picklable objects; the lists must have the same length on every rank)."""
    group = _current()
    if not 0 <= src < group.world_size:
        raise ValueError(f"broadcast_object_list: src must be a rank in 0..{group.world_size - 1}, "
                         f"got {src}")
    object_list[:] = group.broadcast_object(list(object_list), src)


def abort(exit_code: int = 1) -> None:
    """End every rank of the run now (``MPI_Abort``): ``mpiexec`` stops them
    all and exits with ``exit_code``.  For a rank that has met an error the
    others cannot know about; they would otherwise wait for it forever in
    their next collective.  In a group of one it is ``sys.exit(exit_code)``."""
    _current().abort(int(exit_code))
