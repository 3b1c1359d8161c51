"""Shape ops: reshape, transpose, slicing, padding, concatenation (and ResNet's
subsample-and-pad shortcut).

None of them change values, they only move them; so each backward moves the
gradient back to where the value came from.
"""
from __future__ import annotations

from .. import backend
from .. import config   # the CPU fast path switch (kernels/cpu_numba.py)
from ..tensor import Function, Tensor, data_of


class Reshape(Function):
    """y = x viewed with a new shape;  dx = dy viewed with x's shape."""
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.in_shape = x.shape
        try:
            return x.reshape(self.shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {x.shape} ({x.size} elements) "
                             f"as {tuple(self.shape)}") from None

    def backward(self, g):
        return g.reshape(self.in_shape)


class Permute(Function):
    """y = x with its axes reordered;  dx = dy with the inverse order."""
    def __init__(self, dims):
        self.dims = tuple(dims)

    def forward(self, x):
        if sorted(d % x.ndim for d in self.dims) != list(range(x.ndim)):
            raise ValueError(f"permute: {self.dims} is not an ordering of the {x.ndim} axes of {x.shape}")
        return x.transpose(self.dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d % len(self.dims)] = i
        return g.transpose(inverse)


def _is_basic_index(index):
    """True for basic indexing (ints, slices, None, ...): it never repeats an
    element, so the backward can assign instead of accumulating."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in items)


class GetItem(Function):
    """y = x[index] (basic or advanced indexing);  dx = zeros with dy put back
    where it came from (basic indexing: a plain assignment; advanced indexing:
    ``add.at``, so repeated indices add up)."""
    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        xp = backend.get_array_module(g)
        gx = xp.zeros(self.shape, dtype=g.dtype)
        if _is_basic_index(self.index):
            gx[self.index] = g
        elif xp is backend.np:
            xp.add.at(gx, self.index, g)
        else:                      # CuPy spells add.at as cupyx.scatter_add
            import cupyx
            cupyx.scatter_add(gx, self.index, g)
        return gx


class Pad(Function):
    """Constant padding, widths as ``numpy.pad`` takes them ((before, after) per
    axis);  dx = the centre of dy (the padded border has no source)."""
    def __init__(self, widths, value=0.0):
        self.widths, self.value = tuple(tuple(w) for w in widths), value

    def forward(self, x):
        xp = backend.get_array_module(x)
        self.slices = tuple(slice(b, b + n) for (b, _), n in zip(self.widths, x.shape))
        return xp.pad(x, self.widths, mode="constant", constant_values=self.value)

    def backward(self, g):
        return g[self.slices]


class SubsamplePad(Function):
    """y = x[:, :, ::s, ::s] with ``extra`` channels of zeros appended (ResNet's
    option-A shortcut: every s-th pixel, then zeros up to the new width);
    dx = zeros with dy's first C channels put back at every s-th pixel."""
    def __init__(self, stride, extra):
        self.stride, self.extra = stride, extra

    def forward(self, x):
        xp = backend.get_array_module(x)
        s = self.stride
        self.shape = x.shape
        sub = x[:, :, ::s, ::s]
        y = xp.zeros((x.shape[0], x.shape[1] + self.extra) + sub.shape[2:], x.dtype)
        y[:, :x.shape[1]] = sub
        return y

    def backward(self, g):
        xp = backend.get_array_module(g)
        s = self.stride
        dx = xp.zeros(self.shape, g.dtype)
        dx[:, :, ::s, ::s] = g[:, :self.shape[1]]
        return dx


class SubsamplePadFast(SubsamplePad):
    """CPU fast path (kernels/cpu_numba.py): both ways in one parallel pass
    over the images, instead of NumPy's zero-fill and strided copy on one core."""
    def forward(self, x):
        self.shape = x.shape
        return config.cpu_kernels().subsample_pad(x, self.stride, self.extra)

    def backward(self, g):
        return config.cpu_kernels().subsample_pad_grad(g, self.stride, self.shape)


class Concat(Function):
    """y = [x₁, x₂, ...] joined along ``axis``;  each dxᵢ is its slice of dy."""
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        xp = backend.get_array_module(xs[0])
        self.bounds = []
        start = 0
        for x in xs:
            self.bounds.append((start, start + x.shape[self.axis]))
            start += x.shape[self.axis]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, g):
        axis = self.axis % g.ndim
        return tuple(g[(slice(None),) * axis + (slice(a, b),)] for a, b in self.bounds)


# --- the public functions --------------------------------------------------
def reshape(x, *shape):
    """``x.reshape(2, -1)`` or ``reshape(x, (2, -1))``."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape(shape)(x)


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim..end_dim`` into one (``torch.flatten``)."""
    nd = x.ndim
    s, e = start_dim % nd, end_dim % nd
    shape = x.shape[:s] + (-1,) + x.shape[e + 1:] if x.size else x.shape[:s] + (0,) + x.shape[e + 1:]
    return Reshape(shape)(x)


def permute(x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return Permute(dims)(x)


def transpose(x, dim0, dim1):
    """Swap two axes (``torch.transpose``)."""
    dims = list(range(x.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute(dims)(x)


def getitem(x, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem(index)(x)


def pad(x, pad, value=0.0):
    """``torch.nn.functional.pad`` for constant mode: ``pad`` lists
    (left, right) of the last axis, then (top, bottom) of the one before, ..."""
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: needs pairs for at most {x.ndim} axes, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad(widths, value)(x)


def subsample_pad(x, stride, extra_channels):
    """``x[:, :, ::stride, ::stride]`` of an (N, C, H, W) input with
    ``extra_channels`` channels of zeros appended: (N, C + extra, ⌈H/s⌉, ⌈W/s⌉).
    ResNet's parameter-free shortcut (option A) for a block that changes shape."""
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(f"subsample_pad: expected input (N, C, H, W), got shape {shape}")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"subsample_pad: stride must be a positive integer, got {stride!r}")
    if int(extra_channels) != extra_channels or extra_channels < 0:
        raise ValueError(f"subsample_pad: extra_channels must be an integer >= 0, "
                         f"got {extra_channels!r}")
    a = data_of(x)
    fast = config.use_fast(a) and a.flags.c_contiguous
    return (SubsamplePadFast if fast else SubsamplePad)(int(stride), int(extra_channels))(x)


def cat(tensors, dim=0):
    """Join tensors along an existing axis (``torch.cat``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: needs at least one tensor")
    return Concat(dim)(*tensors)


concat = cat


def stack(tensors, dim=0):
    """Join tensors along a new axis (``torch.stack``)."""
    tensors = list(tensors)
    expanded = []
    for t in tensors:
        shape = list(t.shape)
        shape.insert(dim % (t.ndim + 1), 1)
        expanded.append(reshape(t, tuple(shape)))
    return Concat(dim)(*expanded)
