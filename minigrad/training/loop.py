"""The training loop: the ResNet paper's CIFAR-10 recipe (Sec 4.2), top to bottom.

:func:`train` takes the run folder (locked while the run writes to it), sets up
the recipe (:class:`Run`: data, model, SGD, schedule, data loader), then runs
epochs: every step is forward, cross-entropy, backward, SGD update, lr
update; every epoch ends with an evaluation on the test images, a row of
metrics and a checkpoint.  Ctrl-C (or SIGTERM) finishes the step and saves a
checkpoint from which ``--resume`` continues exactly.

Exactness: the model, optimizer (momentum buffers), scheduler, minigrad's
global generator and the data loader's position are all restored; the
loader's randomness is a function of (seed, epoch, batch) (see
:class:`minigrad.data.DataLoader`), so even a run stopped in the middle of an
epoch continues with the very batches it would have seen.

Under ``mpiexec`` every rank runs this loop on its share of each batch; what
changes with several ranks is in ``ranks.py`` (:class:`Ranks`): rank 0 owns
the run folder and prints, the metrics are those of all ranks together, and
the ranks agree on where to stop.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time

from .. import backend
from .. import random as mg_random
from .checkpoint import CHECKPOINT, checkpoint_path, jsonable_args, load_checkpoint, \
    resumed_args, save_checkpoint
from .data import BANNER_SYNTHETIC, load_data
from .device import BatchCopier, StepMetrics
from .errors import TrainingInterrupted
from .interrupt import StopFlag
from .metrics import CURVES, ITERATIONS, METRICS, plot_curves, write_iterations_csv, \
    write_metrics_csv
from .ranks import Ranks
from .recipe import build_model, build_optimizer, build_scheduler, check_model_name, \
    default_warmup, plan, transforms
from .runfolder import RunFolder, run_folder_of

__all__ = ["train", "Run"]

PLOT_EVERY_S = 30.0


def train(args, log=print) -> dict:
    """Run (or resume) training as described by ``args`` (from
    :func:`minigrad.training.build_parser`).

    Returns a summary dict.  Raises :class:`TrainingInterrupted` after saving a
    checkpoint when stopped by Ctrl-C / SIGTERM, and :class:`RunFolderError`
    when the run folder is in use, or holds a run that is neither resumed nor
    replaced with ``--overwrite``.  Under ``mpiexec``, an error found while
    setting up is raised on every rank as :class:`StoppedOnAllRanks`."""
    ranks = Ranks()
    log = ranks.log(log)
    with contextlib.ExitStack() as held:
        args, ckpt, folder = ranks.from_main(lambda: _open_run(args, log, ranks, held))
        run = ranks.build_everywhere(
            lambda a: Run(a, folder, log, resumed=ckpt is not None, ranks=ranks), args)
        run.distribute()
        if ckpt is not None:
            run.restore(ckpt)
        else:
            run.save_checkpoint()   # an epoch-0 checkpoint: a run stopped early can resume
        run.announce()
        with StopFlag(ranks.log(lambda m: _tqdm().write(m, file=sys.stderr))) as flag:
            stopped = run.fit(ranks.agreed(flag))
    if stopped is not None:
        raise TrainingInterrupted(run.where_stopped(*stopped), folder / CHECKPOINT)
    return run.summary()


def _open_run(args, log, ranks, held):
    """Take the run folder (its lock held until ``held`` closes) and the
    checkpoint to resume, or clear the folder for a new run (``--overwrite``).
    Returns (arguments, checkpoint or None, folder).  Rank 0's work alone."""
    folder = RunFolder(run_folder_of(args))
    if args.resume and not checkpoint_path(args.resume).exists():
        raise FileNotFoundError(f"no checkpoint at {checkpoint_path(args.resume)}")
    if not args.resume:
        check_model_name(args.model)
    held.enter_context(folder.locked())
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        ranks.check_resume(ckpt)
        args = resumed_args(args, ckpt, log)
    else:
        ckpt = None
        ranks.per_rank_batch(args.batch_size)
        folder.refuse_or_clear(getattr(args, "overwrite", False), log)
    if args.device == "cuda":
        backend.require_cupy()
    return args, ckpt, folder


def _tqdm():
    from tqdm import tqdm
    return tqdm


