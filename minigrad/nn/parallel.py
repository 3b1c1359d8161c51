"""``DistributedDataParallel``: one copy of the model per rank, gradients
averaged over the ranks during backward.

    import minigrad.distributed as dist
    from minigrad.nn.parallel import DistributedDataParallel

    dist.init_process_group()
    model = DistributedDataParallel(minigrad.models.create("resnet20"))
    opt = minigrad.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:                  # each rank its own share of the batch
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()                  # leaves every rank with the mean gradient
        opt.step()                       # so every rank takes the same step

With every rank holding the mean of the ranks' gradients of their own mean
losses, N ranks × B images take exactly the step of one process × N·B images
(for layers that treat images independently; batch norm needs
:class:`~minigrad.nn.SyncBatchNorm` for that).

What happens, and when:

1. **Construction.**  The ranks compare the names, shapes and dtypes of their
   parameters and buffers (a ``ValueError`` names the first difference), then
   every rank receives rank 0's values, so differently seeded ranks start
   from the same weights.
2. **Forward** (training mode): rank 0's buffers (batch-norm running
   statistics) are copied to every rank first, so all ranks hold one model.
3. **Backward.**  The parameters are grouped, last layer first (about the
   order in which backward finishes them), into *buckets* of at most
   ``bucket_cap_mb`` MiB, each with one flat buffer.  When a parameter's
   gradient is final (``Tensor.register_post_accumulate_grad_hook``) it is
   copied into its place in the bucket; when a bucket is complete a
   non-blocking all-reduce of its buffer starts while backward goes on with
   the earlier layers.  Once the last bucket is started, every all-reduce is
   waited for and each ``p.grad`` becomes a view of its averaged bucket.
   Buckets are started in the same order on every rank (one that fills early
   waits for those before it): MPI needs every rank to call the collectives
   in one order.  One large bucket is one message; small buckets start
   sooner and overlap more of the backward, at a latency cost each.

The mean is the sum over ranks in rank order divided by the number of ranks
(``minigrad/distributed/mpi.py``), element by element, so the bucket size
changes when values travel but never their bits.
"""
from __future__ import annotations

import contextlib

from .. import backend
from .. import distributed as dist
from ..tensor import Tensor
from .module import Module


class _Bucket:
    """Parameters whose gradients travel together in one flat buffer."""

    def __init__(self, params, names):
        self.params, self.names = params, names
        self.starts, total = [], 0
        for p in params:
            self.starts.append(total)
            total += p.size
        xp = backend.get_array_module(params[0].data)
        self.buffer = xp.zeros(total, params[0].dtype)
        self.waiting = len(params)          # gradients not yet copied in this backward
        self.work = None                    # the all-reduce in flight


def _describe(module):
    """What must agree between ranks: (kind, name, shape, dtype, trained?)."""
    rows = [("parameter", n, tuple(p.shape), str(p.dtype), p.requires_grad)
            for n, p in module.named_parameters()]
    rows += [("buffer", n, tuple(b.shape), str(b.dtype), False)
             for n, b in module.named_buffers()]
    return rows


def _first_difference(ref, other, rank):
    """A sentence naming the first row where rank ``rank``'s model differs."""
    for a, b in zip(ref, other):
        if a == b:
            continue
        if a[:2] != b[:2]:
            return f"rank 0 has {a[0]} {a[1]!r} where rank {rank} has {b[0]} {b[1]!r}"
        for what, i in (("shape", 2), ("dtype", 3), ("requires_grad", 4)):
            if a[i] != b[i]:
                return f"{a[0]} {a[1]!r} has {what} {a[i]} on rank 0 but {b[i]} on rank {rank}"
    if len(ref) != len(other):
        longer, who = (ref, 0) if len(ref) > len(other) else (other, rank)
        extra = longer[min(len(ref), len(other))]
        return (f"rank 0 has {len(ref)} parameters and buffers, rank {rank} has "
                f"{len(other)}; the first extra one is {extra[0]} {extra[1]!r} on rank {who}")
    return None


def _broadcast_coalesced(tensors, src=0):
    """Give every rank rank ``src``'s values of ``tensors``, in place, one
    message per dtype and device."""
    groups = {}
    for t in tensors:
        groups.setdefault((backend.device_of(t.data), t.dtype.str), []).append(t)
    for group in groups.values():
        xp = backend.get_array_module(group[0].data)
        flat = xp.concatenate([t.data.reshape(-1) for t in group])
        dist.broadcast(flat, src)
        start = 0
        for t in group:
            t.data[...] = flat[start:start + t.size].reshape(t.shape)
            start += t.size


