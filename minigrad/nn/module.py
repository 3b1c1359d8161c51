"""``Parameter`` and ``Module``: the building blocks of every network.

A :class:`Module` owns three kinds of state, registered automatically when an
attribute is assigned in ``__init__``:

* **parameters** (:class:`Parameter`): tensors the optimizer trains
  (``self.weight = Parameter(...)``);
* **buffers** (``self.register_buffer("running_mean", ...)``): tensors that are
  part of the model's state but not trained (batch-norm running statistics);
* **sub-modules** (``self.conv1 = Conv2d(...)``), which own state of their own.

From this registry come ``parameters()`` / ``named_parameters()`` (dotted names
like ``layer1.0.conv1.weight``, as in PyTorch), ``state_dict()`` /
``load_state_dict()``, ``train()`` / ``eval()``, ``to(device, dtype)``, and a
nested ``repr``.  Calling a module runs its ``forward`` and then any forward
hooks (used, for instance, to record the standard deviation of each layer's
responses, as in Fig. 7 of the ResNet paper).
"""
from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that is a trainable parameter of a :class:`Module`.

    ``Parameter(data, requires_grad=True)``.  Assigning one to a module
    attribute registers it, so ``module.parameters()`` yields it.
    """

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.zeros((0,), dtype=np.float32)
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by ``register_forward_hook``; ``handle.remove()`` undoes it."""

    _next_id = 0

    def __init__(self, hooks: OrderedDict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _as_tensor(value, what):
    if value is None or isinstance(value, Tensor):
        return value
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return Tensor(value)
    raise TypeError(f"{what}: expected a Tensor, an array or None, got {type(value).__name__}")


def _parse_to_args(device, dtype):
    """``to("cuda")``, ``to(np.float64)``, ``to("float64")``, ``to(device=..., dtype=...)``."""
    if device is not None and dtype is None:
        try:
            device = backend.normalize_device(device)
        except ValueError:
            device, dtype = None, device
    if device is not None:
        device = backend.normalize_device(device)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"Module.to: only floating dtypes are supported, got {dtype}")
    return device, dtype


def _convert(array, device, dtype):
    if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
        array = array.astype(dtype)
    if device is not None and backend.device_of(array) != device:
        array = backend.to_device(array, device)
    return array


def _addindent(text, spaces):
    lines = text.split("\n")
    return lines[0] + "".join("\n" + " " * spaces + line for line in lines[1:])


