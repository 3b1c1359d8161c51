"""Training and evaluation helpers behind ``examples/train_cifar_resnet.py``.

The loop is the ResNet paper's CIFAR-10 recipe (Sec 4.2): SGD with momentum
0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 twice, per-pixel mean
subtraction, 4-pixel padding + random 32×32 crop + random horizontal flip.

What a run leaves in its folder (``--out``):

* ``metrics.csv``: one row per epoch: ``epoch, iteration, train_loss,
  train_err, val_err, test_loss, test_err, test_top5_err, lr, seconds``
  (errors are fractions in [0, 1]; ``train_err`` is measured on the augmented
  training batches during the epoch, in training mode, as the training curves
  of the paper's Fig. 6; ``lr`` is the rate of the epoch's last iteration;
  ``val_err`` is empty without ``--val-split``, test columns are empty on
  epochs skipped by ``--eval-every``);
* ``iterations.csv``: the loss, error and lr of every training batch
  (``iteration, epoch, loss, err, lr``);
* ``checkpoint.npz``: everything needed to continue exactly (see
  docs/training.md), written atomically after every epoch and when
  the run is interrupted;
* ``curves.png``: training and test error per epoch (like Fig. 6).

Resuming (``--resume DIR``) continues to exactly the weights and metrics an
uninterrupted run with the same arguments would reach: the model, optimizer
(momentum buffers), scheduler, minigrad's global generator and the data
loader's position are all restored; the loader's randomness is a function of
(seed, epoch, batch) (see :class:`minigrad.data.DataLoader`), so even a run
stopped in the middle of an epoch continues with the very batches it would
have seen.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from . import backend
from . import random as mg_random
from .serialization import atomic_write, load_npz, save_npz

__all__ = ["build_parser", "main", "train", "evaluate", "predict_logits", "topk_error",
           "load_data", "build_model", "lr_factor_fn", "load_checkpoint", "write_metrics_csv",
           "plot_curves", "TrainingInterrupted", "ConfigError", "DataBundle", "BANNER_SYNTHETIC"]

CHECKPOINT = "checkpoint.npz"
METRICS = "metrics.csv"
ITERATIONS = "iterations.csv"
ITER_COLUMNS = ["iteration", "epoch", "loss", "err", "lr"]
CURVES = "curves.png"
FORMAT = "minigrad-train-checkpoint"
COLUMNS = ["epoch", "iteration", "train_loss", "train_err", "val_err", "test_loss", "test_err",
           "test_top5_err", "lr", "seconds"]
PAPER_MILESTONES = (32000, 48000)
PAPER_ITERATIONS = 64000
DEFAULT_EPOCHS = 10
PLOT_EVERY_S = 30.0
# arguments that may change on --resume without changing the result
RESUME_OVERRIDABLE = ("device", "prefetch", "stop_after", "quiet", "data_dir")

BANNER_SYNTHETIC = "\n".join([
    "#" * 78,
    "#  NO CIFAR-10 DATA FOUND (and it could not be downloaded).",
    "#  TRAINING ON A SYNTHETIC DATASET INSTEAD: the numbers below say NOTHING",
    "#  about CIFAR-10.  Pass --data-dir (the folder with data_batch_1...), set",
    "#  $MINIGRAD_CIFAR10_DIR, or run once online to download it.",
    "#" * 78])


class ConfigError(ValueError):
    """Arguments that cannot work together (printed without a traceback)."""


class TrainingInterrupted(Exception):
    """Raised by :func:`train` after an interrupted run was checkpointed."""

    def __init__(self, message, checkpoint):
        super().__init__(message)
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_cifar_resnet.py",
        description="Train a CIFAR-10 ResNet / plain net / VGG with minigrad (ResNet paper, "
                    "Sec 4.2 recipe). See docs/training.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20",
                   help="any CIFAR model of minigrad.models (resnet20..1202, plain20..110, "
                        "vgg11_cifar..vgg19_cifar)")
    p.add_argument("--width", type=int, default=None,
                   help="ResNet/plain only: channels of the first stage (16 in the paper)")
    p.add_argument("--blocks-per-stage", type=int, default=None,
                   help="ResNet/plain only: override n (tiny nets for quick tests)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None,
                   help=f"epochs to train (default {DEFAULT_EPOCHS}; "
                        f"with --schedule paper: {PAPER_ITERATIONS} iterations)")
    g.add_argument("--iterations", type=int, default=None, help="train this many iterations")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", choices=("paper", "step", "cosine"), default="step",
                   help="paper: /10 at 32k and 48k iterations, stop at 64k (scaled to 50%%/75%% "
                        "of --iterations if given); step: /10 at 50%% and 75%% of the steps; "
                        "cosine: cosine decay to 0")
    p.add_argument("--warmup", type=int, default=None,
                   help="iterations at lr/10 first (default: 400 for resnet110/1202, else 0)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--no-augment", action="store_true",
                   help="no random crop / flip (only mean subtraction)")
    p.add_argument("--dataset", choices=("auto", "cifar10", "synthetic"), default="auto",
                   help="auto: CIFAR-10 if it can be found or downloaded, else a LOUDLY "
                        "announced synthetic set")
    p.add_argument("--data-dir", default=None,
                   help="folder with the CIFAR-10 python batches (or the .tar.gz)")
    p.add_argument("--no-download", action="store_true", help="never try to download")
    p.add_argument("--synthetic-size", type=int, default=5000,
                   help="training images of the synthetic set (test: a fifth of it)")
    p.add_argument("--subset", type=int, default=None,
                   help="use only the first N training images")
    p.add_argument("--val-split", type=int, default=0,
                   help="hold out N training images for validation (paper: 5000 of 50000)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<timestamp>)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run saved in DIR (or a checkpoint file)")
    p.add_argument("--prefetch", "--workers", dest="prefetch", type=int, default=2,
                   help="batches prepared ahead in a background thread (0: none)")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate on the test set every N epochs (and after the last)")
    p.add_argument("--eval-batch-size", type=int, default=250)
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (checkpointed, resumable) after N epochs of this invocation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
class DataBundle:
    """Train / val / test arrays (uint8 NCHW + int64) and where they came from."""

    def __init__(self, train, val, test, classes, name, source, synthetic, fallback=False):
        self.train, self.val, self.test = train, val, test
        self.fallback = fallback          # synthetic because CIFAR-10 could not be had
        self.classes, self.name, self.source, self.synthetic = classes, name, source, synthetic


def _find_cifar(args, log):
    from .data import CIFAR10, DatasetError, DatasetNotFoundError, default_cache_dir
    tried = []
    candidates = []
    if args.data_dir:
        candidates.append(("--data-dir", args.data_dir))
    if os.environ.get("MINIGRAD_CIFAR10_DIR"):
        candidates.append(("$MINIGRAD_CIFAR10_DIR", os.environ["MINIGRAD_CIFAR10_DIR"]))
    # the layout of a checkout: data/ inside it, or the shared data folder beside it
    for local in (Path("data") / "cifar-10-batches-py",
                  Path("..") / "shared" / "data" / "cifar-10-batches-py"):
        if local.is_dir():
            candidates.append(("local folder", str(local.resolve())))
    candidates.append(("cache", str(default_cache_dir())))
    for label, root in candidates:
        try:
            return CIFAR10(root, train=True), CIFAR10(root, train=False)
        except DatasetNotFoundError as exc:
            tried.append(f"{label} {root}")
            if label == "--data-dir":          # an explicit folder must be right
                raise
        except DatasetError:
            raise
    if args.no_download:
        raise DatasetNotFoundError("CIFAR-10 not found (looked in: " + "; ".join(tried)
                                   + ") and --no-download was given. Pass --data-dir.")
    log(f"CIFAR-10 not found (looked in: {'; '.join(tried)}); trying to download it "
        f"to {default_cache_dir()} ...")
    return (CIFAR10(default_cache_dir(), train=True, download=True),
            CIFAR10(default_cache_dir(), train=False))


def load_data(args, log=print) -> DataBundle:
    """The data the arguments ask for; with ``--dataset auto`` CIFAR-10 or, when
    it cannot be found or downloaded, the synthetic set (``synthetic=True``)."""
    from .data import DatasetError, SyntheticImages
    synthetic = args.dataset == "synthetic"
    fallback = False
    if not synthetic:
        try:
            train_set, test_set = _find_cifar(args, log)
            name, source, classes = "cifar10", str(train_set.source), list(train_set.classes)
        except DatasetError as exc:
            if args.dataset == "cifar10" or args.data_dir:
                raise
            log(f"could not get CIFAR-10: {exc}")
            synthetic = fallback = True
    if synthetic:
        n = int(args.synthetic_size)
        train_set = SyntheticImages(n, seed=args.seed)
        test_set = SyntheticImages(max(n // 5, 1), seed=args.seed + 10_000)
        name, source, classes = "synthetic", "SyntheticImages", list(train_set.classes)
    x, y = train_set.data, train_set.targets
    if args.subset:
        if args.subset > len(y):
            log(f"--subset {args.subset} is more than the {len(y)} training images; using all")
        x, y = x[:args.subset], y[:args.subset]
    val = None
    if args.val_split:
        if not 0 < args.val_split < len(y):
            raise ConfigError(f"--val-split {args.val_split} must be between 1 and "
                             f"{len(y) - 1} (the training images)")
        perm = np.random.default_rng([args.seed, 7]).permutation(len(y))
        keep, held = np.sort(perm[:-args.val_split]), np.sort(perm[-args.val_split:])
        val = (x[held], y[held])
        x, y = x[keep], y[keep]
    return DataBundle((x, y), val, (test_set.data, test_set.targets), classes, name, source,
                      synthetic, fallback)


# ---------------------------------------------------------------------------
# Model, schedule
# ---------------------------------------------------------------------------
def _check_model_name(name):
    from . import models
    if name not in models.list_models(dataset="cifar"):
        raise ConfigError(f"unknown CIFAR model {name!r}; choose one of "
                          + ", ".join(models.list_models(dataset="cifar")))


def build_model(args, num_classes=10):
    """``minigrad.models.create(args.model, ...)`` with --width / --blocks-per-stage."""
    from . import models
    _check_model_name(args.model)
    kwargs = {"num_classes": num_classes}
    if getattr(args, "width", None):
        kwargs["width"] = args.width
    if getattr(args, "blocks_per_stage", None):
        kwargs["blocks_per_stage"] = args.blocks_per_stage
    return models.create(args.model, **kwargs)


def default_warmup(args) -> int:
    if args.warmup is not None:
        return int(args.warmup)
    return 400 if args.model in ("resnet110", "resnet1202") else 0


def lr_factor_fn(schedule: str, total: int, warmup: int = 0):
    """The learning rate as a multiple of ``--lr`` at iteration ``it`` (0-based).

    * ``paper``: 1, then 0.1 from 32000 and 0.01 from 48000 iterations when
      ``total`` is the paper's 64000; for another total, the milestones sit at
      the same fractions (50 % and 75 %);
    * ``step``: 0.1 from 50 % and 0.01 from 75 % of ``total``;
    * ``cosine``: (1 + cos(π·it/total)) / 2;
    * warm-up: 0.1 during the first ``warmup`` iterations (ResNet-110: "0.01
      until the training error is below 80 % (about 400 iterations)"; here a
      fixed count).
    """
    if schedule in ("paper", "step"):
        if schedule == "paper" and total == PAPER_ITERATIONS:
            milestones = PAPER_MILESTONES
        else:
            milestones = (int(round(0.5 * total)), int(round(0.75 * total)))
    elif schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}: expected paper, step or cosine")

    def factor(it):
        if it < warmup:
            return 0.1
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total))
        return 0.1 ** sum(it >= m for m in milestones)
    return factor


def _plan(args, iters_per_epoch):
    """(total iterations, epochs) of the run."""
    if args.iterations:
        total = int(args.iterations)
    elif args.epochs:
        total = int(args.epochs) * iters_per_epoch
    elif args.schedule == "paper":
        total = PAPER_ITERATIONS
    else:
        total = DEFAULT_EPOCHS * iters_per_epoch
    return total, -(-total // iters_per_epoch)


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def topk_error(logits, labels, k=1) -> float:
    """Fraction of rows whose true label is not among the ``k`` highest scores."""
    logits, labels = np.asarray(backend.to_numpy(logits)), np.asarray(labels)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(1.0 - (topk == labels[:, None]).any(axis=1).mean())


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def ten_crop_views(x, padding=4):
    """The 10 views of a batch (N, C, H, W) used by ``--ten-crop``: pad by
    ``padding`` pixels (zeros = the mean after mean subtraction), take the 4
    corner crops and the centre crop of the original size (the centre crop
    is the original image), and the horizontal flip of each."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    offsets = [(0, 0), (0, 2 * padding), (2 * padding, 0), (2 * padding, 2 * padding),
               (padding, padding)]
    crops = [xp[:, :, oy:oy + h, ox:ox + w] for oy, ox in offsets]
    return crops + [v[..., ::-1] for v in crops]


