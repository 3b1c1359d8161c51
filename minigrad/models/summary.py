"""``summary(model, input_shape)``: a table of every layer of a network.

    >>> from minigrad.models import create, summary
    >>> s = summary(create("resnet20"), (3, 32, 32))
    >>> print(s)                    # one row per layer, then the totals
    >>> s.total_params, s.total_madds
    (269722, 40551040)

The model runs one forward pass (evaluation mode, no graph recorded) on a
zero image; a forward hook on every leaf module (a module without
sub-modules) records its output shape.  Each row then gets:

* **params**: the layer's own parameter elements;
* **mult-adds** per image, the papers' "FLOPs": a conv costs
  C_out · (C_in / groups) · kh · kw · H_out · W_out, a linear layer
  in · out.  BN, ReLU, pooling and the residual additions are not counted
  (the papers don't count them either);
* **receptive field** (size, and jump = the distance in input pixels between
  two neighbouring outputs), along the main path: r ← r + (k − 1)·j,
  j ← j·stride for every conv and pool.  Layers inside a ResNet shortcut are
  off the main path and get no receptive field; after the network is
  flattened the receptive field is no longer spatial ("-").

Residual additions are not modules, so they have no row.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from ..tensor import Tensor, no_grad

__all__ = ["summary", "ModelSummary", "LayerRow"]

# names of sub-modules that are a side branch (not on the main path)
SIDE_BRANCHES = ("shortcut", "downsample")


@dataclass
class LayerRow:
    """One called leaf module."""
    name: str                       # dotted name, e.g. "layer2.0.conv1"
    type: str                       # class name, e.g. "Conv2d"
    input_shape: tuple
    output_shape: tuple
    params: int                     # parameter elements owned (0 if already listed)
    madds: int                      # multiply-adds per image
    receptive_field: tuple | None   # (rows, cols) of input pixels one output sees
    jump: tuple | None              # (rows, cols) input pixels between neighbouring outputs
    output_bytes: int = 0           # size of the output array (whole batch)


class ModelSummary:
    """The result of :func:`summary`: ``rows`` (a list of :class:`LayerRow`)
    and the totals ``total_params``, ``trainable_params``, ``total_madds``
    (per image), ``output_bytes`` (all layer outputs of the batch) and
    ``param_bytes``.  ``str()`` gives the table."""

    def __init__(self, name, input_shape, rows, total_params, trainable_params, param_bytes):
        self.name = name
        self.input_shape = tuple(input_shape)
        self.rows = rows
        self.total_params = total_params
        self.trainable_params = trainable_params
        self.total_madds = sum(r.madds for r in rows)
        self.output_bytes = sum(r.output_bytes for r in rows)
        self.param_bytes = param_bytes

    def row(self, name: str) -> LayerRow:
        """The first row of the layer called ``name``."""
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"summary: no layer named {name!r}")

    def __str__(self):
        header = ("Layer", "Type", "Output shape", "Params", "Mult-adds", "RF", "Jump")
        body = [(r.name, r.type, _shape_str(r.output_shape), f"{r.params:,}",
                 f"{r.madds:,}" if r.madds else "-", _pair_str(r.receptive_field),
                 _pair_str(r.jump)) for r in self.rows]
        widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
        left = (True, True, True, False, False, False, False)

        def fmt(line):
            return "  ".join(c.ljust(w) if lft else c.rjust(w)
                             for c, w, lft in zip(line, widths, left)).rstrip()
        rule = "-" * len(fmt(header))
        lines = [f"{self.name}, input {_shape_str(self.input_shape)}", rule, fmt(header), rule]
        lines += [fmt(line) for line in body]
        lines += [rule,
                  f"Total params:        {self.total_params:,}",
                  f"Trainable params:    {self.trainable_params:,}",
                  f"Non-trainable:       {self.total_params - self.trainable_params:,}",
                  f"Mult-adds per image: {self.total_madds:,} ({_si(self.total_madds)})",
                  f"Output memory:       {self.output_bytes / 2**20:,.2f} MiB "
                  f"(all layer outputs, batch {self.input_shape[0]})",
                  f"Parameter memory:    {self.param_bytes / 2**20:,.2f} MiB"]
        return "\n".join(lines)

    __repr__ = __str__


def summary(model, input_shape, dtype=np.float32) -> ModelSummary:
    """Run ``model`` once on zeros of ``input_shape`` ((C, H, W) for one image,
    or (N, C, H, W)) and describe every layer (see the module docstring).

    The model's train/eval modes are restored afterwards; the forward pass
    records no graph.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: expected a minigrad.nn.Module, got {type(model).__name__}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4 or min(shape) <= 0:
        raise ValueError(f"summary: input_shape must be (C, H, W) or (N, C, H, W) with positive "
                         f"sizes, got {tuple(input_shape)}")

    leaves = [(name, m) for name, m in model.named_modules()
              if not m._modules and name != ""]
    calls = []                                      # (name, module, in_shape, out_shape, nbytes)

    def recorder(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            x = inputs[0] if inputs else None
            calls.append((name, module, tuple(getattr(x, "shape", ())), tuple(out.shape),
                          int(out.data.nbytes)))
        return hook

    modes = {id(m): m.training for m in model.modules()}
    handles = [m.register_forward_hook(recorder(name)) for name, m in leaves]
    params = list(model.parameters())
    device = params[0].device if params else "cpu"
    x = Tensor(backend.to_device(np.zeros(shape, dtype=dtype), device))
    try:
        model.eval()
        with no_grad(), np.errstate(all="ignore"):
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            object.__setattr__(m, "training", modes[id(m)])

    rows = _rows(calls, shape)
    name = getattr(model, "name", None) or type(model).__name__
    return ModelSummary(name, shape, rows,
                        total_params=sum(p.size for p in params),
                        trainable_params=sum(p.size for p in params if p.requires_grad),
                        param_bytes=sum(p.data.nbytes for p in params))


def _rows(calls, input_shape):
    rows, listed = [], set()
    rf, jump = (1, 1), (1, 1)
    spatial = True                   # False once the main path is flattened
    for name, m, in_shape, out_shape, nbytes in calls:
        own = 0
        if id(m) not in listed:      # a module called twice lists its parameters once
            listed.add(id(m))
            own = sum(p.size for p in m.parameters())
        on_main = not any(part in SIDE_BRANCHES for part in name.split("."))
        if on_main and spatial:
            if len(out_shape) != 4:
                spatial = False
            else:
                k, s = _window(m, in_shape)
                rf = tuple(r + (kk - 1) * j for r, kk, j in zip(rf, k, jump))
                jump = tuple(j * ss for j, ss in zip(jump, s))
        show = on_main and spatial
        row = LayerRow(name, type(m).__name__, in_shape, out_shape, own,
                       _madds(m, out_shape), rf if show else None, jump if show else None,
                       nbytes)
        rows.append(row)
    return rows


def _window(m, in_shape):
    """(kernel, stride) of a layer that slides a window; (1, 1) otherwise."""
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        return tuple(m.kernel_size), tuple(m.stride)
    if isinstance(m, nn.AdaptiveAvgPool2d) and len(in_shape) == 4:
        out = m.output_size if isinstance(m.output_size, (tuple, list)) else (m.output_size,) * 2
        out = tuple(o if o is not None else i for o, i in zip(out, in_shape[2:]))
        k = tuple(-(-i // o) for i, o in zip(in_shape[2:], out))      # ceil(in / out)
        return k, tuple(max(1, i // o) for i, o in zip(in_shape[2:], out))
    return (1, 1), (1, 1)


def _madds(m, out_shape):
    """Multiply-adds per image of a conv or linear layer (0 for the rest)."""
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        groups = getattr(m, "groups", 1)
        h, w = out_shape[2:]
        return int(m.out_channels * (m.in_channels // groups) * kh * kw * h * w)
    if isinstance(m, nn.Linear):
        positions = int(np.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        return int(m.in_features * m.out_features * positions)
    return 0


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _pair_str(p):
    if p is None:
        return "-"
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _si(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
