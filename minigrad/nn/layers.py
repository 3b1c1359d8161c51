"""The layers of VGG and ResNet as :class:`Module` s (PyTorch names and defaults).

Each layer holds its parameters and configuration, checks its input, and calls
the matching function of :mod:`minigrad.nn.functional`, where the math
(forward and backward) lives.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional as F
from . import init
from .module import Module, Parameter


def _pair(v, name, layer):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{layer}: {name} must be an int or a pair, got {v!r}")
        v = tuple(v)
    else:
        v = (v, v)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v):
        raise TypeError(f"{layer}: {name} must be integers, got {v!r}")
    return tuple(int(a) for a in v)


def _positive_int(v, name, layer):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{layer}: {name} must be a positive integer, got {v!r}")
    return int(v)


def _shape_of(x):
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"expected a minigrad Tensor, got {type(x).__name__}")
    return tuple(shape)


# ---------------------------------------------------------------------------
# Convolution and fully connected layers
# ---------------------------------------------------------------------------
def _default_init(weight, bias, fan_in):
    """PyTorch's default: kaiming_uniform_(a=sqrt(5)), i.e. U(±1/sqrt(fan_in)),
    and the bias from U(±1/sqrt(fan_in))."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Conv2d(Module):
    """2-D convolution: ``Conv2d(in_channels, out_channels, kernel_size, stride=1,
    padding=0, bias=True)``.

    Input (N, C_in, H, W) -> output (N, C_out, H_out, W_out) with
    H_out = (H + 2·padding − kernel) // stride + 1.  Weight shape
    (C_out, C_in, kh, kw), initialised as PyTorch does (uniform ±1/sqrt(fan_in)).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        who = "Conv2d"
        self.in_channels = _positive_int(in_channels, "in_channels", who)
        self.out_channels = _positive_int(out_channels, "out_channels", who)
        self.kernel_size = _pair(kernel_size, "kernel_size", who)
        self.stride = _pair(stride, "stride", who)
        self.padding = _pair(padding, "padding", who)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{who}: kernel_size and stride must be positive and padding "
                             f">= 0, got kernel_size={self.kernel_size}, stride={self.stride}, "
                             f"padding={self.padding}")
        kh, kw = self.kernel_size
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels, kh, kw), np.float32))
        if bias:
            self.bias = Parameter(np.empty((self.out_channels,), np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        _default_init(self.weight, self.bias, self.in_channels * self.kernel_size[0] * self.kernel_size[1])

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def forward(self, x):
        shape = _shape_of(x)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{self.__class__.__name__}({self.extra_repr()}): expected input "
                             f"(N, {self.in_channels}, H, W), got shape {shape}")
        kh, kw = self.kernel_size
        ph, pw = self.padding
        if shape[2] + 2 * ph < kh or shape[3] + 2 * pw < kw:
            raise ValueError(f"{self.__class__.__name__}({self.extra_repr()}): input of shape "
                             f"{shape} is smaller than the kernel {self.kernel_size} "
                             f"(after padding {self.padding})")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class Linear(Module):
    """Fully connected layer ``y = x Wᵀ + b``: ``Linear(in_features, out_features, bias=True)``.

    Input (..., in_features) -> (..., out_features); weight shape
    (out_features, in_features), initialised as PyTorch does.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features", "Linear")
        self.out_features = _positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), np.float32))
        if bias:
            self.bias = Parameter(np.empty((self.out_features,), np.float32))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        _default_init(self.weight, self.bias, self.in_features)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")

    def forward(self, x):
        shape = _shape_of(x)
        if len(shape) < 1 or shape[-1] != self.in_features:
            raise ValueError(f"Linear({self.extra_repr()}): expected input (..., "
                             f"{self.in_features}), got shape {shape}")
        return F.linear(x, self.weight, self.bias)


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------
class _BatchNorm(Module):
    """Shared code of BatchNorm1d / BatchNorm2d.

    Training: normalise with the batch mean and (biased) variance over every
    axis but the channel axis, then scale by ``weight`` (γ) and shift by
    ``bias`` (β); update ``running_mean``/``running_var`` (with the unbiased
    variance) as ``running = (1 − momentum)·running + momentum·batch``.
    ``momentum=None`` gives a cumulative average over ``num_batches_tracked``.
    Evaluation: normalise with the running statistics.
    """

    _expected_dims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features", type(self).__name__)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(np.ones(c, np.float32))
            self.bias = Parameter(np.zeros(c, np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, np.float32))
            self.register_buffer("running_var", np.ones(c, np.float32))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, residual=None, relu=False):
        """bn(x), or relu(bn(x) + residual) as one fused op where ``relu`` (see
        :func:`bn_relu`)."""
        shape = _shape_of(x)
        if len(shape) not in self._expected_dims or shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.extra_repr()}): expected input "
                             f"{self._layout.format(C=self.num_features)}, got shape {shape}")
        if np.dtype(x.dtype).kind not in "fc":      # PyTorch refuses integer input too
            raise TypeError(f"{type(self).__name__}({self.extra_repr()}): expected a "
                            f"floating-point input, got {x.dtype} of shape {shape}; convert "
                            "it first (x.float())")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        use_batch_stats = self.training or self.running_mean is None
        if use_batch_stats:
            per_channel = int(np.prod(shape)) // shape[1]
            if per_channel <= 1:
                raise ValueError(f"{type(self).__name__}({self.extra_repr()}): training needs "
                                 f"more than 1 value per channel, got input shape {shape}")
        track = not self.training or self.track_running_stats
        rm, rv = (self.running_mean, self.running_var) if track else (None, None)
        if relu:
            return F.batch_norm_relu(x, rm, rv, self.weight, self.bias, use_batch_stats, factor,
                                     self.eps, residual)
        return self._normalize(x, rm, rv, use_batch_stats, factor)

    def _normalize(self, x, running_mean, running_var, use_batch_stats, momentum):
        """The normalisation itself, once the input is checked (SyncBatchNorm
        takes the batch statistics over all ranks here)."""
        return F.batch_norm(x, running_mean, running_var, self.weight, self.bias,
                            training=use_batch_stats, momentum=momentum, eps=self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, per channel C."""
    _expected_dims = (2, 3)
    _layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs, per channel (Ioffe & Szegedy 2015)."""
    _expected_dims = (4,)
    _layout = "(N, {C}, H, W)"


class LocalResponseNorm(Module):
    """Local response normalisation across channels, as in AlexNet and VGG's A-LRN:

        b_c = a_c / (k + alpha · Σ_{c' within size/2 of c} a_c'²) ** beta

    with the paper's defaults size=5, alpha=1e-4, beta=0.75, k=2.

    Note: PyTorch's ``nn.LocalResponseNorm(size, alpha, beta, k)`` divides alpha
    by ``size`` (and defaults k=1); minigrad follows the paper, so
    ``minigrad LocalResponseNorm(5, alpha=a)`` equals
    ``torch LocalResponseNorm(5, alpha=5·a, k=2)``.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__()
        self.size = _positive_int(size, "size", "LocalResponseNorm")
        self.alpha, self.beta, self.k = float(alpha), float(beta), float(k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, x):
        shape = _shape_of(x)
        if len(shape) < 3:
            raise ValueError(f"LocalResponseNorm({self.extra_repr()}): expected input "
                             f"(N, C, ...) with at least 3 dims, got shape {shape}")
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------
class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        who = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", who)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", who)
        self.padding = _pair(padding, "padding", who)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.padding) < 0:
            raise ValueError(f"{who}: kernel_size and stride must be positive and padding >= 0, "
                             f"got {self.extra_repr()}")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{who}: padding should be at most half of kernel_size, "
                             f"got {self.extra_repr()}")

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _check(self, x):
        shape = _shape_of(x)
        if len(shape) != 4:
            raise ValueError(f"{type(self).__name__}({self.extra_repr()}): expected input "
                             f"(N, C, H, W), got shape {shape}")
        for size, k, p in zip(shape[2:], self.kernel_size, self.padding):
            if size + 2 * p < k:
                raise ValueError(f"{type(self).__name__}({self.extra_repr()}): input of shape "
                                 f"{shape} is smaller than the window")


class MaxPool2d(_Pool2d):
    """Max over each kernel_size window (stride defaults to kernel_size)."""

    def forward(self, x):
        self._check(x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(_Pool2d):
    """Mean over each kernel_size window (stride defaults to kernel_size)."""

    def forward(self, x):
        self._check(x)
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size; ``AdaptiveAvgPool2d(1)`` is
    ResNet's global average pool."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def extra_repr(self):
        return f"output_size={self.output_size}"

    def forward(self, x):
        shape = _shape_of(x)
        if len(shape) != 4:
            raise ValueError(f"AdaptiveAvgPool2d({self.extra_repr()}): expected input "
                             f"(N, C, H, W), got shape {shape}")
        return F.adaptive_avg_pool2d(x, self.output_size)


# ---------------------------------------------------------------------------
# Activations, dropout, reshaping, loss
# ---------------------------------------------------------------------------
class ReLU(Module):
    """max(0, x).  ``inplace`` is accepted for PyTorch compatibility and ignored."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""

    def forward(self, x):
        return F.relu(x)


def bn_relu(bn, relu, x, residual=None):
    """``relu(bn(x) + residual)`` (``residual`` optional) with the modules ``bn``
    and ``relu``: a ResNet block's batch norm, shortcut addition and ReLU.

    Run as one fused op (``F.batch_norm_relu``: one pass over memory instead of
    three each way) when nothing can tell the difference: ``bn`` is a plain
    BatchNorm1d/2d (not SyncBatchNorm, whose statistics span ranks), ``relu`` a
    plain ReLU, and neither has forward hooks, so no one observes BN's output
    alone.  Otherwise both modules are called, hooks and all.  The numbers are
    the same either way (tests/test_fast_paths.py checks it).
    """
    if (type(bn) in (BatchNorm1d, BatchNorm2d) and type(relu) is ReLU
            and not (bn._forward_hooks or bn._forward_pre_hooks
                     or relu._forward_hooks or relu._forward_pre_hooks)):
        return bn._forward(x, residual, relu=True)
    y = bn(x)
    return relu(y if residual is None else y + residual)


class Dropout(Module):
    """During training, zero each element with probability p and scale the rest
    by 1/(1−p) ("inverted dropout"); identity in evaluation mode.  Draws from
    minigrad's seeded generator."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = inplace

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Flatten(Module):
    """Merge dims start_dim..end_dim (default: all but the batch axis)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, x):
        shape = _shape_of(x)
        nd = len(shape)
        if not (-nd <= self.start_dim < nd and -nd <= self.end_dim < nd):
            raise ValueError(f"Flatten({self.extra_repr()}): dims out of range for input "
                             f"of shape {shape}")
        return x.flatten(self.start_dim, self.end_dim)


class Identity(Module):
    """Returns its input (a placeholder, e.g. for a shortcut)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class CrossEntropyLoss(Module):
    """Mean cross-entropy of logits (N, K) against integer targets (N,):
    −mean_i log softmax(logits_i)[target_i]."""

    def forward(self, logits, target):
        return F.cross_entropy(logits, target)