def predict_logits(model, images, batch_size=500, transform=None, device="cpu",
                   scale=1.0 / 255, views=None):
    """Model outputs for uint8 ``images`` in evaluation mode without a graph.

    ``views(x) -> list of batches`` (flips, crops): the soft-max posteriors of
    the views are averaged and returned as log-probabilities; without views
    the raw logits are returned."""
    from .tensor import Tensor, no_grad
    was_training = model.training
    model.eval()
    outs = []
    try:
        with no_grad():
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].astype(np.float32) * np.float32(scale)
                if transform is not None:
                    x = transform(x, None)
                if views is None:
                    outs.append(_forward(model, x, device))
                else:
                    probs = [_softmax(_forward(model, np.ascontiguousarray(v), device)
                                      .astype(np.float64)) for v in views(x)]
                    outs.append(np.log(np.mean(probs, axis=0) + 1e-12))
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _forward(model, x, device):
    from .tensor import Tensor
    data = backend.to_device(x, device) if device != "cpu" else x
    out = model(Tensor(data))
    return backend.to_numpy(out.data)


def evaluate(model, images, labels, batch_size=500, transform=None, device="cpu",
             views=None) -> dict:
    """``{"loss", "top1_err", "top5_err", "n"}`` of a model on uint8 images."""
    logits = predict_logits(model, images, batch_size, transform, device, views=views)
    labels = np.asarray(labels)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(labels)), labels].mean()) if len(labels) else float("nan")
    return {"loss": loss, "top1_err": topk_error(logits, labels, 1),
            "top5_err": topk_error(logits, labels, 5), "n": int(len(labels))}


