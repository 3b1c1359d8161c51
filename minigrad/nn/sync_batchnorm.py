"""``SyncBatchNorm``: batch normalisation over the whole global batch.

With data-parallel training each rank sees only its share of a batch, and a
plain :class:`~minigrad.nn.BatchNorm2d` normalises with that share's mean and
variance: 2 ranks × 32 images are not 1 process × 64 (and small shares give
noisy statistics).  ``SyncBatchNorm`` uses the statistics of all the ranks'
images together, in forward and in backward, so the ranks compute exactly
what one process would on the whole batch, running statistics included::

    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)   # every BatchNorm1d/2d
    model = DistributedDataParallel(model)

It costs one small all-gather per layer in forward and one small all-reduce
in backward.  In evaluation mode, or in a group of one process, it is plain
batch normalisation.
"""
from __future__ import annotations

from .. import backend
from .. import distributed as dist
from ..ops.norm import scale_and_shift
from ..tensor import Function
from .layers import _BatchNorm


class SyncBatchNormFunction(Function):
    """Batch normalisation of (N, C, ...) with statistics over every rank.

    Rank r holds m_r values per channel.  **Forward**: each rank computes
    m_r, its mean x̄_r and M2_r = Σ (x − x̄_r)²; every rank gathers all
    (m_r, x̄_r, M2_r) and combines them in rank order (Chan et al.'s pairwise
    formula, free of the cancellation of Σx² − m·x̄²):

        m = Σ_r m_r,    μ = Σ_r m_r·x̄_r / m,    σ² = Σ_r [M2_r + m_r·(x̄_r − μ)²] / m

    then y = γ·(x − μ)/√(σ² + ε) + β on each rank's own values, and the
    running statistics take μ and the unbiased σ²·m/(m − 1), as one process
    would with all m values.

    **Backward**: BatchNorm's formula with the sums over all ranks (one
    all-reduce of 2C numbers) and m the global count,

        dx = (1 / (m·√(σ² + ε))) · (m·ĝ − Σ_all ĝ − x̂ · Σ_all ĝ·x̂),   ĝ = g·γ,

    while dγ = Σ g·x̂ and dβ = Σ g stay this rank's sums.  Why that is right:
    rank r's g is the gradient of its own mean loss L_r, and the loss of the
    global batch is L = (1/N) Σ_r L_r.  Summing g over all ranks therefore
    gives N·∂L/∂x, and rank r's parameter gradients come out as N × their
    share of ∂L/∂θ; DistributedDataParallel's mean over the N ranks turns
    that into exactly Σ_r (share of rank r) = ∂L/∂θ.
    """

    def __init__(self, running_mean, running_var, momentum, eps, has_weight, has_bias):
        self.running_mean, self.running_var = running_mean, running_var
        self.momentum, self.eps = momentum, eps
        self.has_weight, self.has_bias = has_weight, has_bias

    def forward(self, x, *params):
        xp = backend.get_array_module(x)
        axes = (0,) + tuple(range(2, x.ndim))
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        c, t = x.shape[1], x.dtype.type
        weight = params[0] if self.has_weight else None
        bias = params[-1] if self.has_bias else None
        # this rank: count, mean, sum of squared deviations (per channel)
        m_r = x.size // c
        mean_r = x.sum(axis=axes) / t(max(m_r, 1))
        dev = x - mean_r.reshape(bshape)
        m2_r = (dev * dev).sum(axis=axes)
        # every rank's, combined in rank order (the same numbers on every rank)
        mine = xp.concatenate([xp.full(1, m_r, x.dtype), mean_r, m2_r])
        every = xp.empty((dist.get_world_size(), 2 * c + 1), x.dtype)
        dist.all_gather_into_tensor(every, mine)
        counts, means, m2s = every[:, :1], every[:, 1:c + 1], every[:, c + 1:]
        m = float(counts.sum())
        mean = (counts * means).sum(axis=0) / t(m)
        var = (m2s + counts * (means - mean) ** 2).sum(axis=0) / t(m)
        if self.running_mean is not None:
            mom = self.momentum
            self.running_mean[...] = (1 - mom) * self.running_mean + mom * mean
            self.running_var[...] = (1 - mom) * self.running_var + mom * var * (m / (m - 1))
        inv_std = 1 / xp.sqrt(var + t(self.eps))
        xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)
        y = scale_and_shift(xhat, weight, bias, bshape)
        if any(self.needs_input_grad):
            self.xhat, self.inv_std, self.weight, self.m = xhat, inv_std, weight, m
        self.running_mean = self.running_var = None
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        need = self.needs_input_grad
        axes = (0,) + tuple(range(2, g.ndim))
        bshape = (1, -1) + (1,) * (g.ndim - 2)
        xhat, t = self.xhat, g.dtype.type
        grads = [None]
        if need[0]:
            ghat = g if self.weight is None else g * self.weight.reshape(bshape)
            sums = xp.stack([ghat.sum(axis=axes), (ghat * xhat).sum(axis=axes)])
            dist.all_reduce(sums)                          # Σ over every rank's values
            s1, s2 = sums[0].reshape(bshape), sums[1].reshape(bshape)
            m = t(self.m)
            grads[0] = (self.inv_std.reshape(bshape) / m) * (m * ghat - s1 - xhat * s2)
        if self.has_weight:
            grads.append((g * xhat).sum(axis=axes) if need[1] else None)
        if self.has_bias:
            grads.append(g.sum(axis=axes) if need[-1] else None)
        return tuple(grads)


def _array(v):
    return None if v is None else v.data


class SyncBatchNorm(_BatchNorm):
    """``SyncBatchNorm(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)``: batch normalisation of (N, C, ...) whose
    training statistics are those of the global batch (all ranks); see the
    module docstring.  Same parameters, buffers and state_dict keys as
    BatchNorm1d/2d."""

    _expected_dims = (2, 3, 4, 5)
    _layout = "(N, {C}, ...)"

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        if not (use_batch_stats and dist.is_initialized() and dist.get_world_size() > 1):
            return super()._normalize(x, running_mean, running_var, use_batch_stats, momentum)
        params = [p for p in (self.weight, self.bias) if p is not None]
        op = SyncBatchNormFunction(_array(running_mean), _array(running_var), float(momentum),
                                   self.eps, self.weight is not None, self.bias is not None)
        return op(x, *params)

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """Replace every BatchNorm1d/BatchNorm2d inside ``module`` by a
        SyncBatchNorm that shares its parameters and buffers (so an optimizer
        built before still holds them).  Returns ``module``, or the new layer
        when ``module`` itself is a batch norm."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats)
            for name, p in module._parameters.items():
                sync.register_parameter(name, p)
            for name, b in module._buffers.items():
                sync.register_buffer(name, b, persistent=name not in module._non_persistent)
            sync.train(module.training)
            return sync
        for name, child in list(module._modules.items()):
            if child is not None:
                converted = cls.convert_sync_batchnorm(child)
                if converted is not child:
                    module.add_module(name, converted)
        return module


__all__ = ["SyncBatchNorm", "SyncBatchNormFunction"]
