"""Normalisation: batch normalisation and local response normalisation."""
from __future__ import annotations

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from .. import cuda as _gpu   # GPU kernels (kernels/lrn.cu); imports CuPy only when used
from ..tensor import Function, data_of
from .activation import relu


# ---------------------------------------------------------------------------
# Local response normalisation (AlexNet, VGG's A-LRN)
# ---------------------------------------------------------------------------
def _channel_window_sum(a, before, after):
    """s[:, c] = Σ_{c' = c − before}^{c + after} a[:, c'] (channels outside
    0..C−1 count as 0): one shifted add per window position."""
    xp = backend.get_array_module(a)
    c = a.shape[1]
    widths = [(0, 0)] * a.ndim
    widths[1] = (before, after)
    padded = xp.pad(a, widths, mode="constant")
    s = padded[:, 0:c].copy()
    for d in range(1, before + after + 1):
        s += padded[:, d:d + c]
    return s


class LocalResponseNorm(Function):
    """Local response normalisation across channels (Krizhevsky et al. 2012):

        S_c = Σ_{c' ∈ W(c)} a_c'²,     D_c = k + α·S_c,     b_c = a_c · D_c^(−β)

    W(c) is the window of ``size`` channels around c, c − ⌊size/2⌋ …
    c + ⌊(size−1)/2⌋, clipped at the first and last channel (for odd size the
    window is centred; for even size it follows PyTorch's placement).

    **α multiplies the plain window sum**, as in the AlexNet paper (and VGG's
    A-LRN, which uses AlexNet's k=2, size=5, α=1e-4, β=0.75).  PyTorch's
    ``LocalResponseNorm`` instead uses α/size (the window *mean*) and defaults
    to k=1, so ``torch.nn.LocalResponseNorm(size, alpha=α·size, beta=β, k=k)``
    computes exactly minigrad's ``local_response_norm(x, size, α, β, k)``.

    Backward.  b_c depends on a_j directly (j = c) and through S_c for every c
    whose window contains j:

        ∂b_c/∂a_j = δ_cj · D_c^(−β) − 2αβ · a_c · a_j · D_c^(−β−1) · [j ∈ W(c)]

    so, with t_c = g_c · a_c · D_c^(−β−1) = g_c · b_c / D_c,

        da_j = g_j · D_j^(−β) − 2αβ · a_j · Σ_{c : j ∈ W(c)} t_c.

    "j ∈ W(c)" is the mirrored window c ∈ j − ⌊(size−1)/2⌋ … j + ⌊size/2⌋,
    so the sum is the same shifted-add as the forward with the sides swapped.
    """

    def __init__(self, size, alpha, beta, k):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, a):
        before, after = self.size // 2, (self.size - 1) // 2
        t = a.dtype.type
        d = t(self.k) + t(self.alpha) * _channel_window_sum(a * a, before, after)
        scale = d ** t(-self.beta)                       # D^(−β)
        b = a * scale
        if self.needs_input_grad[0]:
            self.a, self.d, self.scale, self.b = a, d, scale, b
        return b

    def backward(self, g):
        before, after = self.size // 2, (self.size - 1) // 2
        t = g.dtype.type
        tc = g * self.b / self.d                          # g_c · a_c · D_c^(−β−1)
        back = _channel_window_sum(tc, after, before)     # mirrored window
        return g * self.scale - t(2 * self.alpha * self.beta) * self.a * back


class LocalResponseNormCuda(LocalResponseNorm):
    """GPU path for float32 CuPy arrays: one thread per pixel (kernels/lrn.cu)."""

    def forward(self, a):
        b, d = _gpu.lrn_forward(a, self.size, self.alpha, self.beta, self.k)
        if self.needs_input_grad[0]:
            self.a, self.d = a, d
        return b

    def backward(self, g):
        return _gpu.lrn_backward(self.a, self.d, g, self.size, self.alpha, self.beta)


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """b_c = a_c / (k + α Σ_{c' in the window of ``size`` channels} a_c'²)^β.

    The AlexNet/VGG formula: α multiplies the window SUM and k defaults to 2.
    PyTorch's version divides α by ``size`` and defaults k=1: torch's
    ``F.local_response_norm(x, size, alpha * size, beta, k)`` equals this
    function's ``local_response_norm(x, size, alpha, beta, k)``.
    Input (N, C, ...) with at least 3 dims; normalises across axis 1.
    """
    shape = tuple(x.shape)
    if len(shape) < 3:
        raise ValueError(f"local_response_norm: expected input (N, C, ...) with at least 3 "
                         f"dims, got shape {shape}")
    if isinstance(size, bool) or int(size) != size or size <= 0:
        raise ValueError(f"local_response_norm: size must be a positive integer, got {size!r}")
    a = data_of(x)
    cls = (LocalResponseNormCuda if backend.device_of(a) == "cuda" and a.dtype == "float32"
           else LocalResponseNorm)
    return cls(int(size), float(alpha), float(beta), float(k))(x)


