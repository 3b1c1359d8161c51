"""Containers: ``Sequential`` (a chain of layers) and ``ModuleList``."""
from __future__ import annotations

from collections import OrderedDict

from .layers import ReLU, _BatchNorm, bn_relu
from .module import Module


def _index(i, n, who):
    if not isinstance(i, int):
        raise TypeError(f"{who} indices must be integers or slices, not {type(i).__name__}")
    if not -n <= i < n:
        raise IndexError(f"{who} index {i} is out of range for length {n}")
    return i % n


class Sequential(Module):
    """Run modules one after another: ``Sequential(conv, bn, relu)`` or
    ``Sequential(OrderedDict([("conv", conv), ("bn", bn)]))``.

    Supports ``len``, iteration, ``seq[i]``, ``seq[a:b]`` (a new Sequential
    sharing the layers) and ``append``.  A batch norm followed by a ReLU runs
    as one fused op (:func:`minigrad.nn.bn_relu`) unless a hook watches either.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def forward(self, x):
        modules = list(self._modules.values())
        i = 0
        while i < len(modules):
            module = modules[i]
            after = modules[i + 1] if i + 1 < len(modules) else None
            if isinstance(module, _BatchNorm) and isinstance(after, ReLU):
                x = bn_relu(module, after, x)       # one fused op where no hook watches
                i += 2
            else:
                x = module(x)
                i += 1
        return x

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        key = list(self._modules)[_index(idx, len(self), "Sequential")]
        return self._modules[key]

    def __setitem__(self, idx, module):
        key = list(self._modules)[_index(idx, len(self), "Sequential")]
        self.add_module(key, module)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (no forward of its own)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return ModuleList(list(self._modules.values())[idx])
        return self._modules[str(_index(idx, len(self), "ModuleList"))]

    def __setitem__(self, idx, module):
        self.add_module(str(_index(idx, len(self), "ModuleList")), module)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def insert(self, index, module):
        items = list(self._modules.values())
        items.insert(index, module)
        self._modules.clear()
        for i, m in enumerate(items):
            self.add_module(str(i), m)