class Module:
    """Base class of all layers and networks (``torch.nn.Module``'s design).

    Subclasses call ``super().__init__()`` first, assign parameters, buffers
    and sub-modules as attributes, and define ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # ---- calling --------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def register_forward_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs, output)`` after every forward; a hook that
        returns something replaces the output.  ``inputs`` is the tuple of
        positional arguments.  Returns a handle with ``remove()``."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """Call ``hook(module, inputs)`` before every forward; returning a value
        replaces the inputs."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    # ---- registration -----------------------------------------------------------
    def _check_name(self, name, kind):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name must be a str, got {type(name).__name__}")
        if name == "" or "." in name:
            raise KeyError(f"{kind} name {name!r} must be non-empty and contain no '.'")

    def register_parameter(self, name: str, param) -> None:
        """Add a parameter (or ``None``, e.g. a layer built with ``bias=False``)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning parameters")
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign {type(param).__name__} as parameter {name!r} "
                            "(wrap it: Parameter(tensor))")
        if name in self.__dict__:
            object.__delattr__(self, name)
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add state that is saved with the model but not trained (running
        statistics).  ``tensor`` is a Tensor, an array or None; arrays are
        wrapped in a Tensor.  ``persistent=False`` keeps it out of state_dict."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("call Module.__init__() before registering buffers")
        self._check_name(name, "buffer")
        if isinstance(tensor, Parameter):
            raise TypeError(f"buffer {name!r} cannot be a Parameter")
        if name in self.__dict__:
            object.__delattr__(self, name)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = _as_tensor(tensor, f"register_buffer({name!r})")
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        self._check_name(str(name), "module")
        name = str(name)
        if name in self.__dict__:
            object.__delattr__(self, name)
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, Module):
            self.add_module(name, value)
        elif "_parameters" in self.__dict__ and name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} "
                                "(expected a Parameter or None)")
            self._parameters[name] = None
        elif "_modules" in self.__dict__ and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}")
            self._modules[name] = None
        elif "_buffers" in self.__dict__ and name in self._buffers:
            self._buffers[name] = _as_tensor(value, f"buffer {name!r}")
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- walking the tree ----------------------------------------------------------
    def named_modules(self, memo=None, prefix: str = ""):
        """Yield ``(name, module)`` for this module and every descendant, once each."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, registry, recurse, skip_non_persistent=False):
        seen = set()
        walk = self.named_modules() if recurse else [("", self)]
        for prefix, module in walk:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                if skip_non_persistent and name in module._non_persistent:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Yield ``(dotted_name, parameter)``; a shared parameter appears once."""
        for name, p in self._named_members("_parameters", recurse):
            yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self, recurse: bool = True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        for name, b in self._named_members("_buffers", recurse):
            yield (f"{prefix}.{name}" if prefix else name), b

    def buffers(self, recurse: bool = True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Total number of parameter elements (shared parameters counted once)."""
        return int(sum(p.size for p in self.parameters()
                       if p.requires_grad or not trainable_only))

    def apply(self, fn):
        """Call ``fn(module)`` on every sub-module (children first), then on self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients ---------------------------------------------------------
    def train(self, mode: bool = True):
        """Training mode (dropout active, batch norm uses batch statistics)."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): mode must be a bool, got {type(mode).__name__}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True):
        """Forget the gradients of all parameters (``p.grad = None``)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = Tensor._wrap(backend.get_array_module(p.grad.data).zeros_like(p.grad.data))

    # ---- devices and dtypes --------------------------------------------------------------
    def to(self, device=None, dtype=None):
        """Move and/or cast every parameter and buffer **in place**.

        The Parameter objects stay the same (only their ``.data`` changes), so an
        optimizer built before the call still holds them; its own state (momentum)
        is not moved, so build the optimizer after moving the model.  Only
        floating-point values are cast (``num_batches_tracked`` stays int64).
        Accepts ``to("cuda")``, ``to(np.float64)``, ``to(device=..., dtype=...)``.
        """
        device, dtype = _parse_to_args(device, dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is None:
                    continue
                p.data = _convert(p.data, device, dtype)
                if p.grad is not None:
                    p.grad = Tensor._wrap(_convert(p.grad.data, device, dtype))
            for b in module._buffers.values():
                if b is not None:
                    b.data = _convert(b.data, device, dtype)
        return self

    def cpu(self):
        return self.to(device="cpu")

    def cuda(self):
        return self.to(device="cuda")

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    # ---- state ---------------------------------------------------------------------------
    def _state_items(self):
        """(name, tensor) of every parameter and persistent buffer, in PyTorch's
        order: a module's own parameters, then its buffers, then its children."""
        for prefix, module in self.named_modules():
            pre = f"{prefix}." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield pre + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    yield pre + name, b

    def state_dict(self) -> OrderedDict:
        """An ordered ``{name: NumPy array}`` copy of all parameters and buffers."""
        return OrderedDict((name, np.array(backend.to_numpy(t.data), copy=True))
                           for name, t in self._state_items())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values from ``state_dict`` into this model's arrays (in place, so
        device and dtype stay the model's).

        Raises ValueError listing every missing key and every unexpected key
        (when ``strict``) and every shape mismatch (always).  Returns
        ``(missing_keys, unexpected_keys)``.
        """
        own = OrderedDict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and missing:
            errors.append("missing keys: " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            errors.append("unexpected keys: " + ", ".join(repr(k) for k in unexpected))
        values = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if isinstance(value, Tensor):
                value = value.data
            value = backend.to_numpy(value) if hasattr(value, "shape") else np.asarray(value)
            if tuple(value.shape) != tuple(target.shape):
                errors.append(f"load_state_dict: {name!r} has shape {tuple(value.shape)} in the "
                              f"checkpoint but {tuple(target.shape)} in the model")
            values[name] = value
        if errors:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  "
                             + "\n  ".join(errors))
        for name, value in values.items():
            target = own[name]
            xp = backend.get_array_module(target.data)
            target.data[...] = xp.asarray(value.astype(target.dtype, copy=False))
        return IncompatibleKeys(missing, unexpected)

    def save(self, path) -> None:
        """Write ``state_dict()`` to an ``.npz`` file (atomically, no pickle)."""
        from ..serialization import save_npz
        save_npz(self.state_dict(), path)

    def load(self, path, strict: bool = True):
        """Load parameters and buffers saved by :meth:`save`."""
        from ..serialization import load_npz
        return self.load_state_dict(load_npz(path), strict=strict)

    # ---- printing ------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The configuration shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_addindent(repr(m), 2)}" for name, m in self._modules.items()]
        body = lines + children
        main = type(self).__name__ + "("
        if body:
            if len(lines) == 1 and not children:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(body) + "\n"
        return main + ")"