# ---------------------------------------------------------------------------
# Batch normalisation (Ioffe & Szegedy 2015)
# ---------------------------------------------------------------------------
def scale_and_shift(xhat, weight, bias, bshape):
    """y = γ · x̂ + β, per channel (γ, β reshaped to ``bshape``; either may be None)."""
    y = xhat
    if weight is not None:
        y = y * weight.reshape(bshape)
    if bias is not None:
        y = y + bias.reshape(bshape)
    return y


class BatchNorm(Function):
    """Batch normalisation per channel (axis 1), for (N, C) and (N, C, H, W)
    (any (N, C, ...)); statistics over every axis but the channel axis, m values
    per channel.

    Forward:  x̂ = (x − μ) / √(σ² + ε),   y = γ · x̂ + β
      training: μ, σ² are the batch mean and the *biased* batch variance;
      evaluation: μ, σ² are the running statistics (constants).

    Backward (training), with ĝ = g · γ and sums over the m values of a channel:

        dx = (1 / (m·√(σ² + ε))) · (m·ĝ − Σ ĝ − x̂ · Σ(ĝ · x̂))

    the closed form of differentiating through μ and σ² as well as x.
    Backward (evaluation): dx = g · γ / √(σ² + ε).
    Both modes: dγ = Σ g · x̂,  dβ = Σ g.

    The running statistics are updated in place during a training forward:
    running = (1 − momentum) · running + momentum · batch, with the *unbiased*
    variance σ² · m/(m − 1) for ``running_var`` (PyTorch's convention).
    """

    def __init__(self, running_mean, running_var, training, momentum, eps,
                 has_weight, has_bias):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps
        self.has_weight, self.has_bias = has_weight, has_bias

    def forward(self, x, *params):
        xp = backend.get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        t = x.dtype.type
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        if self.training:
            m = x.size // x.shape[1]
            mean = x.mean(axis=axes)
            centred = x - mean.reshape(bshape)
            var = (centred * centred).mean(axis=axes)
            if self.running_mean is not None:
                self._update_running(mean, var, m)
        else:
            mean = self.running_mean.astype(x.dtype, copy=False)
            var = self.running_var.astype(x.dtype, copy=False)
            centred = x - mean.reshape(bshape)
        inv_std = 1 / xp.sqrt(var + t(self.eps))
        xhat = centred * inv_std.reshape(bshape)
        y = scale_and_shift(xhat, weight, bias, bshape)
        if any(self.needs_input_grad):
            self.xhat, self.inv_std, self.weight = xhat, inv_std, weight
        self.running_mean = self.running_var = None     # not needed any more
        return y

    def backward(self, g):
        need = self.needs_input_grad
        axes = (0,) + tuple(range(2, g.ndim))
        bshape = (1, -1) + (1,) * (g.ndim - 2)
        xhat = self.xhat
        dx = dweight = dbias = None
        if need[0]:
            ghat = g if self.weight is None else g * self.weight.reshape(bshape)
            if self.training:
                m = g.size // g.shape[1]
                t = g.dtype.type
                s1 = ghat.sum(axis=axes).reshape(bshape)
                s2 = (ghat * xhat).sum(axis=axes).reshape(bshape)
                dx = (self.inv_std.reshape(bshape) / t(m)) * (t(m) * ghat - s1 - xhat * s2)
            else:
                dx = ghat * self.inv_std.reshape(bshape)
        if self.has_weight and need[1]:
            dweight = (g * xhat).sum(axis=axes)
        if self.has_bias and need[-1]:
            dbias = g.sum(axis=axes)
        return self._grads(dx, dweight, dbias)

    def _grads(self, dx, dweight, dbias):
        """One gradient per input (x, then γ and β where given), None where not needed."""
        need = self.needs_input_grad
        grads = [dx if need[0] else None]
        if self.has_weight:
            grads.append(dweight if need[1] else None)
        if self.has_bias:
            grads.append(dbias if need[-1] else None)
        return tuple(grads)

    def _update_running(self, mean, var, m):
        """running = (1 − momentum) · running + momentum · batch statistic, in place."""
        mom = self.momentum
        self.running_mean[...] = (1 - mom) * self.running_mean + mom * mean
        self.running_var[...] = (1 - mom) * self.running_var + mom * var * (m / (m - 1))


