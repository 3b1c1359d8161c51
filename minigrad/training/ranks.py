"""The training loop on several processes: ``mpiexec -n N python
examples/train_cifar_resnet.py ...`` (docs/distributed.md, "The training
script").

Started without ``mpiexec`` the run is a group of one and nothing here
changes what it computes or writes.  With N ranks:

* ``--batch-size`` is the **global** batch: each rank takes ``batch / N``
  images of it (a :class:`~minigrad.data.DistributedSampler` share of the
  epoch's order), the gradients are averaged over the ranks, so the step, the
  learning rate, the schedule and the iterations per epoch are those of one
  process on the whole batch;
* every rank augments its images with its own seed (derived from ``--seed``
  and the rank), so no two ranks crop and flip alike;
* rank 0 alone owns the run folder (its lock, the refuse/overwrite rules, the
  checkpoint, the CSV files, the plot) and alone prints; the others receive
  the resumed checkpoint from it;
* the printed and saved numbers are those of all ranks together: the
  training loss and error over every rank's images, the validation and test
  errors of the whole set (each rank evaluates every N-th batch of it, the
  outputs are gathered and scored as one process would score them);
* an error that every rank learns of (one found while setting up) ends every
  rank with one ``error:`` line and exit code 2; the Ctrl-C / SIGTERM flag is
  combined over the ranks after every step, so all stop at the same step.
"""
from __future__ import annotations

import numpy as np

from .. import distributed as dist
from .errors import ConfigError, StoppedOnAllRanks

__all__ = ["Ranks", "AgreedStop"]


def _silent(*args, **kwargs):
    pass


def _attempt(fn):
    """``(fn(), None)``, or ``(None, (exit code, message))`` when fn raised an
    error meant for the user; any other exception (a bug) propagates."""
    from .cli import error_message
    try:
        return fn(), None
    except Exception as exc:
        failure = error_message(exc)
        if failure is None:
            raise
        return None, failure


