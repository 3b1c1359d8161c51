"""The MPI backend: mpi4py's buffer-protocol collectives on NumPy arrays.

``pip install "minigrad[distributed]"`` installs mpi4py and MPICH (whose
``mpiexec`` lands beside the Python that installed it).  Arrays are passed to
MPI as buffers, without pickling; CuPy arrays and non-contiguous arrays go
through a contiguous host copy.

**The sum in rank order.**  Floating-point addition is not associative, and an
MPI library picks its all-reduce algorithm (recursive doubling, ring, tree,
reduce-scatter + all-gather, ...) by message size and machine layout, each
adding the ranks' values in its own order.  With three ranks, MPICH 5's
recursive-doubling, ring and tree all-reduces disagree in the last bit on 21
to 31% of the elements of a float64 array, so the same gradients reduced in
buckets of another size could give other weights.  minigrad therefore sums floating-point arrays itself, in a fixed
order, with two MPI collectives::

    rank r owns the r-th of world-size slices of the array
    all-to-all:  rank r receives every rank's copy of its slice
    local:       slice = ((copy of rank 0 + copy of rank 1) + copy of rank 2) + ...
    all-gather:  every rank receives every finished slice

Each element is added in rank order 0, 1, 2, ... whatever the message size or
the number of ranks, on the rank that owns it, and every rank receives that
one result.  The traffic is that of a ring all-reduce: each rank sends and
receives (N − 1)/N of the array twice.  Integers, MAX and MIN are exact in any
order and use ``Iallreduce``.

**Keeping the ranks in step.**  MPI matches the collectives of a communicator
by the order in which each rank starts them, so every rank must start them in
one order.  The first phases (and every other collective) start when the
program asks for them, which is the same order on every rank.  A second phase
can only start once its first phase is over, which happens at different
moments on different ranks; so the second phases have a communicator of their
own and start strictly in the order of their reductions (a reduction's
all-gather waits for the all-gathers of the reductions asked for before it).
"""
from __future__ import annotations

import collections
import os
import sys
import time

import numpy as np

from .. import backend
from .process_group import ReduceOp, Work


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise RuntimeError(
            "minigrad.distributed: the MPI backend needs mpi4py and an MPI library "
            "(`pip install \"minigrad[distributed]\"` installs mpi4py and MPICH); "
            f"importing mpi4py failed: {exc}") from exc
    return MPI


def _wait(request):
    """Wait for an MPI request, offering the core to other processes between
    polls.  MPI's own ``Wait`` spins at full speed: on a machine with more
    busy processes than cores, a waiting rank would take turns on a core
    away from the rank it is waiting for.  On an idle core the yield returns
    at once, so nothing is lost there."""
    while not request.Test():
        os.sched_yield()


def _host_buffer(array):
    """(a C-contiguous flat NumPy array holding ``array``'s values, a function
    that copies the buffer back into ``array``; nothing to copy when the
    buffer is a view of it)."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array.reshape(-1), lambda: None
    buf = np.ascontiguousarray(backend.to_numpy(array)).reshape(-1)

    def copy_back():
        xp = backend.get_array_module(array)
        array[...] = xp.asarray(buf.reshape(array.shape))
    return buf, copy_back


def _flush_before_abort(grace_s=1.0):
    """Flush this rank's output and give the launcher a moment to pass it on.

    ``MPI_Abort`` makes ``mpiexec`` kill every rank *and* the processes that
    forward their output; what they had not yet read from a rank's pipe (its
    traceback, say) would be lost, and a user would see a failed run with no
    message.  A second of grace, once, on the way out of a failed run."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(grace_s)


class _Request:
    """One MPI request; ``copy_back`` runs once it is complete."""

    def __init__(self, request, copy_back):
        self.request, self.copy_back = request, copy_back

    def test(self):
        if not self.request.Test():
            return False
        self.copy_back()
        return True

    def wait(self):
        _wait(self.request)
        self.copy_back()


