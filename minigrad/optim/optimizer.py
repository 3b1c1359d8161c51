"""``Optimizer``: the base class of minigrad's optimizers (PyTorch's design).

An optimizer holds **parameter groups**: a list of dicts, each with its
``"params"`` and its own hyper-parameters (``lr``, ``momentum``...), so
different parts of a network can be trained differently::

    SGD([{"params": body.parameters()},
         {"params": head.parameters(), "lr": 0.01}], lr=0.1, momentum=0.9)

Per-parameter state (SGD's momentum buffer) lives in ``optimizer.state``,
keyed by the parameter.  ``state_dict()`` refers to parameters by their index
in the order of the groups (0, 1, 2...), so it can be saved with
:func:`minigrad.save` and loaded into an optimizer built the same way.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor


class _Required:
    def __repr__(self):
        return "<required>"


required = _Required()


class Optimizer:
    """Base class: subclasses set ``defaults`` and implement ``step()``."""

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state = {}           # Parameter -> dict of per-parameter state
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Tensors "
                            "(e.g. model.parameters()), got a single Tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        """Add a group of parameters with (optionally) its own hyper-parameters."""
        if not isinstance(group, dict):
            raise TypeError(f"param group must be a dict, got {type(group).__name__}")
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} can only optimize Tensors, got "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"{type(self).__name__} can only optimize leaf tensors "
                                 f"(got one made by {p.grad_fn.name})")
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"{type(self).__name__}: parameter group didn't specify "
                                 f"a value of required hyper-parameter {name!r}")
            group.setdefault(name, default)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in existing for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError(f"{type(self).__name__}: a parameter appears in more than one "
                             "group (or twice in one)")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (``p.grad = None``)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = Tensor._wrap(backend.get_array_module(p.grad.data).zeros_like(p.grad.data))

    def step(self):
        raise NotImplementedError

    # ---- saving and resuming -------------------------------------------------------
    def _params_in_order(self):
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        """``{"state": {index: {name: array or number}}, "param_groups": [...]}``
        with NumPy copies of every state array; groups list their parameters by
        index.  Round-trips through :func:`minigrad.save` / :func:`minigrad.load`."""
        index = {id(p): i for i, p in enumerate(self._params_in_order())}
        state = {}
        for p, s in self.state.items():
            state[index[id(p)]] = {k: (np.array(backend.to_numpy(v), copy=True)
                                       if hasattr(v, "shape") else v) for k, v in s.items()}
        groups = []
        for g in self.param_groups:
            entry = {k: v for k, v in g.items() if k != "params"}
            entry["params"] = [index[id(p)] for p in g["params"]]
            groups.append(entry)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyper-parameters and per-parameter state saved by
        :meth:`state_dict` into an optimizer over the same parameters."""
        who = type(self).__name__
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{who}.load_state_dict: the checkpoint has {len(groups)} "
                             f"parameter group(s), this optimizer {len(self.param_groups)}")
        for i, (saved, own) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(own["params"]):
                raise ValueError(f"{who}.load_state_dict: group {i} has {len(saved['params'])} "
                                 f"parameters in the checkpoint but {len(own['params'])} here")
        params = self._params_in_order()
        new_state = {}
        for key, s in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{who}.load_state_dict: state for parameter {i}, but there "
                                 f"are only {len(params)}")
            p = params[i]
            entry = {}
            for name, value in s.items():
                if hasattr(value, "shape") and np.ndim(value) > 0:
                    if tuple(value.shape) != tuple(p.shape):
                        raise ValueError(f"{who}.load_state_dict: {name} of parameter {i} has "
                                         f"shape {tuple(value.shape)} in the checkpoint but the "
                                         f"parameter has shape {tuple(p.shape)}")
                    xp = backend.get_array_module(p.data)
                    value = xp.array(np.asarray(value), dtype=p.dtype)
                elif hasattr(value, "shape"):
                    value = value.item()
                entry[name] = value
            new_state[p] = entry
        for saved, own in zip(groups, self.param_groups):
            for k, v in saved.items():
                if k != "params":
                    own[k] = v
        self.state = new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(g):
                if k != "params":
                    lines.append(f"    {k}: {g[k]}")
        return "\n".join(lines) + "\n)"
