"""The run's checkpoint: everything needed to continue exactly (see
docs/training.md), saved atomically with :func:`minigrad.save` and checked
when it is loaded, so a damaged or foreign file is reported by name instead
of failing somewhere inside the resume."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..serialization import CheckpointError, load_npz, save_npz

__all__ = ["CHECKPOINT", "FORMAT", "VERSION", "save_checkpoint", "load_checkpoint",
           "checkpoint_path", "jsonable_args", "args_from_checkpoint", "resumed_args",
           "model_from_checkpoint", "RESUME_OVERRIDABLE"]

CHECKPOINT = "checkpoint.npz"
FORMAT = "minigrad-train-checkpoint"
VERSION = 1
# the entries every training checkpoint has (what train() writes)
ENTRIES = ("args", "model", "optimizer", "scheduler", "rng", "epoch", "iteration",
           "complete_epoch", "partial", "history", "best", "iterations", "elapsed",
           "mean_image", "classes", "dataset", "synthetic", "total_iterations", "epochs")
# arguments that may change on --resume without changing the result
RESUME_OVERRIDABLE = ("device", "prefetch", "stop_after", "quiet", "data_dir", "log_every")


def save_checkpoint(state: dict, path) -> None:
    """Write ``state`` to ``path`` atomically (a kill in the middle leaves the
    previous checkpoint intact, and its temporary file is removed next time)."""
    save_npz(dict(state, format=FORMAT, version=VERSION), path)


def checkpoint_path(path) -> Path:
    """The checkpoint file of a run folder, or ``path`` itself if it is a file."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path) -> dict:
    """Read and check a run's checkpoint (``path`` is the file or the run folder).

    Raises ``FileNotFoundError`` when there is none and :class:`CheckpointError`
    (naming the file) when it is damaged or not a training checkpoint."""
    path = checkpoint_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = load_npz(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a NumPy archive but not a minigrad training "
                              "checkpoint (it has no format entry)")
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > VERSION:
        raise CheckpointError(f"{path} is a training checkpoint of version "
                              f"{ckpt.get('version')!r}; this minigrad reads version {VERSION}")
    missing = [k for k in ENTRIES if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is an incomplete training checkpoint (no "
                              + ", ".join(missing) + ")")
    ckpt["path"] = str(path)
    return ckpt


def jsonable_args(args) -> dict:
    return {k: v for k, v in vars(args).items()
            if v is None or isinstance(v, (bool, int, float, str))}


def args_from_checkpoint(ckpt) -> argparse.Namespace:
    """The arguments a checkpointed run was started with (defaults for any
    argument that did not exist then)."""
    from .cli import build_parser
    args = build_parser().parse_args([])
    for k, v in ckpt["args"].items():
        setattr(args, k, v)
    return args


def resumed_args(args, ckpt, log):
    """The checkpoint's arguments, with those of RESUME_OVERRIDABLE given now."""
    from .cli import build_parser
    defaults = vars(build_parser().parse_args([]))
    ignored = [k for k, v in vars(args).items()
               if k not in RESUME_OVERRIDABLE + ("resume",) and v != defaults.get(k)]
    if ignored:
        log("note: with --resume the run keeps its own arguments; ignoring "
            + ", ".join("--" + k.replace("_", "-") for k in ignored))
    resumed = args_from_checkpoint(ckpt)
    for k in RESUME_OVERRIDABLE:
        v = getattr(args, k, None)
        if v is not None and v is not False:
            setattr(resumed, k, v)
    resumed.stop_after, resumed.resume, resumed.overwrite = args.stop_after, args.resume, False
    return resumed


def model_from_checkpoint(ckpt, device="cpu"):
    """Rebuild the model of a checkpoint (from its stored arguments) and load
    its weights.  Returns ``(model, args)``."""
    from .recipe import build_model
    args = args_from_checkpoint(ckpt)
    model = build_model(args, num_classes=len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    if device != "cpu":
        model.to(device)
    model.eval()
    return model, args