class _SumInRankOrder:
    """Σ over ranks of ``buf`` (÷ world size if ``average``), in place, each
    element added in rank order (module docstring): an all-to-all, a local
    sum, an all-gather."""

    def __init__(self, mpi, buf, average, copy_back):
        self.mpi, self.buf, self.average, self.copy_back = mpi, buf, average, copy_back
        n, size = buf.size, mpi.world_size
        bounds = [n * r // size for r in range(size + 1)]     # rank r owns bounds[r]:bounds[r+1]
        self.layout = ([bounds[r + 1] - bounds[r] for r in range(size)], bounds[:-1])
        mine = self.layout[0][mpi.rank]
        self.copies = np.empty((size, mine), buf.dtype)        # copies[r]: rank r's values
        self.first = mpi.comm.Ialltoallv(
            [buf, self.layout], [self.copies, ([mine] * size, [mine * r for r in range(size)])])
        self.second = None
        mpi.unstarted.append(self)

    def start_second(self):
        """The local sum and the all-gather (the first phase is complete)."""
        total = self.copies[0].copy()
        for r in range(1, self.mpi.world_size):
            total += self.copies[r]
        if self.average:
            total /= self.mpi.world_size
        self.copies = None
        self.second = self.mpi.comm_second.Iallgatherv(total, [self.buf, self.layout])

    def test(self):
        self.mpi.start_second_phases()
        if self.second is None or not self.second.Test():
            return False
        self.copy_back()
        return True

    def wait(self):
        self.mpi.start_second_phases(until=self)
        _wait(self.second)
        self.copy_back()


class MPIBackend:
    """All ranks started by ``mpiexec`` (``MPI.COMM_WORLD``, duplicated so
    minigrad's messages never mix with a user's own MPI calls)."""

    name = "mpi"

    def __init__(self):
        MPI = self.MPI = _import_mpi()
        self.comm = MPI.COMM_WORLD.Dup()            # everything but the second phases
        self.comm_second = MPI.COMM_WORLD.Dup()     # the all-gathers of the sums, in order
        self.unstarted = collections.deque()        # sums whose all-gather has not started
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED)      # the ranks on this machine
        self.local_rank, self.local_world_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.MAX: MPI.MAX, ReduceOp.MIN: MPI.MIN}
        self._excepthook = None
        if self.world_size > 1:
            self._abort_on_uncaught_exception()

    # ---- a rank that fails ends them all ------------------------------------------
    def _abort_on_uncaught_exception(self):
        """An uncaught exception prints its traceback as usual and then calls
        ``MPI_Abort``, which makes ``mpiexec`` end every rank and exit
        non-zero; without it the other ranks would wait for this one forever
        inside their next collective."""
        previous = sys.excepthook
        MPI, rank, size = self.MPI, self.rank, self.world_size

        def excepthook(kind, value, traceback):
            previous(kind, value, traceback)
            sys.stderr.write(f"minigrad.distributed: rank {rank} of {size} stopped with "
                             f"{kind.__name__}; aborting all ranks\n")
            _flush_before_abort()
            MPI.COMM_WORLD.Abort(1)

        self._excepthook = (previous, excepthook)
        sys.excepthook = excepthook

    def abort(self, exit_code):
        _flush_before_abort()
        self.MPI.COMM_WORLD.Abort(exit_code)

    def close(self):
        if self._excepthook is not None:
            previous, ours = self._excepthook
            if sys.excepthook is ours:
                sys.excepthook = previous
            self._excepthook = None
        if self.comm is not None:
            while self.unstarted:                   # finish what was started
                self.unstarted[0].wait()
            self.comm.Free()
            self.comm_second.Free()
            self.comm = self.comm_second = None

    # ---- collectives ---------------------------------------------------------------------
    def all_reduce(self, array, op):
        if self.world_size == 1:
            return Work()
        buf, copy_back = _host_buffer(array)
        if buf.dtype.kind == "f" and op in (ReduceOp.SUM, ReduceOp.AVG):
            return Work(_SumInRankOrder(self, buf, op is ReduceOp.AVG, copy_back))
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, self._ops[op])
        return Work(_Request(request, copy_back))

    def start_second_phases(self, until=None):
        """Start the all-gathers of the sums in the order the sums were asked
        for, as far as their all-to-alls are complete; with ``until``, wait
        for the all-to-alls up to that sum's own."""
        while self.unstarted:
            head = self.unstarted[0]
            if until is not None and until.second is None:
                _wait(head.first)
            elif not head.first.Test():
                return
            self.unstarted.popleft()
            head.start_second()

    def broadcast(self, array, src):
        if self.world_size == 1:
            return
        buf, copy_back = _host_buffer(array)
        _wait(self.comm.Ibcast(buf, root=src))
        copy_back()

    def all_gather(self, array, out):
        inp, _ = _host_buffer(array)
        buf, copy_back = _host_buffer(out)
        _wait(self.comm.Iallgather(inp, buf))
        copy_back()

    def barrier(self):
        _wait(self.comm.Ibarrier())

    def all_gather_object(self, obj):
        return self.comm.allgather(obj)

    def broadcast_object(self, obj, src):
        return self.comm.bcast(obj, root=src)
