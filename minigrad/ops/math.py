"""Element-wise arithmetic, matrix product and reductions.

Broadcasting: when ``x`` of shape (3, 1) meets ``y`` of shape (4,), the forward
pass broadcasts both to (3, 4).  The gradient flowing back has the broadcast
shape, so each input's gradient is summed over the axes that were stretched
(:func:`unbroadcast`).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from ..tensor import Function, Tensor, data_of


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the adjoint of broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    out = grad.sum(axis=axes, keepdims=True)
    return out.reshape(shape)


# --- binary arithmetic -------------------------------------------------------
class Add(Function):
    """z = x + y;  dz/dx = 1, dz/dy = 1."""
    def forward(self, x, y):
        self.shapes = (x.shape, y.shape)
        return x + y

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(g, self.shapes[1])


class AddFast(Add):
    """CPU fast path for two contiguous arrays of one shape (no broadcasting):
    one pass on all the cores (kernels/cpu_numba.py) instead of NumPy's one."""
    def forward(self, x, y):
        self.shapes = (x.shape, y.shape)
        return config.cpu_kernels().add(x, y)


class Sub(Function):
    """z = x - y;  dz/dx = 1, dz/dy = -1."""
    def forward(self, x, y):
        self.shapes = (x.shape, y.shape)
        return x - y

    def backward(self, g):
        return unbroadcast(g, self.shapes[0]), unbroadcast(-g, self.shapes[1])


class Mul(Function):
    """z = x * y;  dz/dx = y, dz/dy = x."""
    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, g):
        gx = unbroadcast(g * self.y, self.x.shape) if self.needs_input_grad[0] else None
        gy = unbroadcast(g * self.x, self.y.shape) if self.needs_input_grad[1] else None
        return gx, gy


class Div(Function):
    """z = x / y;  dz/dx = 1/y, dz/dy = -x/y²."""
    def forward(self, x, y):
        self.x, self.y = x, y
        return x / y

    def backward(self, g):
        gx = unbroadcast(g / self.y, self.x.shape) if self.needs_input_grad[0] else None
        gy = (unbroadcast(-g * self.x / (self.y * self.y), self.y.shape)
              if self.needs_input_grad[1] else None)
        return gx, gy


class MatMul(Function):
    """Z = X @ Y (2-D, or batched with leading dims);  dX = G Yᵀ, dY = Xᵀ G."""
    def forward(self, x, y):
        if x.ndim < 2 or y.ndim < 2:
            raise ValueError(f"matmul needs arrays of at least 2 dims, got {x.shape} @ {y.shape}")
        if x.shape[-1] != y.shape[-2]:
            raise ValueError(f"matmul: inner sizes differ: {x.shape} @ {y.shape}")
        self.x, self.y = x, y
        return x @ y

    def backward(self, g):
        x, y = self.x, self.y
        gx = unbroadcast(g @ y.swapaxes(-1, -2), x.shape) if self.needs_input_grad[0] else None
        gy = unbroadcast(x.swapaxes(-1, -2) @ g, y.shape) if self.needs_input_grad[1] else None
        return gx, gy


# --- unary element-wise --------------------------------------------------------
class Neg(Function):
    """y = -x;  dy/dx = -1."""
    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Pow(Function):
    """y = x**p for a constant p;  dy/dx = p·x^(p-1)."""
    def __init__(self, exponent):
        self.p = float(exponent)

    def forward(self, x):
        self.x = x
        return x ** self.x.dtype.type(self.p)

    def backward(self, g):
        p = self.x.dtype.type(self.p)
        return g * p * self.x ** (p - 1)


class Exp(Function):
    """y = eˣ;  dy/dx = y."""
    def forward(self, x):
        self.y = backend.get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        return g * self.y


class Log(Function):
    """y = ln x;  dy/dx = 1/x."""
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).log(x)

    def backward(self, g):
        return g / self.x


class Sqrt(Function):
    """y = √x;  dy/dx = 1/(2y)."""
    def forward(self, x):
        self.y = backend.get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        return g / (2 * self.y)


class Abs(Function):
    """y = |x|;  dy/dx = sign(x) (0 at 0)."""
    def forward(self, x):
        self.x = x
        return backend.get_array_module(x).abs(x)

    def backward(self, g):
        return g * backend.get_array_module(g).sign(self.x)


