"""Activations and dropout: relu, softmax, log_softmax, dropout."""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from .. import cuda as _gpu   # GPU kernels (kernels/dropout.cu); imports CuPy only when used
from .. import random as _random
from ..tensor import Function, data_of


class ReLU(Function):
    """y = max(0, x);  dy/dx = 1 where x > 0, else 0 (0 at the kink x = 0)."""

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, grad):
        return grad * self.mask


class ReLUFast(ReLU):
    """CPU fast path (kernels/cpu_numba.py): one parallel pass each way; the
    output itself is the mask (y > 0 exactly where x > 0)."""

    def forward(self, x):
        self.y = config.cpu_kernels().relu(x)
        return self.y

    def backward(self, grad):
        return config.cpu_kernels().relu_grad(grad, self.y)


class Softmax(Function):
    """y_i = e^(x_i − m) / Σ_j e^(x_j − m) along ``dim``, m = max_j x_j (the shift
    changes nothing mathematically and keeps e^· from overflowing).

    Backward (vector-Jacobian product of J = diag(y) − y yᵀ):
    dx = y ⊙ (g − Σ_j g_j y_j).
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, x):
        xp = backend.get_array_module(x)
        e = xp.exp(x - x.max(axis=self.dim, keepdims=True))
        self.y = e / e.sum(axis=self.dim, keepdims=True)
        return self.y

    def backward(self, grad):
        y = self.y
        return y * (grad - (grad * y).sum(axis=self.dim, keepdims=True))


class LogSoftmax(Function):
    """y_i = x_i − logΣ_j e^(x_j), computed as x_i − m − log Σ_j e^(x_j − m)
    with m = max_j x_j (log-sum-exp trick: no overflow, no log 0).

    Backward: dy_i/dx_j = δ_ij − softmax_j, so dx = g − softmax(x) · Σ_i g_i.
    """

    def __init__(self, dim):
        self.dim = dim

    def forward(self, x):
        xp = backend.get_array_module(x)
        shifted = x - x.max(axis=self.dim, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=self.dim, keepdims=True))
        self.y = y
        return y

    def backward(self, grad):
        xp = backend.get_array_module(grad)
        return grad - xp.exp(self.y) * grad.sum(axis=self.dim, keepdims=True)


class Dropout(Function):
    """Inverted dropout: y = x · m / (1 − p) with m_i ~ Bernoulli(1 − p).

    Scaling the kept units by 1/(1 − p) at training time keeps E[y] = x, so
    evaluation needs no rescaling (the op is then the identity).
    Backward: dx = g · m / (1 − p), the same mask.
    """

    def __init__(self, p, generator=None):
        self.p = p
        self.generator = generator

    def forward(self, x):
        xp = backend.get_array_module(x)
        rng = self.generator if self.generator is not None else _random.get_rng()
        dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = rng.random(x.shape, dtype=dtype) >= self.p       # drawn on the CPU
        scale = 0.0 if self.p >= 1 else 1.0 / (1.0 - self.p)
        self.mask = xp.asarray(keep * np.asarray(scale, dtype=x.dtype))
        return x * self.mask

    def backward(self, grad):
        return grad * self.mask


class DropoutCuda(Dropout):
    """GPU, float32, minigrad's own generator (kernels/dropout.cu): the mask is drawn
    and applied on the device in one kernel, from one seed taken from that generator,
    so a seeded run repeats exactly and nothing is copied from the host."""

    def forward(self, x):
        seed = int(_random.get_rng().integers(0, 2**63))
        y, self.mask = _gpu.dropout_forward(x, self.p, seed)
        return y


def relu(x):
    """max(0, x) element-wise."""
    a = data_of(x)
    fast = config.use_fast(a) and a.flags.c_contiguous
    return (ReLUFast if fast else ReLU)()(x)


def softmax(x, dim):
    """exp(x) / Σ exp(x) along ``dim`` (numerically stable)."""
    return Softmax(dim)(x)


def log_softmax(x, dim):
    """log softmax(x) along ``dim`` (numerically stable)."""
    return LogSoftmax(dim)(x)


def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout (``torch.nn.functional.dropout``).

    Zeroes each element with probability ``p`` and scales the rest by
    1/(1 − p).  Identity when ``training`` is False or ``p`` is 0; all zeros
    when ``p`` is 1.  The mask is drawn from minigrad's seeded generator
    (:func:`minigrad.random.get_rng`) or from ``generator``, a
    ``numpy.random.Generator``.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0:
        return x
    a = data_of(x)
    gpu = generator is None and backend.device_of(a) == "cuda" and a.dtype == np.float32
    return (DropoutCuda if gpu else Dropout)(float(p), generator)(x)