# ---------------------------------------------------------------------------
# Files: metrics, curves, checkpoints
# ---------------------------------------------------------------------------
def _readable(path):
    """Give a file written through a temporary file the usual permissions
    (``mkstemp`` creates it private, 0600; others should read run files)."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:
        pass


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_metrics_csv(rows, path) -> None:
    """Write the per-epoch rows (dicts) to ``path`` atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in COLUMNS])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
    _readable(path)


def write_iterations_csv(rows, path) -> None:
    """Write the per-iteration training loss / error / lr to ``path`` atomically."""
    buf = io.StringIO()
    buf.write(",".join(ITER_COLUMNS) + "\n")
    for it, ep, loss, err, lr in rows:
        buf.write(f"{int(it)},{int(ep)},{loss:.6g},{err:.6g},{lr:.6g}\n")
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
    _readable(path)


def read_metrics_csv(path) -> list:
    """Rows of a metrics.csv as dicts of floats (None for empty cells)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def plot_curves(rows, path, title="") -> None:
    """Training (dashed) and test (bold) error per epoch, like ResNet Fig. 6."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [r["epoch"] for r in rows]

    def col(name):
        return [np.nan if r.get(name) is None else 100 * r[name] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(ep, col("train_err"), "--", marker=".", label="train error")
    ax.plot(ep, col("test_err"), "-", lw=2, marker="o", ms=3, label="test error")
    if any(r.get("val_err") is not None for r in rows):
        ax.plot(ep, col("val_err"), ":", marker=".", label="val error")
    from matplotlib.ticker import MaxNLocator
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    ax2.plot(ep, [r["train_loss"] for r in rows], marker=".", label="train loss")
    ax2.plot(ep, [np.nan if r.get("test_loss") is None else r["test_loss"] for r in rows],
             marker=".", label="test loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("cross-entropy")
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(ep, [r["lr"] for r in rows], color="gray", alpha=0.5, lw=1, marker=".")
    ax3.set_yscale("log")
    ax3.set_ylabel("learning rate (gray)")
    ax2.legend(loc="upper right")
    fig.subplots_adjust(left=0.07, right=0.92, bottom=0.13, top=0.92, wspace=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    _readable(path)


def load_checkpoint(path) -> dict:
    """Read a run's checkpoint (``path`` is the file or the run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = load_npz(path)
    if ckpt.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a minigrad training checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def args_from_checkpoint(ckpt) -> argparse.Namespace:
    args = build_parser().parse_args([])
    for k, v in ckpt["args"].items():
        setattr(args, k, v)
    return args


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
class _StopFlag:
    """First Ctrl-C (or SIGTERM): finish the current batch, checkpoint, stop.
    Second Ctrl-C: stop at once (the last checkpoint stays)."""

    def __init__(self, log):
        self.set, self.signal, self.log, self._old = False, None, log, {}

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set, self.signal = True, signum
        self.log("\ninterrupt received: finishing this batch and saving a checkpoint "
                 "(press Ctrl-C again to quit without saving)")

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


def _jsonable_args(args):
    return {k: v for k, v in vars(args).items()
            if v is None or isinstance(v, (bool, int, float, str))}


def train(args, log=print) -> dict:
    """Run (or resume) training as described by ``args`` (from :func:`build_parser`).

    Returns a summary dict.  Raises :class:`TrainingInterrupted` after saving a
    checkpoint when stopped by Ctrl-C / SIGTERM."""
    import minigrad
    from tqdm import tqdm
    from .data import DataLoader, transforms as T
    from .nn import functional as F
    from .optim import SGD
    from .optim.lr_scheduler import LambdaLR
    from .tensor import Tensor

    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(args.resume)
        defaults = vars(build_parser().parse_args([]))
        ignored = [k for k, v in vars(args).items()
                   if k not in RESUME_OVERRIDABLE + ("resume",) and v != defaults.get(k)]
        if ignored:
            log("note: with --resume the run keeps its own arguments; ignoring "
                + ", ".join("--" + k.replace("_", "-") for k in ignored))
        overrides = {k: getattr(args, k) for k in RESUME_OVERRIDABLE}
        resume_from = args.resume
        args = args_from_checkpoint(ckpt)
        for k, v in overrides.items():
            if v is not None and v is not False:
                setattr(args, k, v)
        args.stop_after = overrides["stop_after"]
        args.resume = resume_from
        out = Path(ckpt["path"]).parent
    else:
        out = Path(args.out or Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.device == "cuda":
        backend.require_cupy()
    _check_model_name(args.model)
    out.mkdir(parents=True, exist_ok=True)

    data = load_data(args, log)
    if ckpt is None:            # later resumes use the very same data
        args.dataset, args.synthetic_fallback = data.name, data.fallback
    data.fallback = bool(getattr(args, "synthetic_fallback", data.fallback))
    if data.fallback:
        log(BANNER_SYNTHETIC)
    elif data.synthetic:
        log("training on the synthetic dataset (--dataset synthetic): a quick offline check, "
            "not CIFAR-10")
    (xtr, ytr), (xte, yte) = data.train, data.test
    mean = T.mean_image(xtr)
    augment = [] if args.no_augment else [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    train_tf = T.Compose([T.SubtractMean(mean)] + augment)
    eval_tf = T.SubtractMean(mean)

    minigrad.manual_seed(args.seed)
    model = build_model(args, num_classes=len(data.classes))
    if args.device == "cuda":
        model.to("cuda")
    optimizer = SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                    weight_decay=args.weight_decay)
    loader = DataLoader((xtr, ytr), batch_size=args.batch_size, shuffle=True, drop_last=False,
                        seed=args.seed, transform=train_tf, prefetch=args.prefetch)
    iters_per_epoch = len(loader)
    total, epochs = _plan(args, iters_per_epoch)
    warmup = default_warmup(args)
    scheduler = LambdaLR(optimizer, lr_factor_fn(args.schedule, total, warmup))

    history, iteration, elapsed = [], 0, 0.0
    per_iter = []                       # (iteration, epoch, loss, err, lr) of every batch
    best = {"test_err": None, "epoch": None}
    partial = {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        mg_random.set_rng_state(ckpt["rng"]["minigrad"])
        loader.load_state_dict(ckpt["rng"]["loader"])
        history = [dict(r) for r in ckpt["history"]]
        per_iter = [tuple(r) for r in np.asarray(ckpt["iterations"]).tolist()]
        iteration, elapsed = int(ckpt["iteration"]), float(ckpt["elapsed"])
        best = dict(ckpt["best"])
        partial = dict(ckpt["partial"])
        if iteration >= total:
            log(f"{out} holds a finished run ({len(history)} epochs, {iteration} iterations)")
        else:
            log(f"resuming {out} at epoch {loader.epoch + 1}"
                + (f", batch {loader.batch + 1}" if loader.batch else "")
                + f" (iteration {iteration} of {total})")

    def state(complete):
        return {"format": FORMAT, "version": 1, "args": _jsonable_args(args),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": {"minigrad": mg_random.get_rng_state(), "loader": loader.state_dict()},
                "epoch": loader.epoch, "iteration": iteration, "complete_epoch": complete,
                "partial": dict(partial), "history": history, "best": best,
                "iterations": np.array(per_iter, dtype=np.float64).reshape(-1, 5),
                "elapsed": elapsed, "mean_image": mean, "classes": data.classes,
                "dataset": data.name, "synthetic": data.synthetic, "total_iterations": total,
                "epochs": epochs}

    def save(complete=True):
        save_npz(state(complete), out / CHECKPOINT)
        _readable(out / CHECKPOINT)

    nparams = model.num_parameters()
    variant = "".join([f", width {args.width}" if args.width else "",
                       f", {args.blocks_per_stage} blocks/stage" if args.blocks_per_stage else ""])
    log(f"{args.model} ({nparams:,} parameters{variant}) on {data.name}: {len(ytr)} train, "
        + (f"{len(data.val[1])} val, " if data.val else "")
        + f"{len(yte)} test images; {epochs} epochs x {iters_per_epoch} iterations "
          f"(batch {args.batch_size}), schedule {args.schedule}"
        + (f" with {warmup} warm-up iterations" if warmup else "") + f"; saving to {out}")
    if ckpt is None:
        save()          # an epoch-0 checkpoint: a run stopped early can always resume
    epochs_this_run = 0
    last_plot = -math.inf
    stopped = None
    with _StopFlag(lambda m: tqdm.write(m, file=sys.stderr)) as flag:
        while iteration < total:
            epoch = loader.epoch + 1
            model.train()
            t0 = time.perf_counter()
            bar = tqdm(loader, total=len(loader), initial=loader.batch, leave=False,
                       desc=f"epoch {epoch}/{epochs}", disable=args.quiet, unit="batch",
                       dynamic_ncols=True, file=sys.stderr)
            seen_now = 0
            for x, y in bar:
                xb = backend.to_device(x, args.device) if args.device != "cpu" else x
                yb = backend.to_device(y, args.device) if args.device != "cpu" else y
                logits = model(Tensor(xb))
                loss = F.cross_entropy(logits, Tensor(yb))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                lr_used = optimizer.param_groups[0]["lr"]
                scheduler.step()
                iteration += 1
                pred = backend.to_numpy(logits.data).argmax(axis=1)
                partial["loss"] += float(loss.item()) * len(y)
                partial["errors"] += int((pred != y).sum())
                partial["seen"] += len(y)
                partial["last_lr"] = lr_used
                per_iter.append((iteration, epoch, float(loss.item()),
                                 float(np.mean(pred != y)), lr_used))
                seen_now += len(y)
                if not args.quiet:
                    rate = seen_now / (time.perf_counter() - t0)
                    bar.set_postfix(loss=f"{partial['loss'] / partial['seen']:.3f}",
                                    acc=f"{1 - partial['errors'] / partial['seen']:.1%}",
                                    lr=f"{lr_used:.3g}", speed=f"{rate:.0f} img/s")
                if flag.set or iteration >= total:
                    break
            bar.close()
            partial["seconds"] += time.perf_counter() - t0
            if flag.set and loader.batch not in (0, len(loader)) and iteration < total:
                save(complete=False)
                stopped = (epoch, loader.batch)
                break
            # ---- end of epoch: evaluate, record, checkpoint ----------------------
            last = iteration >= total
            row = {"epoch": epoch, "iteration": iteration,
                   "train_loss": partial["loss"] / max(partial["seen"], 1),
                   "train_err": partial["errors"] / max(partial["seen"], 1),
                   "lr": partial.get("last_lr", optimizer.param_groups[0]["lr"])}
            t1 = time.perf_counter()
            if data.val is not None:
                row["val_err"] = evaluate(model, *data.val, args.eval_batch_size, eval_tf,
                                          args.device)["top1_err"]
            if epoch % max(args.eval_every, 1) == 0 or last:
                ev = evaluate(model, xte, yte, args.eval_batch_size, eval_tf, args.device)
                row.update(test_loss=ev["loss"], test_err=ev["top1_err"],
                           test_top5_err=ev["top5_err"])
                if best["test_err"] is None or ev["top1_err"] < best["test_err"]:
                    best = {"test_err": ev["top1_err"], "epoch": epoch}
            row["seconds"] = partial["seconds"] + time.perf_counter() - t1
            elapsed += row["seconds"]
            history.append(row)
            if loader.batch:                   # stopped inside the epoch at the end of training
                loader.set_epoch(loader.epoch + 1)
            partial = {"loss": 0.0, "errors": 0, "seen": 0, "seconds": 0.0}
            save()
            write_metrics_csv(history, out / METRICS)
            write_iterations_csv(per_iter, out / ITERATIONS)
            # redraw at most every PLOT_EVERY_S seconds (drawing costs about a second)
            # and always after the last epoch or when stopping
            if (last or flag.set or time.monotonic() - last_plot >= PLOT_EVERY_S
                    or (args.stop_after and epochs_this_run + 1 >= args.stop_after)):
                try:
                    plot_curves(history, out / CURVES, title=f"{args.model} on {data.name}")
                except Exception as exc:  # a plotting problem must not stop training
                    log(f"(could not draw {CURVES}: {exc})")
                last_plot = time.monotonic()
            test_txt = (f"test err {row['test_err']:.2%} (top-5 {row['test_top5_err']:.2%})"
                        if row.get("test_err") is not None else "test not evaluated")
            val_txt = f", val err {row['val_err']:.2%}" if row.get("val_err") is not None else ""
            tqdm.write(f"epoch {epoch:3d}/{epochs}  train loss {row['train_loss']:.4f}  "
                       f"train err {row['train_err']:.2%}{val_txt}  {test_txt}  "
                       f"lr {row['lr']:.3g}  {row['seconds']:.1f}s")
            epochs_this_run += 1
            if flag.set:
                stopped = (epoch + 1, 0)
                break
            if args.stop_after and epochs_this_run >= args.stop_after and iteration < total:
                log(f"stopping after {epochs_this_run} epoch(s) as asked (--stop-after); "
                    f"continue with: --resume {out}")
                break

    if stopped is not None:
        epoch, batch = stopped
        where = (f"epoch {epoch}, after batch {batch} of {iters_per_epoch}" if batch
                 else f"the end of epoch {epoch - 1}")
        msg = (f"interrupted at {where} (iteration {iteration} of {total}). Checkpoint saved "
               f"to {out / CHECKPOINT}; continue exactly where it stopped with:\n"
               f"    python examples/train_cifar_resnet.py --resume {out}")
        raise TrainingInterrupted(msg, out / CHECKPOINT)

    done = iteration >= total
    tested = [r for r in history if r.get("test_err") is not None]
    summary = {"model": args.model, "dataset": data.name, "synthetic": data.synthetic,
               "fallback": data.fallback,
               "epochs": len(history), "planned_epochs": epochs, "iterations": iteration,
               "finished": done,
               "final_test_err": tested[-1]["test_err"] if tested else None,
               "final_test_top5_err": tested[-1]["test_top5_err"] if tested else None,
               "best_test_err": best["test_err"], "best_epoch": best["epoch"],
               "seconds_per_epoch": (sum(r["seconds"] for r in history) / len(history)
                                     if history else None),
               "out": str(out)}
    return summary


def format_summary(s) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:.2%}"
    state = "" if s["finished"] else f" (of {s['planned_epochs']}, not finished)"
    return (f"{s['model']} on {s['dataset']}: {s['epochs']} epochs{state}, final test error "
            f"{pct(s['final_test_err'])} (top-5 {pct(s['final_test_top5_err'])}), best "
            f"{pct(s['best_test_err'])} at epoch {s['best_epoch']}, "
            f"{(s['seconds_per_epoch'] or 0):.1f} s/epoch, saved in {s['out']}")


def main(argv=None) -> int:
    """Entry point of ``examples/train_cifar_resnet.py``; returns the exit code."""
    from .data import DatasetError
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not backend.cuda_available():
        print("error: --device cuda was asked for but no CUDA GPU is usable here (CuPy is "
              "missing or sees no GPU). Install minigrad[cuda] on a machine with an NVIDIA "
              "GPU, or use --device cpu.", file=sys.stderr)
        return 2
    try:
        summary = train(args)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\naborted without saving; the last checkpoint (if any) is intact.",
              file=sys.stderr)
        return 130
    except (DatasetError, FileNotFoundError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if summary["fallback"]:
        print(BANNER_SYNTHETIC)
    print(format_summary(summary))
    return 0


# ---------------------------------------------------------------------------
# Evaluating a saved run
# ---------------------------------------------------------------------------
def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild the model of a checkpoint (from its stored arguments) and load
    its weights.  Returns ``(model, args)``."""
    args = args_from_checkpoint(ckpt)
    model = build_model(args, num_classes=len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    if device != "cpu":
        model.to(device)
    model.eval()
    return model, args


def evaluate_checkpoint(path, split="test", flip=False, ten_crop=False, dense=False,
                        dense_scale=None, data_dir=None, batch_size=250, device="cpu",
                        log=print) -> dict:
    """Top-1 / top-5 error of a saved run on its test (or val) images.

    * ``flip``: average the soft-max posteriors of each image and its mirror;
    * ``ten_crop``: average over the 10 views of :func:`ten_crop_views`;
    * ``dense``: VGG dense evaluation (:func:`minigrad.models.dense_predict`)
      of the images rescaled to ``dense_scale`` pixels (default: their size),
      with flip averaging as in the VGG paper.
    """
    from .data import transforms as T
    ckpt = load_checkpoint(path)
    model, args = model_from_checkpoint(ckpt, device)
    if data_dir:
        args.data_dir = data_dir
    args.no_download = True
    data = load_data(args, log)
    if split == "val":
        if data.val is None:
            raise ConfigError("this run has no validation split (--val-split was not used)")
        images, labels = data.val
    elif split == "train":
        images, labels = data.train
    else:
        images, labels = data.test
    tf = T.SubtractMean(np.asarray(ckpt["mean_image"], dtype=np.float32))
    if sum(map(bool, (flip, ten_crop, dense))) > 1:
        raise ConfigError("choose one of --flip, --ten-crop, --dense")
    if dense:
        from .models import VGG, dense_predict, to_fully_convolutional
        if not isinstance(model, VGG):
            raise ConfigError(f"--dense is VGG dense evaluation; {args.model} is not a VGG")
        dense_net = to_fully_convolutional(model)
        probs = []
        for start in range(0, len(images), batch_size):
            x = tf(images[start:start + batch_size].astype(np.float32) / 255, None)
            if dense_scale and dense_scale != x.shape[-1]:
                x = T.resize_bilinear(x, dense_scale, dense_scale)
            xd = backend.to_device(x, device) if device != "cpu" else x
            probs.append(backend.to_numpy(dense_predict(dense_net, xd, flip=True).data))
        logits = np.log(np.concatenate(probs) + 1e-12)
        method = f"dense (scale {dense_scale or images.shape[-1]}, with flips)"
    else:
        views = None
        method = "single view"
        if flip:
            views, method = (lambda x: [x, x[..., ::-1]]), "image + flip"
        elif ten_crop:
            views, method = ten_crop_views, "10 crops (4 corners + centre of the 4-padded image, " \
                                           "and their flips)"
        logits = predict_logits(model, images, batch_size, tf, device, views=views)
    labels = np.asarray(labels)
    return {"model": args.model, "dataset": data.name, "split": split, "n": int(len(labels)),
            "method": method, "epochs": len(ckpt["history"]),
            "top1_err": topk_error(logits, labels, 1), "top5_err": topk_error(logits, labels, 5),
            "synthetic": data.synthetic}


def layer_response_stds(model, images, which="last_bn"):
    """Standard deviation of layer responses on one batch, in evaluation mode
    (ResNet Fig. 7), measured with forward hooks.

    ``which="last_bn"``: the output of each block's last BN (the residual
    branch F(x) after BN, before the addition; ``block.last_bn``);
    ``"all"``: every BN that follows a 3×3 conv (the stem's and both of each
    block's), the paper's "outputs of each 3×3 layer, after BN and before
    other nonlinearity".  The std is over all elements of the (N, C, H, W)
    response.  Returns a list of ``(name, std)`` in layer order.
    """
    from .tensor import Tensor, no_grad
    if not hasattr(model, "blocks"):
        raise ConfigError(f"{type(model).__name__} has no residual/plain blocks to measure")
    targets = []
    if which == "all":
        targets.append(("bn1", model.bn1))
        for name, m in model.named_modules():
            if name.startswith("layer") and name.rsplit(".", 1)[-1] in ("bn1", "bn2") \
                    and name.count(".") == 2:
                targets.append((name, m))
    elif which == "last_bn":
        named = {id(m): n for n, m in model.named_modules()}
        targets = [(named[id(b.last_bn)], b.last_bn) for b in model.blocks()]
    else:
        raise ConfigError(f"which must be 'last_bn' or 'all', got {which!r}")
    stds = {}
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: stds.__setitem__(name, float(np.std(
            backend.to_numpy(out.data), dtype=np.float64)))) for name, m in targets]
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(Tensor(np.ascontiguousarray(images, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [(name, stds[name]) for name, _ in targets]