class Tanh(Function):
    """y = tanh x;  dy/dx = 1 - y²."""
    def forward(self, x):
        self.y = backend.get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return g * (1 - self.y * self.y)


class Sigmoid(Function):
    """y = 1/(1+e⁻ˣ);  dy/dx = y(1-y).  Computed as ½(1+tanh(x/2)) to avoid overflow."""
    def forward(self, x):
        xp = backend.get_array_module(x)
        self.y = 0.5 * (1 + xp.tanh(0.5 * x))
        return self.y

    def backward(self, g):
        return g * self.y * (1 - self.y)


# --- reductions -----------------------------------------------------------------
def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axis = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(a % ndim for a in axis))


def _expand(g, shape, axes, keepdims):
    """Re-insert reduced axes so ``g`` broadcasts against the input shape."""
    if not keepdims:
        for a in axes:
            g = backend.get_array_module(g).expand_dims(g, a)
    return g


class Sum(Function):
    """y = Σ x over ``axis``;  dy/dx = 1 broadcast back to x's shape."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape, self.axes = x.shape, _axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        return xp.broadcast_to(_expand(g, self.shape, self.axes, self.keepdims), self.shape).copy()


class Mean(Function):
    """y = (1/n) Σ x over ``axis``;  dy/dx = 1/n."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape, self.axes = x.shape, _axes(self.axis, x.ndim)
        self.n = int(np.prod([x.shape[a] for a in self.axes])) if self.axes else 1
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        xp = backend.get_array_module(g)
        g = _expand(g, self.shape, self.axes, self.keepdims) / g.dtype.type(self.n)
        return xp.broadcast_to(g, self.shape).copy()


class Max(Function):
    """y = max x over ``axis``;  the gradient goes to the arg-max positions
    (shared equally between ties, so it stays a valid sub-gradient)."""
    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _axes(self.axis, x.ndim)
        y = x.max(axis=self.axes, keepdims=True)
        self.mask = (x == y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(x.shape)
                                                   if i not in self.axes])

    def backward(self, g):
        g = _expand(g, self.mask.shape, self.axes, self.keepdims)
        count = self.mask.sum(axis=self.axes, keepdims=True)
        return (self.mask * (g / count)).astype(g.dtype)


# --- dtype and device --------------------------------------------------------------
class Cast(Function):
    """y = x as another dtype; the gradient is cast back."""
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def forward(self, x):
        self.src = x.dtype
        return x.astype(self.dtype)

    def backward(self, g):
        return g.astype(self.src)


class ToDevice(Function):
    """y = x on another device (CPU ↔ GPU); the gradient travels back."""
    def __init__(self, device):
        self.device = backend.normalize_device(device)

    def forward(self, x):
        self.src = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, g):
        return backend.to_device(g, self.src)


# --- the public functions -------------------------------------------------------------
def add(x, y):
    a, b = data_of(x), data_of(y)
    fast = (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.flags.c_contiguous and b.flags.c_contiguous and config.use_fast(a, b))
    return (AddFast if fast else Add)()(x, y)


def sub(x, y): return Sub()(x, y)
def mul(x, y): return Mul()(x, y)
def div(x, y): return Div()(x, y)
def neg(x): return Neg()(x)
def exp(x): return Exp()(x)
def log(x): return Log()(x)
def sqrt(x): return Sqrt()(x)
def abs(x): return Abs()(x)  # noqa: A001  (mirrors torch.abs)
def tanh(x): return Tanh()(x)
def sigmoid(x): return Sigmoid()(x)
def matmul(x, y): return MatMul()(x, y)


def pow(x, exponent):  # noqa: A001  (mirrors torch.pow)
    """x ** exponent for a constant (Python number) exponent."""
    if isinstance(exponent, Tensor):
        raise TypeError("pow: the exponent must be a Python number, not a Tensor")
    return Pow(exponent)(x)


def sum(x, dim=None, keepdim=False):  # noqa: A001
    return Sum(dim, keepdim)(x)


def mean(x, dim=None, keepdim=False):
    return Mean(dim, keepdim)(x)


def max(x, dim=None, keepdim=False):  # noqa: A001
    return Max(dim, keepdim)(x)