class Ranks:
    """This process's place among the ranks of a run (rank 0 of 1 when no
    process group is initialized) and the few things the loop does
    differently with more than one."""

    def __init__(self):
        initialized = dist.is_initialized()
        self.rank = dist.get_rank() if initialized else 0
        self.world = dist.get_world_size() if initialized else 1
        self.main, self.many = self.rank == 0, self.world > 1

    def log(self, log):
        """``log`` on rank 0, a function that prints nothing on the others."""
        return log if self.main else _silent

    def describe(self, args) -> str:
        """How the batch is shared, for the announcement ('' in one process)."""
        if not self.many:
            return ""
        bn = "SyncBatchNorm" if getattr(args, "sync_bn", False) else "batch norm per process"
        return f" = {self.world} processes x {args.batch_size // self.world}, {bn}"

    def launcher(self) -> str:
        """The start of the command line that continues this run."""
        return f"mpiexec -n {self.world} " if self.many else ""

    # ---- setting up: errors that every rank learns of ----------------------------------
    def _stop_if_failed(self, failures):
        """Raise :class:`StoppedOnAllRanks` on every rank when ``failures``
        (one entry per rank, None for success) holds one; rank 0 reports the
        first."""
        for rank, failure in enumerate(failures):
            if failure is not None:
                code, message = failure
                where = f"(rank {rank} of {self.world}) " if rank else ""
                raise StoppedOnAllRanks(code, where + message if self.main else None)

    def from_main(self, fn):
        """``fn()`` on rank 0 alone; every rank receives its result, or stops
        with its error."""
        if not self.many:
            return fn()
        shared = list(_attempt(fn)) if self.main else [None, None]
        dist.broadcast_object_list(shared, src=0)
        self._stop_if_failed([shared[1]])
        return shared[0]

    def build_everywhere(self, build, args):
        """``build(args)`` on every rank, rank 0 first (a download of the data
        then happens once, and rank 0's choice of data set, e.g. the
        synthetic fallback, becomes every rank's).  Returns this rank's
        result; a failure on any rank stops every rank."""
        if not self.many:
            return build(args)
        result, failure = _attempt(lambda: build(args)) if self.main else (None, None)
        shared = [failure, args]
        dist.broadcast_object_list(shared, src=0)
        self._stop_if_failed([shared[0]])
        if not self.main:
            result, failure = _attempt(lambda: build(shared[1]))
        everyone = [None] * self.world
        dist.all_gather_object(everyone, failure)
        self._stop_if_failed(everyone)
        return result

    def check_resume(self, ckpt):
        """A run continues exactly only with the number of processes it had."""
        before = int(ckpt.get("world_size", 1))
        if before != self.world:
            def procs(n):
                return f"{n} process" + ("es" if n > 1 else "")
            how = ("without mpiexec" if before == 1 else
                   f"with mpiexec -n {before} python examples/train_cifar_resnet.py --resume ...")
            raise ConfigError(f"{ckpt['path']} was trained by {procs(before)}, this is "
                              f"{procs(self.world)}: each would see other images and batch "
                              f"statistics, so the run could not continue exactly; resume it {how}")

    # ---- the pieces of the recipe -----------------------------------------------------------
    def per_rank_batch(self, batch_size) -> int:
        if batch_size % self.world:
            raise ConfigError(f"--batch-size {batch_size} is the global batch of all "
                              f"{self.world} processes and must be a multiple of {self.world}")
        return batch_size // self.world

    def loader_seed(self, seed) -> int:
        """The seed of this rank's augmentation: ``seed`` itself in one process."""
        if not self.many:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1, np.uint64)[0]
                   % 2 ** 63)

    def sampler(self, train, seed):
        """This rank's share of every epoch (None in one process: the loader
        shuffles by itself, as it always has)."""
        if not self.many:
            return None
        from ..data import DistributedSampler
        return DistributedSampler(train, self.world, self.rank, shuffle=True, seed=seed)

    def wrap(self, model, sync_bn=False):
        """The model in :class:`DistributedDataParallel` (and with
        :class:`SyncBatchNorm` for ``sync_bn``); the model itself in one process."""
        if not self.many:
            return model
        from ..nn import SyncBatchNorm
        from ..nn.parallel import DistributedDataParallel
        if sync_bn:
            model = SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model)

    # ---- numbers of all ranks together ------------------------------------------------------
    def sum_steps(self, steps):
        """The steps of :meth:`StepMetrics.fetch` with every rank's images:
        the loss averaged over all of them, the errors and counts summed."""
        if not self.many or not steps:
            return steps
        sums = np.array([[loss * n, errors, n] for _, _, loss, errors, n, _ in steps],
                        dtype=np.float64)
        dist.all_reduce(sums)
        return [(it, ep, total / count, int(errors), int(count), lr)
                for (it, ep, _, _, _, lr), (total, errors, count) in zip(steps, sums.tolist())]

    def evaluate(self, model, images, labels, batch_size, transform, device) -> dict:
        """:func:`evaluate` on the whole of ``images``: rank r computes batches
        r, r + N, ... with rank 0's batch-norm statistics (those the
        checkpoint holds), and every rank scores the gathered outputs."""
        from .evaluation import evaluate, predict_logits, score_logits
        if not self.many:
            return evaluate(model, images, labels, batch_size, transform, device)
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        starts = range(0, len(images), batch_size)
        mine = [predict_logits(model, images[s:s + batch_size], batch_size, transform, device)
                for s in starts[self.rank::self.world]]
        everyone = [None] * self.world
        dist.all_gather_object(everyone, mine)
        batches = [everyone[b % self.world][b // self.world] for b in range(len(starts))]
        logits = np.concatenate(batches) if batches else np.zeros((0, 0), np.float32)
        return score_logits(logits, labels)

    def agreed(self, flag) -> "AgreedStop":
        return AgreedStop(flag, self)


class AgreedStop:
    """The Ctrl-C / SIGTERM flag as every rank sees it.

    A signal may reach one rank only, or the ranks at different moments; if
    each rank read its own flag, one could stop while the others wait for it
    in the next step.  :meth:`check` (called by every rank at the same
    points) makes the flag set everywhere once it is set anywhere; between
    checks ``set`` keeps its value.  In one process ``set`` is the flag
    itself."""

    def __init__(self, flag, ranks):
        self.flag, self.ranks, self._set = flag, ranks, False

    @property
    def set(self) -> bool:
        return self._set if self.ranks.many else self.flag.set

    def check(self) -> None:
        if self.ranks.many and not self._set:
            raised = np.array([int(self.flag.set)], np.int64)
            dist.all_reduce(raised, dist.ReduceOp.MAX)
            self._set = bool(raised[0])
