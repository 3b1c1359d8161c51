"""The autograd engine: ``Tensor``, ``Function`` and ``backward``.

This file is the whole engine; the operations themselves live in ``minigrad/ops``.

* A :class:`Tensor` wraps an array (NumPy or CuPy) and remembers the
  :class:`Function` that produced it (``tensor._ctx``).  Calling functions on
  tensors therefore builds a directed acyclic graph as the program runs
  ("define-by-run").
* A :class:`Function` has a ``forward`` that maps input *arrays* to one output
  array and a ``backward`` that maps the gradient of the output to one gradient
  per input (the vector-Jacobian product).  Both work on raw arrays, so an op
  reads like the math.
* :meth:`Tensor.backward` sorts the graph topologically with an explicit stack
  (no recursion, so ResNet-1202's thousands of nodes are fine), walks it from the
  output back to the leaves, sums the gradients that meet at a node, and stores
  them in ``.grad`` of the leaves (and of any tensor that asked with
  :meth:`Tensor.retain_grad`).  The graph is freed as it is walked unless
  ``retain_graph=True``.
* A leaf's ``.grad`` is final as soon as every op that used it has been
  walked, and the order puts each leaf right after its last user: the last
  layer's weights are done while the earlier layers' backward is still to
  come.  :meth:`Tensor.register_post_accumulate_grad_hook` is called at that
  moment (data-parallel training starts averaging those gradients there).
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import backend, config, promotion


# ----------------------------------------------------------------------------
# Global switches: gradient recording, and "keep every intermediate gradient"
# ----------------------------------------------------------------------------
class _Config:
    grad_enabled = True
    retain_all_grads = False


@contextlib.contextmanager
def _switch(name, value):
    old = getattr(_Config, name)
    setattr(_Config, name, value)
    try:
        yield
    finally:
        setattr(_Config, name, old)


def no_grad():
    """Context manager: run without recording the graph (evaluation, updates)."""
    return _switch("grad_enabled", False)


def enable_grad():
    """Context manager: record the graph again inside a ``no_grad`` block."""
    return _switch("grad_enabled", True)


def is_grad_enabled() -> bool:
    return _Config.grad_enabled


def retain_grads():
    """Context manager: every tensor created inside keeps its ``.grad`` after
    backward, so a learner can look at the gradient of each intermediate."""
    return _switch("retain_all_grads", True)


# ----------------------------------------------------------------------------
# Function: one node of the graph
# ----------------------------------------------------------------------------
class Function:
    """Base class of every differentiable operation.

    Subclasses implement

    * ``forward(self, *arrays) -> array``: compute the output; save on ``self``
      whatever backward needs (only when ``self.needs_input_grad`` has a True);
    * ``backward(self, grad_output) -> array | tuple``: one gradient per input
      (``None`` for inputs that need none), each with its input's shape.

    Hyper-parameters (stride, axis, ...) go to ``__init__``; the call
    ``MyOp(hyper)(x, y)`` runs forward and records the node.
    """

    needs_input_grad: tuple = ()
    inputs: tuple = ()

    def __call__(self, *inputs) -> "Tensor":
        ref = next((t for t in inputs if isinstance(t, Tensor)), None)
        tensors = tuple(t if isinstance(t, Tensor) else _constant(t, ref) for t in inputs)
        self.needs_input_grad = tuple(t.requires_grad for t in tensors)
        record = _Config.grad_enabled and any(self.needs_input_grad)
        if not record:
            self.needs_input_grad = (False,) * len(tensors)
        out = Tensor._wrap(self.forward(*(t.data for t in tensors)), record)
        if record:
            self.inputs = tensors
            out._ctx = self
            out._retain_grad = _Config.retain_all_grads
        return out

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def _free(self):
        """Drop saved arrays and input references once backward is done."""
        vars(self).clear()
        self.freed = True


def data_of(value):
    """The array inside a Tensor; any other value (an array, None) as it is."""
    return value.data if isinstance(value, Tensor) else value


def _constant(value, ref):
    """Lift a Python scalar or array to a constant Tensor matching ``ref``."""
    if ref is not None and np.isscalar(value):
        xp = backend.get_array_module(ref.data)
        return Tensor._wrap(xp.asarray(value, dtype=ref.dtype), False)
    return Tensor(value)


# ----------------------------------------------------------------------------
# Tensor
# ----------------------------------------------------------------------------
class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None, device=None)``: ``data`` is an
    array, a nested list or a scalar.  Arrays keep their dtype (so float64 stays
    float64 for gradient checks); Python floats become float32, minigrad's
    default, Python ints int64.

    Arithmetic (``+ - * / **``) on mixed dtypes follows PyTorch, not NumPy
    (:mod:`minigrad.promotion`): an integer tensor with a Python float gives
    float32, float32 with a Python float stays float32, integers with integers
    stay integers (``/`` gives float32), int64 with a float32 tensor gives
    float32; a zero-dimensional tensor or a scalar widens the result only
    when it is of a higher kind (bool < int < float).  Subtracting or negating
    bools is an error.
    """

    __array_priority__ = 1000   # make ``ndarray + Tensor`` call Tensor.__radd__
    __hash__ = object.__hash__  # comparisons return Tensors, identity hashes
    _post_accumulate_hooks = ()  # a list of its own once a hook is registered

    def __init__(self, data, requires_grad=False, dtype=None, device=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if isinstance(data, np.generic):        # NumPy scalar: keep its dtype
            data = np.asarray(data)
        elif not hasattr(data, "dtype"):        # Python scalar or nested list
            data = np.asarray(data)
            if data.dtype == np.float64 and dtype is None:
                data = data.astype(np.float32)
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        if device is not None:
            data = backend.to_device(data, device)
        self._init(data, requires_grad)
        self.name = name

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Make a Tensor around an array without any conversion."""
        t = cls.__new__(cls)
        t._init(array, requires_grad)
        t.name = None
        return t

    def _init(self, array, requires_grad):
        if requires_grad and array.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require grad, got {array.dtype}")
        self.data = array
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._ctx = None
        self._retain_grad = False
        self._hooks = []

    # ---- array-like properties -----------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)
    grad_fn = property(lambda self: self._ctx)

    def __len__(self):
        return len(self.data)

    def __array__(self, dtype=None, copy=None):
        a = backend.to_numpy(self.data)
        return a if dtype is None else a.astype(dtype, copy=False)

    def numpy(self) -> np.ndarray:
        """The values as a NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def __repr__(self):
        body = np.array2string(self.numpy(), precision=4, separator=", ", threshold=20,
                               prefix="tensor(")
        extra = ""
        if self.dtype != np.float32:
            extra += f", dtype={self.dtype}"
        if self.device != "cpu":
            extra += f", device='{self.device}'"
        if self._ctx is not None:
            extra += f", grad_fn=<{self._ctx.name}>"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # ---- graph control ---------------------------------------------------
    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory)."""
        return Tensor._wrap(self.data, False)

    def requires_grad_(self, flag=True) -> "Tensor":
        if flag and self.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require grad, got {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` of this non-leaf tensor after backward."""
        self._retain_grad = True
        return self

    def register_hook(self, hook):
        """Call ``hook(grad)`` when this tensor's gradient is known; the hook may
        return a Tensor that replaces the gradient.  Returns a remover."""
        self._hooks.append(hook)
        return _HookHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` during backward right after this leaf's
        ``.grad`` has received its last contribution of that backward (so
        ``tensor.grad`` is final for it).  Leaves only.  Returns a remover."""
        if self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors "
                               "(parameters, inputs) accumulate a .grad")
        if not self._post_accumulate_hooks:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        return _HookHandle(self._post_accumulate_hooks, hook)

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor to every tensor it depends on.

        ``grad`` is d(something)/d(self); it defaults to 1 for a one-element
        tensor.  Leaf gradients *accumulate* into ``.grad`` across calls.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad "
                               "(no input of it has requires_grad=True, or it was made under no_grad)")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a one-element tensor, "
                                   f"got shape {self.shape}; pass grad= of that shape")
            g = xp.ones_like(self.data)
        else:
            g = xp.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if g.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {g.shape}, tensor has {self.shape}")

        grads = {id(self): g}
        for node in _topological_order(self):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            for hook in node._hooks:
                replaced = hook(Tensor._wrap(g))
                if replaced is not None:
                    g = replaced.data if isinstance(replaced, Tensor) else replaced
            fn = node._ctx
            if fn is None or node._retain_grad:
                node.grad = Tensor._wrap(g if node.grad is None else node.grad.data + g)
            if fn is None:
                for hook in node._post_accumulate_hooks:
                    hook(node)
                continue
            if getattr(fn, "freed", False):
                raise RuntimeError(f"backward through {fn.name} a second time: its saved arrays "
                                   "were freed; call backward(retain_graph=True) the first time")
            gxs = fn.backward(g)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            for x, gx, need in zip(fn.inputs, gxs, fn.needs_input_grad):
                if not need or gx is None:
                    continue
                if gx.shape != x.shape:
                    raise RuntimeError(f"{fn.name}.backward returned a gradient of shape "
                                       f"{gx.shape} for an input of shape {x.shape}")
                key = id(x)
                grads[key] = gx if key not in grads else _accumulate(grads[key], gx)
            if not retain_graph:
                fn._free()

    # ---- devices and dtypes ----------------------------------------------
    def to(self, device=None, dtype=None) -> "Tensor":
        """Move to 'cpu' or 'cuda' and/or cast; differentiable like PyTorch's."""
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _ops.Cast(dtype)(out)
        if device is not None and backend.normalize_device(device) != self.device:
            out = _ops.ToDevice(device)(out)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(dtype=np.float32)

    def double(self):
        return self.to(dtype=np.float64)

    def astype(self, dtype):
        return self.to(dtype=dtype)

    # ---- operators (the ops live in minigrad/ops; dtypes as in PyTorch) -----
    def __add__(self, other): return _ops.add(*_promoted(self, other))
    def __radd__(self, other): return _ops.add(*_promoted(other, self))
    def __sub__(self, other): return _ops.sub(*_promoted(self, other, "sub"))
    def __rsub__(self, other): return _ops.sub(*_promoted(other, self, "sub"))
    def __mul__(self, other): return _ops.mul(*_promoted(self, other))
    def __rmul__(self, other): return _ops.mul(*_promoted(other, self))
    def __truediv__(self, other): return _ops.div(*_promoted(self, other, "div"))
    def __rtruediv__(self, other): return _ops.div(*_promoted(other, self, "div"))

    def __neg__(self):
        if self.dtype.kind == "b":
            raise TypeError("negation, the `-` operator, on a bool tensor is not supported; "
                            "to invert a mask use `~` (or logical_not)")
        return _ops.neg(self)

    def __pow__(self, exponent):
        if not isinstance(exponent, Tensor):
            base, _ = _promoted(self, exponent)
            return _ops.pow(base, exponent)
        return _ops.pow(self, exponent)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __getitem__(self, index): return _shape.getitem(self, index)

    def __invert__(self):
        """``~mask``: logical not of a bool tensor (bitwise not of an integer one)."""
        if self.dtype.kind not in "biu":
            raise TypeError(f"`~` needs a bool or integer tensor, got {self.dtype}")
        return Tensor._wrap(~self.data)

    # comparisons are not differentiable: they return boolean tensors
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other))

    def __eq__(self, other): return self._compare(other, lambda a, b: a == b)
    def __ne__(self, other): return self._compare(other, lambda a, b: a != b)
    def __lt__(self, other): return self._compare(other, lambda a, b: a < b)
    def __le__(self, other): return self._compare(other, lambda a, b: a <= b)
    def __gt__(self, other): return self._compare(other, lambda a, b: a > b)
    def __ge__(self, other): return self._compare(other, lambda a, b: a >= b)

    # ---- methods mirroring torch.Tensor ------------------------------------
    def sum(self, dim=None, keepdim=False): return _ops.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return _ops.mean(self, dim, keepdim)
    def max(self, dim=None, keepdim=False): return _ops.max(self, dim, keepdim)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def pow(self, exponent): return self.__pow__(exponent)
    def abs(self): return _ops.abs(self)
    def tanh(self): return _ops.tanh(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def matmul(self, other): return _ops.matmul(self, other)
    def reshape(self, *shape): return _shape.reshape(self, *shape)
    view = reshape
    def flatten(self, start_dim=0, end_dim=-1): return _shape.flatten(self, start_dim, end_dim)
    def transpose(self, dim0, dim1): return _shape.transpose(self, dim0, dim1)
    def permute(self, *dims): return _shape.permute(self, *dims)
    T = property(lambda self: _shape.permute(self, *reversed(range(self.ndim))))

    def argmax(self, dim=None, keepdim=False):
        xp = backend.get_array_module(self.data)
        return Tensor._wrap(xp.argmax(self.data, axis=dim, keepdims=keepdim))


def _promoted(a, b, op=None):
    """``a`` and ``b`` (Tensors, arrays or scalars) converted to the one dtype
    PyTorch gives ``a op b`` (see :mod:`minigrad.promotion`); ``op`` is
    ``"div"`` (true division: integers give float32) or ``"sub"`` (no bools)."""
    if op == "sub" and (promotion.is_bool(a) or promotion.is_bool(b)):
        raise TypeError("subtraction, the `-` operator, with a bool tensor is not supported; "
                        "to invert a mask use `~` (or logical_not)")
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype \
            and (op != "div" or a.dtype.kind in "fc"):
        return a, b
    dtype = promotion.result_type(a, b)
    if op == "div" and dtype.kind in "biu":
        dtype = promotion.DEFAULT_FLOAT
    ref = a if isinstance(a, Tensor) else b
    return _operand(a, dtype, ref), _operand(b, dtype, ref)


def _operand(x, dtype, ref):
    if isinstance(x, Tensor):
        return x if x.dtype == dtype else x.to(dtype=dtype)     # differentiable cast
    if hasattr(x, "dtype") and not isinstance(x, np.generic):    # a NumPy/CuPy array
        return x if x.dtype == dtype else x.astype(dtype)
    # a scalar: on ref's device; integers wrap around like the integer tensor
    xp = backend.get_array_module(ref.data)
    return Tensor._wrap(xp.asarray(np.asarray(x).astype(dtype)), False)


class _HookHandle:
    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _accumulate(a, b):
    """a + b for two gradients of one tensor (a new array: either may be shared);
    on the CPU fast path, in one pass on all the cores."""
    if (a.shape == b.shape and config.use_fast(a, b) and a.flags.c_contiguous
            and b.flags.c_contiguous):
        return config.cpu_kernels().add(a, b)
    return a + b


def _topological_order(root):
    """Tensors reachable from ``root`` that need a gradient, output first.

    Iterative depth-first search: a node is emitted after all its inputs, and
    the list is reversed, so every node comes before the nodes it depends on.
    A node's leaf inputs are visited after its other inputs, so each leaf lands
    right behind the op that used it (the order of the ops is unchanged).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        fn = node._ctx
        if fn is not None and not getattr(fn, "freed", False):
            parents = [p for p in fn.inputs if p.requires_grad and id(p) not in visited]
            stack.extend((p, False) for p in parents if p._ctx is None)        # popped last
            stack.extend((p, False) for p in parents if p._ctx is not None)
    order.reverse()
    return order


def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    """Like ``torch.tensor``: a new leaf tensor (copies ``data``)."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_array_module(data)
    data = xp.array(data) if hasattr(data, "dtype") else data
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


# the op modules import Function and Tensor from here, so they come last
from .ops import math as _ops  # noqa: E402
from .ops import shape as _shape  # noqa: E402
