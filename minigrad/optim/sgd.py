"""Stochastic gradient descent with momentum, exactly as ``torch.optim.SGD``.

For each parameter p with gradient g, at every step::

    g = g + weight_decay · p                       (L2 penalty, added to the gradient)
    b = g                              first step  (momentum buffer starts at the gradient)
    b = momentum · b + (1 − dampening) · g         later steps
    g = g + momentum · b   if nesterov   else   g = b
    p = p − lr · g

This is the update of both papers (VGG: momentum 0.9, weight decay 5e-4;
ResNet: momentum 0.9, weight decay 1e-4).  Note that the learning rate
multiplies the momentum buffer, not the other way round (Sutskever et al.'s
form differs when the learning rate changes).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from .. import cuda as _gpu   # the one-kernel GPU update (kernels/sgd.cu)
from ..tensor import no_grad
from .optimizer import Optimizer, required


class SGD(Optimizer):
    """``SGD(params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False)``.

    ``p.data`` is updated in place (so the arrays a model holds are the ones
    that change); gradient arrays are never modified (two parameters may
    share one gradient array).
    """

    def __init__(self, params, lr=required, momentum=0.0, dampening=0.0,
                 weight_decay=0.0, nesterov=False):
        if lr is not required and (not isinstance(lr, (int, float)) or lr < 0):
            raise ValueError(f"SGD: invalid learning rate {lr!r} (must be >= 0)")
        if momentum < 0:
            raise ValueError(f"SGD: invalid momentum {momentum!r} (must be >= 0)")
        if weight_decay < 0:
            raise ValueError(f"SGD: invalid weight_decay {weight_decay!r} (must be >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0, "
                             f"got momentum={momentum}, dampening={dampening}")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    def step(self, closure=None):
        """Update every parameter that has a gradient.  ``closure`` (optional)
        re-computes and returns the loss, as in PyTorch."""
        loss = None
        if closure is not None:
            from ..tensor import enable_grad
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                lr, momentum = group["lr"], group["momentum"]
                dampening, wd = group["dampening"], group["weight_decay"]
                nesterov = group["nesterov"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    g = p.grad.data
                    if g.shape != p.shape:
                        raise ValueError(f"SGD: gradient of shape {g.shape} for a parameter "
                                         f"of shape {p.shape}")
                    if self._fast_update(p, g, lr, momentum, dampening, wd, nesterov):
                        continue
                    if self._gpu_update(p, g, lr, momentum, dampening, wd, nesterov):
                        continue
                    if wd != 0:
                        g = g + wd * p.data                 # a new array: p.grad is untouched
                    if momentum != 0:
                        state = self.state.setdefault(p, {})
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = g.copy()
                        else:
                            buf *= momentum                 # the buffer is ours: in place
                            buf += (1 - dampening) * g
                        g = g + momentum * buf if nesterov else buf
                    p.data -= lr * g
        return loss

    def _fast_update(self, p, g, lr, momentum, dampening, wd, nesterov):
        """The same update in one parallel pass (kernels/cpu_numba.py) for
        contiguous NumPy float arrays when the CPU fast path is on; returns
        False (nothing done) otherwise."""
        data = p.data
        if not (config.use_fast(data, g) and data.flags.c_contiguous and g.flags.c_contiguous):
            return False
        kern = config.cpu_kernels()
        t = data.dtype.type
        if momentum == 0:
            kern.sgd_update(data.reshape(-1), g.reshape(-1), t(lr), t(wd))
            return True
        state = self.state.setdefault(p, {})
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:
            buf = state["momentum_buffer"] = np.empty_like(data)
        kern.sgd_momentum_update(data.reshape(-1), g.reshape(-1), buf.reshape(-1), t(lr),
                                 t(momentum), t(dampening), t(wd), bool(nesterov), first)
        return True

    def _gpu_update(self, p, g, lr, momentum, dampening, wd, nesterov):
        """The same update as one kernel per parameter (kernels/sgd.cu) for contiguous
        float32 CuPy arrays; returns False (nothing done) otherwise."""
        data = p.data
        if not (backend.device_of(data) == "cuda" and backend.device_of(g) == "cuda"
                and data.dtype == np.float32 and g.dtype == np.float32
                and data.flags.c_contiguous and g.flags.c_contiguous):
            return False
        buf, first = None, False
        if momentum != 0:
            state = self.state.setdefault(p, {})
            buf = state.get("momentum_buffer")
            first = buf is None
            if first:
                buf = state["momentum_buffer"] = backend.get_array_module(data).empty_like(data)
        _gpu.sgd_update(data, g, buf, lr, momentum, dampening, wd, nesterov, first)
        return True