class BatchNormFast(BatchNorm):
    """CPU fast path (kernels/cpu_numba.py): statistics, scale and shift in two
    parallel passes; backward from x and the statistics (no x̂ kept)."""

    def forward(self, x, *params):
        return self._fast_forward(x, params)

    def _fast_forward(self, x, params, residual=None, relu=False):
        """y = BN(x) (+ residual, max 0 where ``relu``): the kernels' one call,
        the running statistics' update and what the backward keeps."""
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        y, mean, var, inv_std = config.cpu_kernels().batch_norm_forward(
            x, self.running_mean, self.running_var, weight, bias, self.eps, self.training,
            residual, relu)
        if self.training and self.running_mean is not None:
            self._update_running(mean, var, x.size // x.shape[1])
        if any(self.needs_input_grad):
            self.x, self.mean, self.inv_std, self.weight = x, mean, inv_std, weight
        self.running_mean = self.running_var = None
        return y

    def backward(self, g):
        dx, dweight, dbias, _ = config.cpu_kernels().batch_norm_backward(
            g, self.x, self.mean, self.inv_std, self.weight, self.training)
        return self._grads(dx, dweight, dbias)


class BatchNormReLUFast(BatchNormFast):
    """z = max(0, BN(x) + r) as one op on the CPU fast path (r, the residual,
    is optional): what ``relu(batch_norm(x) + r)`` computes, in the one pass
    batch norm writes its output in, instead of three ops of a pass each.

    Backward, with the ReLU's mask taken from the output (z > 0 exactly where
    BN(x) + r > 0):

        ĝ = g · [z > 0],     dr = ĝ,     dx, dγ, dβ = batch norm's backward of ĝ

    ĝ is formed a channel at a time, into dr or into a buffer of one channel
    that stays in the cache, and batch norm's two passes then read it there:
    the ReLU's own pass over memory goes too.  Inputs: x, then γ and β where
    given, then r where given.
    """

    def __init__(self, *args, has_residual):
        super().__init__(*args)
        self.has_residual = has_residual

    def forward(self, x, *rest):
        params = rest[:-1] if self.has_residual else rest
        residual = rest[-1] if self.has_residual else None
        z = self._fast_forward(x, params, residual, relu=True)
        if any(self.needs_input_grad):
            self.z = z                              # the ReLU's mask, for the backward
        return z

    def backward(self, g):
        need_r = self.has_residual and self.needs_input_grad[-1]
        dx, dweight, dbias, dr = config.cpu_kernels().batch_norm_backward(
            g, self.x, self.mean, self.inv_std, self.weight, self.training, self.z, need_r)
        grads = self._grads(dx, dweight, dbias)
        if self.has_residual:
            grads += (dr,)
        return grads


def _check_batch_norm(name, x, rm, rv, weight, bias, training):
    """The errors ``batch_norm`` and ``batch_norm_relu`` give for bad arguments."""
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"{name}: expected input (N, C) or (N, C, H, W), got shape {shape}")
    c = shape[1]
    if (rm is None) != (rv is None):
        raise ValueError(f"{name}: give both running_mean and running_var, or neither")
    if rm is not None:
        for what, v in (("running_mean", rm), ("running_var", rv)):
            if tuple(v.shape) != (c,):
                raise ValueError(f"{name}: input has {c} channels (shape {shape}) but "
                                 f"{what} has shape {tuple(v.shape)}")
    elif not training:
        raise ValueError(f"{name}: evaluation (training=False) needs running_mean and "
                         "running_var")
    for what, v in (("weight", weight), ("bias", bias)):
        if v is not None and tuple(v.shape) != (c,):
            raise ValueError(f"{name}: input has {c} channels (shape {shape}) but {what} "
                             f"has shape {tuple(v.shape)}")
    if training and x.size // max(c, 1) <= 1:
        raise ValueError(f"{name}: training needs more than 1 value per channel, "
                         f"got input shape {shape}")


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation (``torch.nn.functional.batch_norm``) over axis 1 of
    (N, C) or (N, C, H, W) input.

    ``running_mean``/``running_var`` (C,) are Tensors or arrays, updated in
    place when ``training`` (they may be None then: no tracking); evaluation
    (``training=False``) normalises with them.  ``weight`` (γ) and ``bias`` (β)
    are optional (C,) tensors.
    """
    rm, rv = data_of(running_mean), data_of(running_var)
    _check_batch_norm("batch_norm", x, rm, rv, weight, bias, training)
    params = [p for p in (weight, bias) if p is not None]
    fast = config.use_fast(data_of(x), data_of(weight), data_of(bias))
    op = (BatchNormFast if fast else BatchNorm)(rm, rv, bool(training), float(momentum), float(eps),
                   weight is not None, bias is not None)
    return op(x, *params)


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5, residual=None):
    """``relu(batch_norm(x, ...) + residual)`` (``residual`` optional, of x's
    shape): batch norm with the residual addition and ReLU of a ResNet block
    fused in, on the CPU fast path (:class:`BatchNormReLUFast`).  Elsewhere
    (reference mode, CuPy, other dtypes) it is that composition of the three
    ops.  Arguments as :func:`batch_norm`'s.
    """
    rm, rv = data_of(running_mean), data_of(running_var)
    _check_batch_norm("batch_norm_relu", x, rm, rv, weight, bias, training)
    if residual is not None and tuple(residual.shape) != tuple(x.shape):
        raise ValueError(f"batch_norm_relu: the residual has shape {tuple(residual.shape)}, "
                         f"the input {tuple(x.shape)}; they must match")
    if not config.use_fast(*(data_of(a) for a in (x, weight, bias, residual))):
        y = batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        return relu(y if residual is None else y + residual)
    inputs = [a for a in (weight, bias, residual) if a is not None]
    op = BatchNormReLUFast(rm, rv, bool(training), float(momentum), float(eps),
                           weight is not None, bias is not None,
                           has_residual=residual is not None)
    return op(x, *inputs)
