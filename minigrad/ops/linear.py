"""The fully connected layer ``y = x Wᵀ + b`` (one op, forward and backward).

The weight has PyTorch's layout (out_features, in_features), so a row of W is
the weights of one output unit.  ``x`` may have any number of leading axes.
"""
from __future__ import annotations

from ..tensor import Function


class Linear(Function):
    """y = x Wᵀ + b for x (..., in), W (out, in), b (out,).

    Backward: dx = dY W,  dW = dYᵀ x (summed over all leading axes),  db = Σ dY.
    """

    def forward(self, x, weight, bias=None):
        y = x @ weight.T
        if bias is not None:
            y = y + bias
        if any(self.needs_input_grad):
            self.x, self.weight = x, weight
        return y

    def backward(self, grad):
        need = self.needs_input_grad
        w = self.weight
        dx = grad @ w if need[0] else None
        dw = None
        if need[1]:
            g2 = grad.reshape(-1, w.shape[0])
            dw = g2.T @ self.x.reshape(-1, w.shape[1])
        db = grad.reshape(-1, w.shape[0]).sum(axis=0) if len(need) > 2 and need[2] else None
        return dx, dw, db


def linear(x, weight, bias=None):
    """Fully connected layer ``y = x Wᵀ + b`` (``torch.nn.functional.linear``);
    ``x`` (..., in_features), ``weight`` (out_features, in_features)."""
    xs, ws = tuple(x.shape), tuple(weight.shape)
    if len(ws) != 2:
        raise ValueError(f"linear: weight must be 2-D (out_features, in_features), got shape {ws}")
    if len(xs) < 1 or xs[-1] != ws[1]:
        raise ValueError(f"linear: input has {xs[-1] if xs else 0} features (last axis) but "
                         f"weight expects {ws[1]} (input shape {xs}, weight shape {ws})")
    if bias is None:
        return Linear()(x, weight)
    if tuple(bias.shape) != (ws[0],):
        raise ValueError(f"linear: bias must have shape ({ws[0]},), got {tuple(bias.shape)}")
    return Linear()(x, weight, bias)
