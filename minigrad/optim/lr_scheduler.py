"""Learning-rate schedules (names and semantics of ``torch.optim.lr_scheduler``).

A scheduler changes ``group["lr"]`` of an optimizer each time its ``step()`` is
called (once per epoch or once per iteration: your choice, be consistent).
Building a scheduler performs step 0, so the first update already uses the
schedule's first value::

    for it in range(iterations):
        loss = ...; loss.backward(); optimizer.step(); optimizer.zero_grad()
        scheduler.step()

Each scheduler multiplies the *current* ``lr`` by a factor at the steps where
its schedule changes (PyTorch's "chainable" form), so two schedulers stepped
together on one optimizer compose by multiplying their factors.

The schedules of the two papers
-------------------------------
VGG: lr 1e-2, divided by 10 when the validation accuracy stops improving::

    ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=...)
    scheduler.step(val_accuracy)          # once per epoch

ResNet on CIFAR-10: lr 0.1, divided by 10 at 32k and 48k iterations::

    MultiStepLR(opt, milestones=[32000, 48000], gamma=0.1)   # stepped per iteration

ResNet-110 adds a warm-up: lr 0.01 for the first ~400 iterations, then 0.1,
then the same divisions at 32k and 48k.  Either chain a warm-up with the decay
(both stepped every iteration, factors multiply)::

    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = ChainedScheduler([ConstantLR(opt, factor=0.1, total_iters=400),
                                  MultiStepLR(opt, milestones=[32000, 48000], gamma=0.1)])

or hand over from one to the other (the second one counts from 0 at the hand-over,
so its milestones are shifted by 400)::

    scheduler = SequentialLR(opt, [ConstantLR(opt, factor=0.1, total_iters=400),
                                   MultiStepLR(opt, milestones=[31600, 47600], gamma=0.1)],
                             milestones=[400])

Both give lr 0.01 for iterations 0-399, 0.1 for 400-31999, 0.01 for 32000-47999
and 0.001 from 48000 on (tests/test_optim.py checks this).

Every scheduler has ``state_dict()`` / ``load_state_dict()`` (plain numbers and
lists, saved with :func:`minigrad.save`) to resume training exactly.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter

from .optimizer import Optimizer


class LRScheduler:
    """Base class.  Subclasses implement ``get_lr()`` (the chainable rule, from
    the current ``group["lr"]``) and may implement ``_get_closed_form_lr()``
    (the lr as a function of ``last_epoch`` alone, used by ``step(epoch)``)."""

    def __init__(self, optimizer, last_epoch: int = -1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: {type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                                   "when resuming with last_epoch != -1")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates set by the latest step (one per group)."""
        return list(self._last_lr)

    def step(self, epoch=None):
        """Advance one step (or jump to ``epoch``, using the closed form)."""
        self._step_count += 1
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = int(epoch)
            closed = getattr(self, "_get_closed_form_lr", None)
            values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _groups_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    # ---- saving and resuming ---------------------------------------------------
    _not_saved = ("optimizer",)

    def state_dict(self) -> dict:
        """All attributes except the optimizer (and functions)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items() if k not in self._not_saved}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in self._not_saved})


class LambdaLR(LRScheduler):
    """lr = initial_lr · lr_lambda(step) (one function, or one per group).
    The functions are not saved by ``state_dict``: pass them again."""

    _not_saved = ("optimizer", "lr_lambdas")

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"LambdaLR: expected {n} lr_lambdas, got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps:
    lr = initial_lr · gamma ** (step // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(step_size, int) or step_size <= 0:
            raise ValueError(f"StepLR: step_size must be a positive int, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._groups_lr()
        return [lr * self.gamma for lr in self._groups_lr()]

    def _get_closed_form_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` at each milestone:
    lr = initial_lr · gamma ** (number of milestones <= step)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = [int(m) for m in milestones]
        if milestones != sorted(milestones):
            raise ValueError(f"MultiStepLR: milestones must be increasing, got {milestones}")
        self.milestones, self.gamma = milestones, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        hits = Counter(self.milestones)[self.last_epoch]
        if hits == 0:
            return self._groups_lr()
        return [lr * self.gamma ** hits for lr in self._groups_lr()]

    def _get_closed_form_lr(self):
        k = bisect_right(self.milestones, self.last_epoch)
        return [base * self.gamma ** k for base in self.base_lrs]


class ConstantLR(LRScheduler):
    """lr = initial_lr · factor for the first ``total_iters`` steps, then initial_lr."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        if not 0 < factor <= 1:
            raise ValueError(f"ConstantLR: factor must be in (0, 1], got {factor!r}")
        self.factor, self.total_iters = factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = self._groups_lr()
        if self.last_epoch == 0:
            return [lr * self.factor for lr in lrs]
        if self.last_epoch != self.total_iters:
            return lrs
        return [lr * (1.0 / self.factor) for lr in lrs]

    def _get_closed_form_lr(self):
        on = self.last_epoch >= self.total_iters
        return [base * (self.factor + on * (1 - self.factor)) for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor``
    over ``total_iters`` steps, then stays:
    lr = initial_lr · (start + (end − start) · min(step, total_iters) / total_iters)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError("LinearLR: start_factor must be in (0, 1] and end_factor in "
                             f"[0, 1], got {start_factor!r}, {end_factor!r}")
        self.start_factor, self.end_factor = start_factor, end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lrs = self._groups_lr()
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in lrs]
        if self.last_epoch > self.total_iters:
            return lrs
        s, e = self.start_factor, self.end_factor
        ratio = 1.0 + (e - s) / (self.total_iters * s + (self.last_epoch - 1) * (e - s))
        return [lr * ratio for lr in lrs]

    def _get_closed_form_lr(self):
        s, e = self.start_factor, self.end_factor
        t = min(self.total_iters, self.last_epoch)
        return [base * (s + (e - s) * t / self.total_iters) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from initial_lr to ``eta_min`` over ``T_max`` steps:
    lr = eta_min + (initial_lr − eta_min) · (1 + cos(π · step / T_max)) / 2."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, m = self.last_epoch, self.T_max, self.eta_min
        lrs = self._groups_lr()
        if t == 0:
            return lrs
        if self._step_count == 1 and t > 0:
            return [m + (base - m) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - m) * (1 - math.cos(math.pi / T)) / 2
                    for lr, base in zip(lrs, self.base_lrs)]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (lr - m) + m for lr in lrs]

    def _get_closed_form_lr(self):
        t, T, m = self.last_epoch, self.T_max, self.eta_min
        return [m + (base - m) * (1 + math.cos(math.pi * t / T)) / 2 for base in self.base_lrs]