class Run:
    """One training run: the pieces of the recipe and the record of what
    happened so far (everything the checkpoint holds)."""

    def __init__(self, args, folder, log=print, resumed=False, ranks=None):
        import minigrad
        from ..data import DataLoader
        from ..data import transforms as T
        self.args, self.folder, self.log = args, folder, log
        self.ranks = ranks = ranks or Ranks()
        # the data: the per-pixel mean of the training images is subtracted
        self.data = data = load_data(args, log)
        if not resumed:                   # later resumes use the very same data
            args.dataset, args.synthetic_fallback = data.name, data.fallback
        data.fallback = bool(getattr(args, "synthetic_fallback", data.fallback))
        if data.fallback:
            log(BANNER_SYNTHETIC)
        elif data.synthetic:
            log("training on the synthetic dataset (--dataset synthetic): a quick offline "
                "check, not CIFAR-10")
        self.mean = T.mean_image(data.train[0])
        train_tf, self.eval_tf = transforms(self.mean, augment=not args.no_augment)
        # the model, SGD with momentum and weight decay, the lr schedule
        minigrad.manual_seed(args.seed)
        self.model = self.net = build_model(args, num_classes=len(data.classes))
        if args.device == "cuda":
            self.model.to("cuda")
        self.optimizer = build_optimizer(self.model, args)
        # shuffled, augmented mini-batches (their order and augmentation are the
        # loader's: a function of seed, epoch and batch); with several ranks
        # each takes its share of every batch
        sampler = ranks.sampler(data.train, args.seed)
        self.loader = DataLoader(data.train, batch_size=ranks.per_rank_batch(args.batch_size),
                                 shuffle=sampler is None, drop_last=False,
                                 seed=ranks.loader_seed(args.seed), transform=train_tf,
                                 prefetch=args.prefetch, sampler=sampler)
        self.total, self.epochs = plan(args, len(self.loader))
        self.scheduler = build_scheduler(self.optimizer, args, self.total)
        # moving batches in and numbers out
        self.to_device = BatchCopier(args.device)
        self.steps = StepMetrics()
        self.log_every = getattr(args, "log_every", None) or (50 if args.device == "cuda" else 1)
        # the record
        self.history, self.per_iter = [], []     # epoch rows; (it, epoch, loss, err, lr)
        self.iteration, self.elapsed = 0, 0.0
        self.best = {"test_err": None, "epoch": None}
        self.partial = _new_epoch_sums()
        self.epochs_this_run, self.last_plot = 0, -math.inf

    def distribute(self):
        """With several ranks: the model in DistributedDataParallel (rank 0's
        weights on every rank); ``self.net`` stays the bare model."""
        self.model = self.ranks.wrap(self.net, getattr(self.args, "sync_bn", False))

    # ---- the epochs ------------------------------------------------------------
    def fit(self, flag):
        """Train until the planned iterations are done, ``--stop-after`` epochs
        have passed, or ``flag`` is set.  Returns None, or (epoch, batch) where
        an interrupted run stopped."""
        while self.iteration < self.total:
            epoch = self.loader.epoch + 1
            self.train_epoch(epoch, flag)
            mid_epoch = self.loader.batch not in (0, len(self.loader))
            if flag.set and mid_epoch and self.iteration < self.total:
                self.save_checkpoint(complete=False)
                return epoch, self.loader.batch
            self.end_epoch(epoch, flag)
            if flag.set:
                return epoch + 1, 0
            if self.args.stop_after and self.epochs_this_run >= self.args.stop_after \
                    and self.iteration < self.total:
                self.log(f"stopping after {self.epochs_this_run} epoch(s) as asked "
                         f"(--stop-after); continue with: --resume {self.folder}")
                break
        return None

    def train_epoch(self, epoch, flag):
        """One pass over the shuffled training batches (or what is left of it)."""
        self.model.train()
        t0 = time.perf_counter()
        bar = _tqdm()(self.loader, total=len(self.loader), initial=self.loader.batch,
                      leave=False, desc=f"epoch {epoch}/{self.epochs}", unit="batch",
                      disable=self.args.quiet or not self.ranks.main, dynamic_ncols=True,
                      file=sys.stderr)
        images = 0
        for x, y in bar:
            loss, errors = self.train_step(x, y)
            lr = self.optimizer.param_groups[0]["lr"]       # the rate this step used
            self.scheduler.step()
            self.iteration += 1
            images += len(y)
            self.steps.add(self.iteration, epoch, loss, errors, len(y), lr)
            if self.iteration % self.log_every == 0:
                self.sync_metrics()
                self.show_progress(bar, images / (time.perf_counter() - t0))
            flag.check()
            if flag.set or self.iteration >= self.total:
                break
        self.sync_metrics()
        bar.close()
        self.partial["seconds"] += time.perf_counter() - t0

    def train_step(self, x, y):
        """One SGD step on a batch: forward, loss, backward, update.  Returns the
        loss and the number of wrong predictions, as arrays on the device."""
        from ..nn import functional as F
        from ..tensor import Tensor
        logits = self.model(Tensor(self.to_device(x)))
        loss = F.cross_entropy(logits, y)      # y on the host: checked there, then copied
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        errors = (logits.data.argmax(axis=1) != self.to_device(y)).sum()
        return loss.data, errors

    def sync_metrics(self):
        """Bring the losses and error counts of the steps since the last sync
        to the host (one copy) and add them to the epoch's sums."""
        for it, ep, loss, errors, n, lr in self.ranks.sum_steps(self.steps.fetch()):
            self.partial["loss"] += loss * n
            self.partial["errors"] += errors
            self.partial["seen"] += n
            self.partial["last_lr"] = lr
            self.per_iter.append((it, ep, loss, errors / n, lr))

    def show_progress(self, bar, images_per_s):
        if self.args.quiet or not self.partial["seen"]:
            return
        p = self.partial
        bar.set_postfix(loss=f"{p['loss'] / p['seen']:.3f}",
                        acc=f"{1 - p['errors'] / p['seen']:.1%}",
                        lr=f"{p['last_lr']:.3g}", speed=f"{images_per_s:.0f} img/s")

    def end_epoch(self, epoch, flag):
        """Evaluate, record the epoch's row, checkpoint, write the files, report."""
        last = self.iteration >= self.total
        t1 = time.perf_counter()
        row = self.epoch_row(epoch, evaluate_test=epoch % self.args.eval_every == 0 or last)
        row["seconds"] = self.partial["seconds"] + time.perf_counter() - t1
        self.elapsed += row["seconds"]
        self.history.append(row)
        if self.loader.batch:                  # stopped inside the epoch at the end of training
            self.loader.set_epoch(self.loader.epoch + 1)
        self.partial = _new_epoch_sums()
        self.epochs_this_run += 1
        flag.check()
        if not self.ranks.main:                # rank 0 writes the files and reports
            return
        self.save_checkpoint()
        write_metrics_csv(self.history, self.folder / METRICS)
        write_iterations_csv(self.per_iter, self.folder / ITERATIONS)
        stopping = last or flag.set or (self.args.stop_after
                                        and self.epochs_this_run >= self.args.stop_after)
        self.maybe_plot(force=stopping)
        self.print_row(row)

    def epoch_row(self, epoch, evaluate_test):
        """The epoch's training sums, and the validation / test errors."""
        p, args = self.partial, self.args
        row = {"epoch": epoch, "iteration": self.iteration,
               "train_loss": p["loss"] / max(p["seen"], 1),
               "train_err": p["errors"] / max(p["seen"], 1),
               "lr": p.get("last_lr", self.optimizer.param_groups[0]["lr"])}
        if self.data.val is not None:
            row["val_err"] = self.ranks.evaluate(self.net, *self.data.val, args.eval_batch_size,
                                                 self.eval_tf, args.device)["top1_err"]
        if evaluate_test:
            ev = self.ranks.evaluate(self.net, *self.data.test, args.eval_batch_size,
                                     self.eval_tf, args.device)
            row.update(test_loss=ev["loss"], test_err=ev["top1_err"],
                       test_top5_err=ev["top5_err"])
            if self.best["test_err"] is None or ev["top1_err"] < self.best["test_err"]:
                self.best = {"test_err": ev["top1_err"], "epoch": epoch}
        return row

    def maybe_plot(self, force):
        """Redraw curves.png at most every PLOT_EVERY_S seconds (drawing costs
        about a second), and always when the run stops."""
        if not force and time.monotonic() - self.last_plot < PLOT_EVERY_S:
            return
        try:
            plot_curves(self.history, self.folder / CURVES,
                        title=f"{self.args.model} on {self.data.name}")
        except Exception as exc:  # a plotting problem must not stop training
            self.log(f"(could not draw {CURVES}: {exc})")
        self.last_plot = time.monotonic()

    def print_row(self, row):
        test = (f"test err {row['test_err']:.2%} (top-5 {row['test_top5_err']:.2%})"
                if row.get("test_err") is not None else "test not evaluated")
        val = f", val err {row['val_err']:.2%}" if row.get("val_err") is not None else ""
        _tqdm().write(f"epoch {row['epoch']:3d}/{self.epochs}  train loss "
                      f"{row['train_loss']:.4f}  train err {row['train_err']:.2%}{val}  {test}"
                      f"  lr {row['lr']:.3g}  {row['seconds']:.1f}s")

    # ---- the checkpoint ------------------------------------------------------------
    def state(self, complete=True) -> dict:
        import numpy as np
        return {"args": jsonable_args(self.args), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": {"minigrad": mg_random.get_rng_state(),
                        "loader": self.loader.state_dict()},
                "epoch": self.loader.epoch, "iteration": self.iteration,
                "complete_epoch": complete, "partial": dict(self.partial),
                "history": self.history, "best": self.best,
                "iterations": np.array(self.per_iter, dtype=np.float64).reshape(-1, 5),
                "elapsed": self.elapsed, "mean_image": self.mean, "classes": self.data.classes,
                "dataset": self.data.name, "synthetic": self.data.synthetic,
                "total_iterations": self.total, "epochs": self.epochs,
                "world_size": self.ranks.world}

    def save_checkpoint(self, complete=True):
        """Rank 0 writes the checkpoint (atomically); every rank holds the same state."""
        if self.ranks.main:
            save_checkpoint(self.state(complete), self.folder / CHECKPOINT)

    def restore(self, ckpt):
        """Continue from a checkpoint of this run."""
        import numpy as np
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        mg_random.set_rng_state(ckpt["rng"]["minigrad"])
        self.loader.load_state_dict(dict(ckpt["rng"]["loader"], seed=self.loader.seed))
        self.history = [dict(r) for r in ckpt["history"]]
        self.per_iter = [tuple(r) for r in np.asarray(ckpt["iterations"]).tolist()]
        self.iteration, self.elapsed = int(ckpt["iteration"]), float(ckpt["elapsed"])
        self.best, self.partial = dict(ckpt["best"]), dict(ckpt["partial"])
        if self.iteration >= self.total:
            self.log(f"{self.folder} holds a finished run ({len(self.history)} epochs, "
                     f"{self.iteration} iterations)")
        else:
            self.log(f"resuming {self.folder} at epoch {self.loader.epoch + 1}"
                     + (f", batch {self.loader.batch + 1}" if self.loader.batch else "")
                     + f" (iteration {self.iteration} of {self.total})")

    # ---- reports -------------------------------------------------------------------
    def announce(self):
        a, d = self.args, self.data
        variant = "".join([f", width {a.width}" if a.width else "",
                           f", {a.blocks_per_stage} blocks/stage" if a.blocks_per_stage else ""])
        warmup = default_warmup(a)
        self.log(f"{a.model} ({self.model.num_parameters():,} parameters{variant}) on {d.name}: "
                 f"{len(d.train[1])} train, " + (f"{len(d.val[1])} val, " if d.val else "")
                 + f"{len(d.test[1])} test images; {self.epochs} epochs x {len(self.loader)} "
                 f"iterations (batch {a.batch_size}{self.ranks.describe(a)}), schedule {a.schedule}"
                 + (f" with {warmup} warm-up iterations" if warmup else "")
                 + f"; saving to {self.folder}")

    def where_stopped(self, epoch, batch) -> str:
        where = (f"epoch {epoch}, after batch {batch} of {len(self.loader)}" if batch
                 else f"the end of epoch {epoch - 1}")
        return (f"interrupted at {where} (iteration {self.iteration} of {self.total}). "
                f"Checkpoint saved to {self.folder / CHECKPOINT}; continue exactly where it "
                f"stopped with:\n    {self.ranks.launcher()}python examples/train_cifar_resnet.py "
                f"--resume {self.folder}")

    def summary(self) -> dict:
        tested = [r for r in self.history if r.get("test_err") is not None]
        seconds = [r["seconds"] for r in self.history]
        return {"model": self.args.model, "dataset": self.data.name,
                "synthetic": self.data.synthetic, "fallback": self.data.fallback,
                "epochs": len(self.history), "planned_epochs": self.epochs,
                "iterations": self.iteration, "finished": self.iteration >= self.total,
                "final_test_err": tested[-1]["test_err"] if tested else None,
                "final_test_top5_err": tested[-1]["test_top5_err"] if tested else None,
                "best_test_err": self.best["test_err"], "best_epoch": self.best["epoch"],
                "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else None,
                "out": str(self.folder)}


def _new_epoch_sums():
    return {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}
