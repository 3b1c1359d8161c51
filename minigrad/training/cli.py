"""The command line of ``examples/train_cifar_resnet.py``: its arguments, every
number checked as it is parsed, and ``main``, which turns every expected
failure into one ``error:`` line and an exit code:

* 0: trained (or a finished run resumed: its summary is printed again);
* 1: the operating system refused (a full disk, a folder that cannot be
  written); the last checkpoint is intact;
* 2: the arguments, the data, the run folder or a checkpoint are wrong;
* 130: interrupted; the run was checkpointed and continues with ``--resume``.

Under ``mpiexec`` every rank runs ``main``: rank 0 alone prints, an error
found while setting up ends every rank with its exit code, and any other
error on one rank (after its ``error:`` line or traceback) aborts them all
(``minigrad.distributed.abort``), so no rank is left waiting for it.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

from .recipe import DEFAULT_EPOCHS, PAPER_ITERATIONS

__all__ = ["build_parser", "main", "format_summary", "report_error", "error_message",
           "positive_int",
           "nonnegative_int", "positive_float", "nonnegative_float", "momentum_float"]


# ---------------------------------------------------------------------------
# Checked numbers: argparse prints "error: argument --x: ..." and exits with 2
# ---------------------------------------------------------------------------
def _number(kind, test, wanted):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if (kind is float and not math.isfinite(value)) or not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    parse.__name__ = wanted        # argparse names the type in some messages
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
momentum_float = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_cifar_resnet.py",
        description="Train a CIFAR-10 ResNet / plain net / VGG with minigrad (ResNet paper, "
                    "Sec 4.2 recipe). See docs/training.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="resnet20",
                   help="any CIFAR model of minigrad.models (resnet20..1202, plain20..110, "
                        "vgg11_cifar..vgg19_cifar)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="ResNet/plain only: channels of the first stage (16 in the paper)")
    p.add_argument("--blocks-per-stage", type=positive_int, default=None,
                   help="ResNet/plain only: override n (tiny nets for quick tests)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=positive_int, default=None,
                   help=f"epochs to train (default {DEFAULT_EPOCHS}; "
                        f"with --schedule paper: {PAPER_ITERATIONS} iterations)")
    g.add_argument("--iterations", type=positive_int, default=None,
                   help="train this many iterations")
    p.add_argument("--batch-size", type=positive_int, default=128,
                   help="images per step, all processes together: under mpiexec -n N each "
                        "takes batch/N of them (N must divide it), so --lr, the schedule and "
                        "the steps per epoch stay those of one process")
    p.add_argument("--lr", type=positive_float, default=0.1,
                   help="learning rate for --batch-size (whatever the number of processes)")
    p.add_argument("--schedule", choices=("paper", "step", "cosine"), default="step",
                   help="paper: /10 at 32k and 48k iterations, stop at 64k (scaled to 50%%/75%% "
                        "of --iterations if given); step: /10 at 50%% and 75%% of the steps; "
                        "cosine: cosine decay to 0")
    p.add_argument("--warmup", type=nonnegative_int, default=None,
                   help="iterations at lr/10 first (default: 400 for resnet110/1202, else 0)")
    p.add_argument("--momentum", type=momentum_float, default=0.9)
    p.add_argument("--weight-decay", type=nonnegative_float, default=1e-4)
    p.add_argument("--no-augment", action="store_true",
                   help="no random crop / flip (only mean subtraction)")
    p.add_argument("--dataset", choices=("auto", "cifar10", "synthetic"), default="auto",
                   help="auto: CIFAR-10 if it can be found or downloaded, else a LOUDLY "
                        "announced synthetic set")
    p.add_argument("--data-dir", default=None,
                   help="folder with the CIFAR-10 python batches (or the .tar.gz)")
    p.add_argument("--no-download", action="store_true", help="never try to download")
    p.add_argument("--synthetic-size", type=positive_int, default=5000,
                   help="training images of the synthetic set (test: a fifth of it)")
    p.add_argument("--subset", type=positive_int, default=None,
                   help="use only the first N training images")
    p.add_argument("--val-split", type=nonnegative_int, default=0,
                   help="hold out N training images for validation (paper: 5000 of 50000)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under mpiexec: batch-norm statistics of the whole batch "
                        "(SyncBatchNorm) instead of each process's share; nothing in one process")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/<model>-<timestamp>)")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run saved in DIR (or a checkpoint file)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (its checkpoint, metrics and plot)")
    p.add_argument("--prefetch", "--workers", dest="prefetch", type=nonnegative_int, default=2,
                   help="batches prepared ahead in a background thread (0: none)")
    p.add_argument("--eval-every", type=positive_int, default=1,
                   help="evaluate on the test set every N epochs (and after the last)")
    p.add_argument("--eval-batch-size", type=positive_int, default=250)
    p.add_argument("--log-every", type=positive_int, default=None, metavar="N",
                   help="fetch the running loss and error from the device every N iterations; "
                        "None: 1 on the CPU, where it costs nothing, 50 on a GPU")
    p.add_argument("--stop-after", type=positive_int, default=None, metavar="N",
                   help="stop (checkpointed, resumable) after N epochs of this invocation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def format_summary(s) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v:.2%}"
    state = "" if s["finished"] else f" (of {s['planned_epochs']}, not finished)"
    return (f"{s['model']} on {s['dataset']}: {s['epochs']} epochs{state}, final test error "
            f"{pct(s['final_test_err'])} (top-5 {pct(s['final_test_top5_err'])}), best "
            f"{pct(s['best_test_err'])} at epoch {s['best_epoch']}, "
            f"{(s['seconds_per_epoch'] or 0):.1f} s/epoch, saved in {s['out']}")


def describe_os_error(exc: OSError) -> str:
    """``path: reason`` for an OSError (without Python's ``[Errno N]``)."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def error_message(exc) -> "tuple | None":
    """``(exit code, message)`` of an expected failure (2: arguments, data,
    run folder, checkpoint; 1: the operating system); None for anything else
    (a bug: its traceback should show)."""
    from ..data import DatasetError
    from .errors import CheckpointError, ConfigError, RunFolderError
    if isinstance(exc, (DatasetError, ConfigError, CheckpointError, RunFolderError)):
        return 2, str(exc)
    if isinstance(exc, OSError):
        return (2 if isinstance(exc, FileNotFoundError) else 1), describe_os_error(exc)
    return None


def report_error(exc) -> "int | None":
    """Print the one ``error:`` line of an expected failure and return its exit
    code (see :func:`error_message`); None for anything else."""
    failure = error_message(exc)
    if failure is None:
        return None
    print(f"error: {failure[1]}", file=sys.stderr)
    return failure[0]


def main(argv=None) -> int:
    """Entry point of ``examples/train_cifar_resnet.py``; returns the exit code.

    Joins the process group first (a group of one without ``mpiexec``) and
    leaves it at the end, unless it was joined before."""
    from .. import distributed as dist
    joined = not dist.is_initialized()
    if joined:
        try:
            dist.init_process_group()
        except (RuntimeError, ValueError) as exc:       # no mpi4py, a bad backend name
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        return _main(argv, dist.get_rank(), dist.get_world_size())
    except BaseException as exc:
        if not isinstance(exc, SystemExit):   # a bug: keep the group, whose hook aborts all
            joined = False
        raise
    finally:
        if joined:
            dist.destroy_process_group()


def _parse(argv, rank):
    """The arguments; only rank 0 prints usage, errors and --help."""
    if rank == 0:
        return build_parser().parse_args(argv)
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        return build_parser().parse_args(argv)


def _main(argv, rank, world) -> int:
    from .. import backend
    from .. import distributed as dist
    from .data import BANNER_SYNTHETIC
    from .errors import StoppedOnAllRanks, TrainingInterrupted
    from .loop import train
    args = _parse(argv, rank)
    say = (lambda *a, **k: print(*a, **k)) if rank == 0 else (lambda *a, **k: None)
    if args.device == "cuda" and not backend.cuda_available():
        say("error: --device cuda was asked for but no CUDA GPU is usable here (CuPy is "
            "missing or sees no GPU). Install minigrad[cuda] on a machine with an NVIDIA "
            "GPU, or use --device cpu.", file=sys.stderr)
        return 2
    try:
        summary = train(args)
    except StoppedOnAllRanks as exc:
        if exc.message is not None:
            print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except TrainingInterrupted as exc:               # every rank stopped at the same step
        say(str(exc), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        say("\naborted without saving; the last checkpoint (if any) is intact.",
            file=sys.stderr)
        code = 130
    except Exception as exc:
        code = report_error(exc)
        if code is None:
            raise
    else:
        if summary["fallback"]:
            say(BANNER_SYNTHETIC)
        say(format_summary(summary))
        return 0
    if world > 1:                # the other ranks cannot know: end them too
        dist.abort(code)
    return code
