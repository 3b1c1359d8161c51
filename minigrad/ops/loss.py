"""Losses: cross-entropy (fused log-softmax + negative log-likelihood) and NLL."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Function, Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_target(who, scores, target, reduction):
    """Validate (N, C) scores and (N,) integer class indices; return the
    target as an array on the scores' device."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{who}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    shape = tuple(scores.shape)
    if len(shape) != 2:
        raise ValueError(f"{who}: expected input of shape (N, C), got shape {shape}")
    t = target.data if isinstance(target, Tensor) else target
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{who}: target must hold integer class indices, got dtype {t.dtype}")
    if tuple(t.shape) != shape[:1]:
        raise ValueError(f"{who}: target of shape {tuple(t.shape)} does not match input of "
                         f"shape {shape}: expected target shape ({shape[0]},)")
    n, c = shape
    if t.size:
        host = backend.to_numpy(t)
        bad = host[(host < 0) | (host >= c)]
        if bad.size:
            shown = sorted(set(bad.tolist()))[:10]
            raise ValueError(f"{who}: target value(s) {shown} out of range for {c} classes "
                             f"(valid: 0 to {c - 1})")
    xp = backend.get_array_module(scores)
    return xp.asarray(t).astype(np.int64, copy=False)


def _reduce(per_sample, reduction):
    xp = backend.get_array_module(per_sample)
    if reduction == "mean":
        return xp.asarray(per_sample.mean())
    if reduction == "sum":
        return xp.asarray(per_sample.sum())
    return per_sample


def _spread(g, n, reduction):
    """dL/d(per-sample loss), shaped to broadcast against (N, C)."""
    if reduction == "mean":
        return g / g.dtype.type(n)
    if reduction == "sum":
        return g
    return g.reshape(n, 1)


class CrossEntropy(Function):
    """ℓ_n = −log softmax(x_n)[t_n] = logΣ_j e^(x_nj) − x_n,t_n, averaged over
    the batch (``reduction="mean"``), summed, or kept per sample.

    The log-sum-exp is taken as m + log Σ_j e^(x_nj − m), m = max_j x_nj,
    so large logits neither overflow nor lose precision.

    Backward (softmax and loss fused): ∂ℓ_n/∂x_nj = softmax(x_n)_j − [j = t_n],
    so for the mean dx = (softmax(x) − onehot(t)) / N.
    """

    def __init__(self, target, reduction="mean"):
        self.target, self.reduction = target, reduction

    def forward(self, x):
        xp = backend.get_array_module(x)
        n = x.shape[0]
        rows = xp.arange(n)
        m = x.max(axis=1, keepdims=True)
        e = xp.exp(x - m)
        total = e.sum(axis=1, keepdims=True)
        lse = m + xp.log(total)                        # (N, 1)
        per_sample = lse[:, 0] - x[rows, self.target]
        if self.needs_input_grad[0]:
            self.probs = e / total
        return _reduce(per_sample, self.reduction)

    def backward(self, g):
        xp = backend.get_array_module(g)
        n = self.probs.shape[0]
        d = self.probs.copy()
        d[xp.arange(n), self.target] -= 1
        return d * _spread(g, n, self.reduction)


class NLLLoss(Function):
    """ℓ_n = −y_n,t_n for log-probabilities y (N, C);  ∂ℓ_n/∂y_nj = −[j = t_n]."""

    def __init__(self, target, reduction="mean"):
        self.target, self.reduction = target, reduction

    def forward(self, y):
        xp = backend.get_array_module(y)
        self.shape = y.shape
        return _reduce(-y[xp.arange(y.shape[0]), self.target], self.reduction)

    def backward(self, g):
        xp = backend.get_array_module(g)
        n = self.shape[0]
        d = xp.zeros(self.shape, dtype=g.dtype)
        d[xp.arange(n), self.target] = -1
        return d * _spread(g, n, self.reduction)


def cross_entropy(logits, target, reduction="mean"):
    """Cross-entropy of logits (N, C) against integer class indices (N,)
    (``torch.nn.functional.cross_entropy``); ``target`` is an integer array or
    Tensor.  ``reduction``: "mean" (default), "sum" or "none"."""
    t = _check_target("cross_entropy", logits, target, reduction)
    return CrossEntropy(t, reduction)(logits)


def nll_loss(log_probs, target, reduction="mean"):
    """Negative log-likelihood of log-probabilities (N, C) (e.g. from
    :func:`log_softmax`) against integer class indices (N,)."""
    t = _check_target("nll_loss", log_probs, target, reduction)
    return NLLLoss(t, reduction)(log_probs)
