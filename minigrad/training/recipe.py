"""The ResNet paper's CIFAR-10 recipe (Sec 4.2), piece by piece: the model,
the optimiser, the learning-rate schedule and the augmentation.

SGD with momentum 0.9 and weight decay 1e-4, batch 128, lr 0.1 divided by 10
at 32k and 48k iterations and stopped at 64k; per-pixel mean subtraction;
4-pixel padding, a random 32×32 crop and a random horizontal flip.
ResNet-110 warms up at lr 0.01 for about 400 iterations.
"""
from __future__ import annotations

import math

from .errors import ConfigError

__all__ = ["PAPER_MILESTONES", "PAPER_ITERATIONS", "DEFAULT_EPOCHS", "check_model_name",
           "build_model", "build_optimizer", "default_warmup", "lr_factor_fn", "plan",
           "transforms"]

PAPER_MILESTONES = (32000, 48000)
PAPER_ITERATIONS = 64000
DEFAULT_EPOCHS = 10


def check_model_name(name):
    from .. import models
    if name not in models.list_models(dataset="cifar"):
        raise ConfigError(f"unknown CIFAR model {name!r}; choose one of "
                          + ", ".join(models.list_models(dataset="cifar")))


def build_model(args, num_classes=10):
    """``minigrad.models.create(args.model, ...)`` with --width / --blocks-per-stage."""
    from .. import models
    check_model_name(args.model)
    kwargs = {"num_classes": num_classes}
    if getattr(args, "width", None):
        kwargs["width"] = args.width
    if getattr(args, "blocks_per_stage", None):
        kwargs["blocks_per_stage"] = args.blocks_per_stage
    return models.create(args.model, **kwargs)


def build_optimizer(model, args):
    """SGD with momentum and weight decay on every parameter (the paper's)."""
    from ..optim import SGD
    return SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
               weight_decay=args.weight_decay)


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


def build_scheduler(optimizer, args, total):
    """The lr schedule as a ``LambdaLR`` stepped after every iteration."""
    from ..optim.lr_scheduler import LambdaLR
    return LambdaLR(optimizer, lr_factor_fn(args.schedule, total, default_warmup(args)))


def plan(args, iters_per_epoch):
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


def transforms(mean, augment=True):
    """(training transform, evaluation transform): subtract the per-pixel mean
    image; for training also pad by 4, crop 32×32 at random and flip half."""
    from ..data import transforms as T
    extra = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    return T.Compose([T.SubtractMean(mean)] + extra), T.SubtractMean(mean)
