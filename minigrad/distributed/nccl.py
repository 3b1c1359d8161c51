"""The NCCL backend: CuPy arrays between GPUs through ``cupy.cuda.nccl``.

Each rank drives one GPU, number ``local rank % GPUs on the machine``.  The
ranks are started by ``mpiexec`` as for the MPI backend; rank 0 asks NCCL for
a unique id and sends it to the others over MPI, and every rank then joins
the NCCL communicator with it (``ncclCommInitRank``).  A single process
started without ``mpiexec`` makes a group of one GPU and needs no MPI.

CuPy arrays go through NCCL on CuPy's current stream, so they are ordered
after the kernels that computed them with no extra synchronisation; NumPy
arrays (and Python objects) go through the MPI group underneath.  NCCL adds
in its own order (a ring over the GPUs): with two GPUs the sum is exact in
any order (a + b = b + a), with more it is NCCL's.  A group of one GPU still
calls NCCL (which then copies), so one GPU exercises the whole path.
"""
from __future__ import annotations

from .. import backend
from .process_group import ReduceOp, Work


def _import_nccl():
    cp = backend.require_cupy()
    try:
        from cupy.cuda import nccl
    except ImportError as exc:
        raise RuntimeError("minigrad.distributed: backend 'nccl' needs CuPy with NCCL "
                           f"(cupy.cuda.nccl could not be imported: {exc}); install the "
                           "NCCL wheel for your CUDA (e.g. `pip install nvidia-nccl-cu12`) "
                           "or use backend='mpi'") from exc
    if not getattr(nccl, "available", True):
        raise RuntimeError("minigrad.distributed: this CuPy was built without NCCL; "
                           "use backend='mpi'")
    return cp, nccl


def nccl_usable(ranks_on_this_machine: int) -> bool:
    """Can every rank on this machine have a GPU of its own with NCCL?"""
    if not backend.cuda_available():
        return False
    try:
        cp, _ = _import_nccl()
    except RuntimeError:
        return False
    return cp.cuda.runtime.getDeviceCount() >= ranks_on_this_machine


class _EventDone:
    """The operations queued on a stream up to a CUDA event: ``test()``
    polls, ``wait()`` blocks."""

    def __init__(self, event):
        self.event = event

    def test(self):
        return self.event.done

    def wait(self):
        self.event.synchronize()


class NCCLBackend:
    """NCCL for CuPy arrays, ``host`` (an MPI group or the group of one) for
    NumPy arrays, objects and the barrier."""

    name = "nccl"

    def __init__(self, host):
        cp, nccl = self.cp, self.nccl = _import_nccl()
        self.host = host
        self.rank, self.world_size = host.rank, host.world_size
        self.local_rank, self.local_world_size = host.local_rank, host.local_world_size
        gpus = cp.cuda.runtime.getDeviceCount()
        if host.local_world_size > gpus:
            raise RuntimeError(f"minigrad.distributed: backend 'nccl' needs one GPU per rank, "
                               f"but {host.local_world_size} ranks run on this machine and "
                               f"it has {gpus} GPU(s); start fewer ranks per machine or use "
                               "backend='mpi'")
        self.device = cp.cuda.Device(self.local_rank % gpus)
        self.device.use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = host.broadcast_object(uid, 0)
        self.comm = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self._ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM,
                     ReduceOp.MAX: nccl.NCCL_MAX, ReduceOp.MIN: nccl.NCCL_MIN}
        self._types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                       "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                       "int64": nccl.NCCL_INT64, "int8": nccl.NCCL_INT8,
                       "uint8": nccl.NCCL_UINT8}

    def _type(self, array):
        try:
            return self._types[array.dtype.name]
        except KeyError:
            raise TypeError(f"minigrad.distributed (nccl): arrays of {array.dtype} are not "
                            f"supported; use one of {', '.join(self._types)}") from None

    def _contiguous(self, array):
        """(a C-contiguous CuPy array with ``array``'s values, a copy-back function)."""
        if array.flags.c_contiguous:
            return array, lambda: None
        buf = self.cp.ascontiguousarray(array)

        def copy_back():
            array[...] = buf
        return buf, copy_back

    # ---- collectives ---------------------------------------------------------------------
    def all_reduce(self, array, op):
        if not isinstance(array, self.cp.ndarray):
            return self.host.all_reduce(array, op)
        buf, copy_back = self._contiguous(array)
        stream = self.cp.cuda.get_current_stream()
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._type(buf),
                            self._ops[op], stream.ptr)
        if op is ReduceOp.AVG:
            buf /= self.world_size          # on the same stream, after the sum
        copy_back()
        return Work(_EventDone(stream.record()))

    def broadcast(self, array, src):
        if not isinstance(array, self.cp.ndarray):
            return self.host.broadcast(array, src)
        buf, copy_back = self._contiguous(array)
        stream = self.cp.cuda.get_current_stream()
        self.comm.bcast(buf.data.ptr, buf.size, self._type(buf), src, stream.ptr)
        copy_back()
        stream.synchronize()
        return None

    def all_gather(self, array, out):
        if not isinstance(array, self.cp.ndarray):
            return self.host.all_gather(array, out)
        inp, _ = self._contiguous(array)
        buf, copy_back = self._contiguous(out)
        stream = self.cp.cuda.get_current_stream()
        self.comm.allGather(inp.data.ptr, buf.data.ptr, inp.size, self._type(inp), stream.ptr)
        copy_back()
        return None

    def barrier(self):
        self.cp.cuda.get_current_stream().synchronize()
        self.host.barrier()

    def all_gather_object(self, obj):
        return self.host.all_gather_object(obj)

    def broadcast_object(self, obj, src):
        return self.host.broadcast_object(obj, src)

    def abort(self, exit_code):
        self.host.abort(exit_code)

    def close(self):
        if self.comm is not None:
            self.cp.cuda.get_current_stream().synchronize()
            self.comm.destroy()
            self.comm = None
        self.host.close()