class ChainedScheduler(LRScheduler):
    """Step several schedulers together; their factors multiply."""

    def __init__(self, schedulers, optimizer=None):
        schedulers = list(schedulers)
        if not schedulers:
            raise ValueError("ChainedScheduler needs at least one scheduler")
        optimizer = optimizer or schedulers[0].optimizer
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ValueError("ChainedScheduler: all schedulers must drive the same optimizer")
        self._schedulers = schedulers
        self.optimizer = optimizer
        self._last_lr = self._groups_lr()

    def step(self):
        for s in self._schedulers:
            s.step()
        self._last_lr = self._groups_lr()

    def state_dict(self):
        return {"_schedulers": [s.state_dict() for s in self._schedulers],
                "_last_lr": list(self._last_lr)}

    def load_state_dict(self, state_dict):
        for s, sd in zip(self._schedulers, state_dict["_schedulers"]):
            s.load_state_dict(sd)
        self._last_lr = list(state_dict["_last_lr"])


class SequentialLR(LRScheduler):
    """Use ``schedulers[0]`` until ``milestones[0]``, then ``schedulers[1]``
    (restarted from its step 0) until ``milestones[1]``, and so on."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), [int(m) for m in milestones]
        if len(schedulers) < 1 or len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expected {len(schedulers) - 1} milestone(s) for "
                             f"{len(schedulers)} schedulers, got {len(milestones)}")
        if any(s.optimizer is not optimizer for s in schedulers):
            raise ValueError("SequentialLR: every scheduler must drive the given optimizer")
        self._schedulers, self._milestones = schedulers, milestones
        self.optimizer = optimizer
        self.last_epoch = last_epoch + 1
        # undo what the schedulers did when they were built, then start the first one
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for s in schedulers:
            s.last_epoch -= 1
        schedulers[0]._initial_step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler.step(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "_milestones": list(self._milestones),
                "_last_lr": list(self._last_lr),
                "_schedulers": [s.state_dict() for s in self._schedulers]}

    def load_state_dict(self, state_dict):
        for s, sd in zip(self._schedulers, state_dict["_schedulers"]):
            s.load_state_dict(sd)
        self.last_epoch = state_dict["last_epoch"]
        self._milestones = list(state_dict["_milestones"])
        self._last_lr = list(state_dict["_last_lr"])


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has stopped improving for
    ``patience`` steps (VGG: divide by 10 when validation accuracy plateaus).

    ``mode="min"`` for a loss, ``"max"`` for an accuracy.  A value is an
    improvement when it beats the best by ``threshold`` (relative, or absolute
    with ``threshold_mode="abs"``).  After a reduction, ``cooldown`` steps pass
    before bad steps are counted again; the lr never goes below ``min_lr``, and
    changes smaller than ``eps`` are skipped.  Call ``step(metric)``.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: {type(optimizer).__name__} is not an Optimizer")
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError("ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', "
                             f"got {threshold_mode!r}")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = [float(m) for m in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * n
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.threshold_mode, self.mode = threshold_mode, mode
        self.cooldown, self.eps = cooldown, eps
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = self._groups_lr()

    def is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics):
        current = float(metrics.item() if hasattr(metrics, "item") else metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._groups_lr()
