"""Weight initialisation (``torch.nn.init``'s names and semantics).

Every function fills a tensor **in place** (its array keeps its dtype and
device) and returns it.  Random draws come from minigrad's seeded generator
(:func:`minigrad.random.get_rng`, set by :func:`minigrad.manual_seed`) unless a
NumPy ``generator`` is passed.

Fans, for a weight of shape (out, in, kh, kw) (or (out, in) for Linear)::

    fan_in  = in  * kh * kw        fan_out = out * kh * kw

* He / Kaiming (He et al. 2015, used by ResNet): std = gain / sqrt(fan), with
  gain = sqrt(2) for ReLU, so the variance of the responses is preserved
  through a ReLU network.  ``kaiming_uniform_`` draws from U(-b, b) with
  b = sqrt(3) * std (the same variance).
* Glorot / Xavier (Glorot & Bengio 2010; the VGG paper notes it): std =
  gain * sqrt(2 / (fan_in + fan_out)); ``xavier_uniform_`` uses U(-b, b),
  b = sqrt(3) * std.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..random import get_rng
from ..tensor import Tensor


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended scale for a non-linearity (as ``torch.nn.init``):
    linear/conv/sigmoid 1, tanh 5/3, relu sqrt(2),
    leaky_relu sqrt(2 / (1 + slope²)) (slope defaults to 0.01), selu 3/4."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    shape = tuple(tensor.shape)
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need a tensor of at least 2 dimensions, "
                         f"got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor, values):
    """Write ``values`` (a NumPy array or scalar) into the tensor's array in place."""
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    xp = backend.get_array_module(array)
    if isinstance(values, np.ndarray) and values.dtype == array.dtype:
        array[...] = xp.asarray(values)
    else:
        array[...] = xp.asarray(np.asarray(values, dtype=np.float64).astype(array.dtype))
    return tensor


def _rng(generator):
    return get_rng() if generator is None else generator


def _sample_dtype(tensor):
    """Draw float32 samples for float32 tensors (half the time and memory of
    float64 on VGG's 100-million-weight layers), float64 otherwise."""
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    return np.float32 if array.dtype == np.float32 else np.float64


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with samples of U(a, b)."""
    values = _rng(generator).random(tuple(tensor.shape), dtype=_sample_dtype(tensor))
    values *= (b - a)
    values += a
    return _fill(tensor, values)


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with samples of N(mean, std²)."""
    values = _rng(generator).standard_normal(tuple(tensor.shape), dtype=_sample_dtype(tensor))
    values *= std
    values += mean
    return _fill(tensor, values)


def constant_(tensor, val: float):
    return _fill(tensor, val)


def zeros_(tensor):
    return _fill(tensor, 0.0)


def ones_(tensor):
    return _fill(tensor, 1.0)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """Glorot uniform: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """Glorot normal: N(0, std²), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    """He normal: N(0, std²), std = gain / sqrt(fan).

    ``kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`` is the
    initialisation of the ResNet paper (std = sqrt(2 / fan))."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)