class DistributedDataParallel(Module):
    """``DistributedDataParallel(module, bucket_cap_mb=25, broadcast_buffers=True)``.

    Call :func:`minigrad.distributed.init_process_group` first, and move and
    cast the model (``.to()``) before wrapping it.  ``.module`` is the wrapped
    model; ``state_dict()``/``load_state_dict()`` are the module's (no
    ``module.`` prefix), so a checkpoint loads into the bare model.  Every
    trained parameter must receive a gradient in every backward (the next
    forward raises otherwise); :meth:`no_sync` skips the averaging for
    gradient accumulation.  With one rank it only wraps.
    """

    def __init__(self, module, bucket_cap_mb: float = 25, broadcast_buffers: bool = True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: expected a minigrad Module, got "
                            f"{type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, "
                             f"got {bucket_cap_mb!r}")
        self.module = module
        self.bucket_cap_mb = float(bucket_cap_mb)
        self.broadcast_buffers = bool(broadcast_buffers)
        self.world_size = dist.get_world_size()
        self._sync = True
        self._buckets, self._where, self._ready, self._next = [], {}, set(), 0
        if self.world_size == 1:
            return
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, _describe(module))
        for rank in range(1, self.world_size):
            problem = _first_difference(everyone[0], everyone[rank], rank)
            if problem:
                raise ValueError(f"DistributedDataParallel: the model differs between ranks: "
                                 f"{problem}; every rank must build the same model")
        _broadcast_coalesced([p for p in module.parameters()] + list(module.buffers()))
        self._make_buckets(int(self.bucket_cap_mb * 2 ** 20))

    def _make_buckets(self, cap_bytes):
        """Last parameter first, a new bucket when the cap would be passed or
        the dtype/device changes; a parameter larger than the cap has its own."""
        named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        current, size, kind = [], 0, None
        groups = []
        for name, p in reversed(named):
            nbytes = p.size * p.dtype.itemsize
            p_kind = (backend.device_of(p.data), p.dtype)
            if current and (size + nbytes > cap_bytes or p_kind != kind):
                groups.append(current)
                current, size = [], 0
            current.append((name, p))
            size, kind = size + nbytes, p_kind
        if current:
            groups.append(current)
        for i, group in enumerate(groups):
            bucket = _Bucket([p for _, p in group], [n for n, _ in group])
            self._buckets.append(bucket)
            for start, (_, p) in zip(bucket.starts, group):
                self._where[id(p)] = (i, start)
                p.register_post_accumulate_grad_hook(self._grad_ready)

    # ---- backward: the bucket machinery ------------------------------------------------
    def _grad_ready(self, p):
        if not self._sync or id(p) not in self._where:
            return
        if id(p) in self._ready:
            raise RuntimeError(f"DistributedDataParallel: parameter {self._name(p)!r} got a "
                               f"second gradient before every parameter had one "
                               f"({self._missing()}); every trained parameter must take "
                               "part in the loss")
        b, start = self._where[id(p)]
        bucket = self._buckets[b]
        grad = p.grad.data
        if grad.dtype != bucket.buffer.dtype or (backend.device_of(grad)
                                                 != backend.device_of(bucket.buffer)):
            raise RuntimeError(f"DistributedDataParallel: parameter {self._name(p)!r} has a "
                               f"{grad.dtype} gradient on {backend.device_of(grad)}, its bucket "
                               f"was made for {bucket.buffer.dtype} on "
                               f"{backend.device_of(bucket.buffer)}; move or cast the model "
                               "before wrapping it")
        bucket.buffer[start:start + grad.size] = grad.reshape(-1)
        bucket.waiting -= 1
        self._ready.add(id(p))
        while self._next < len(self._buckets) and self._buckets[self._next].waiting == 0:
            started = self._buckets[self._next]
            started.work = dist.all_reduce(started.buffer, dist.ReduceOp.AVG, async_op=True)
            self._next += 1
        if self._next == len(self._buckets):
            self._finish()
        else:           # let MPI move the buckets in flight on (it progresses inside calls)
            for started in self._buckets[:self._next]:
                if not started.work.is_completed():
                    break

    def _finish(self):
        """Wait for every bucket; point each ``p.grad`` at its averaged values."""
        for bucket in self._buckets:
            bucket.work.wait()
            bucket.work = None
            for p, start in zip(bucket.params, bucket.starts):
                p.grad = Tensor._wrap(bucket.buffer[start:start + p.size].reshape(p.shape))
            bucket.waiting = len(bucket.params)
        self._ready.clear()
        self._next = 0

    def _name(self, p):
        b, start = self._where[id(p)]
        bucket = self._buckets[b]
        return bucket.names[bucket.starts.index(start)]

    def _missing(self):
        names = [n for bucket in self._buckets for n, p in zip(bucket.names, bucket.params)
                 if id(p) not in self._ready]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        return "still without one: " + ", ".join(map(repr, names[:5])) + more

    @contextlib.contextmanager
    def no_sync(self):
        """Inside this block backward keeps each rank's own gradients (they
        accumulate in ``.grad``); the first backward after it averages the sum."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    # ---- forward and state -----------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self._ready:
            raise RuntimeError(f"DistributedDataParallel: the last backward left parameters "
                               f"without a gradient ({self._missing()}); every trained "
                               "parameter must take part in the loss on every rank")
        if self.broadcast_buffers and self.training and self.world_size > 1:
            _broadcast_coalesced(list(self.module.buffers()))
        return self.module(*args, **kwargs)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict: bool = True):
        return self.module.load_state_dict(state_dict, strict=strict)

    def extra_repr(self):
        return (f"world_size={self.world_size}, bucket_cap_mb={self.bucket_cap_mb:g}, "
                f"buckets={len(self._buckets)}")


__all__ = ["DistributedDataParallel"]
