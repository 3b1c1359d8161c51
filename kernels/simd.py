"""Explicit SIMD vectors for minigrad's Numba kernels.

LLVM vectorises simple loops by itself, but it decides alone how many
vectors a loop keeps in registers, and for a convolution it keeps too few:
its accumulators go back to memory after every multiply-add.  The few
operations here let a kernel say exactly what a register-blocked loop does:
a block of accumulator vectors stays in registers while the inputs stream
past.  A vector is ``VECTOR_BYTES`` wide: one register of the CPU that Numba
compiles for, 64 bytes with AVX-512 (16 float32 or 8 float64), else 32
(AVX2: 8 float32).  Kernels size their register blocks by it, because a
block of 512-bit vectors split in two by a CPU without them no longer fits
its registers and spills (a ResNet-20 step took 20% longer that way).

Groups of vectors are Numba tuples (``UniTuple(Vector, n)``); every
operation that takes or returns a group is unrolled when compiled, so
``acc = outer_fma(acc, w, x)`` is n·m independent fused multiply-adds on
registers.  The counts must be compile-time constants (literal ints or
module constants).

The loads and stores do **no bounds checks**: the caller guarantees that
``a[i : i + n·L]`` lies inside the array (L = :func:`lanes`).  The kernels
that use them allocate their buffers with room to spare.

Operations (L lanes per vector, all unaligned memory access):

* ``lanes(a)``                  L for a's dtype
* ``load_n(a, i, n)``           the n vectors a[i + t·L : i + (t+1)·L]
* ``store_n(a, i, vs)``         the reverse
* ``store_rows(a, i, step, vs, n)``  vs as rows of n vectors, row r at a[i + r·step]
* ``load_rows(a, i, step, r, n)``    the reverse: r rows of n vectors
* ``load_at(a, offsets, n)``         n vectors from each a[o], o in the tuple ``offsets``
* ``store_at(a, offsets, vs, n)``    the reverse
* ``splat_n(a, i, n)``          a[i], a[i+1], ..., a[i+n−1], each in every lane
* ``splat_at(a, i, offsets)``   a[i + offsets[0]], a[i + offsets[1]], ..., each in every lane
* ``zeros_n(a, n)``             n zero vectors of a's dtype
* ``outer_fma(acc, w, x)``      acc[k·len(x) + v] + w[k]·x[v]  (fused, one rounding)
* ``transpose_square(vs)``      L vectors of L lanes as a matrix, transposed
* ``load_square(a, i, step)``   L vectors, vector r from a[i + r·step] (store them
                                with ``store_rows(a, i, step, vs, 1)``)
* ``prefer_512_bit_vectors()``  let LLVM's own vectoriser use 512-bit registers
                                in the calling function, too
"""
from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.extending import intrinsic, models, register_model


def _target_has_512_bit_vectors():
    """Whether the CPU Numba compiles for has AVX-512: the host's, unless
    NUMBA_CPU_FEATURES names other features (Numba's own override)."""
    if config.CPU_FEATURES is not None:
        return "+avx512f" in config.CPU_FEATURES.split(",")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


VECTOR_BYTES = 64 if _target_has_512_bit_vectors() else 32
FLOAT32_LANES = VECTOR_BYTES // 4


class Vector(types.Type):
    """A SIMD vector of ``VECTOR_BYTES // itemsize`` elements of ``dtype``."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES * 8 // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        scalar = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(scalar, fe_type.lanes))


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _group(a, count):
    """(n, vector type, tuple type) of a group of ``count`` vectors of a's
    dtype, or None while ``count`` is not yet a literal int (Numba then
    retries with the literal)."""
    if not isinstance(count, types.IntegerLiteral):
        return None
    n, vt = count.literal_value, Vector(a.dtype)
    return n, vt, types.UniTuple(vt, n)


def _element_ptr(context, builder, aty, arr, i):
    return builder.gep(context.make_array(aty)(context, builder, arr).data, [i])


def _vector_ptrs(context, builder, aty, arr, i, vt, n):
    """Pointers to the n vectors a[i + t·L], t < n."""
    p = _element_ptr(context, builder, aty, arr, i)
    lt = context.get_value_type(vt).as_pointer()
    return [builder.bitcast(builder.gep(p, [ir.Constant(_I64, t * vt.lanes)]), lt)
            for t in range(n)]


def _store_vectors(context, builder, aty, arr, i, vt, values):
    """Store the vectors ``values`` at a[i + t·L], t < len(values)."""
    align = aty.dtype.bitwidth // 8
    for v, p in zip(values, _vector_ptrs(context, builder, aty, arr, i, vt, len(values))):
        builder.store(v, p, align=align)


# A register block of rows: per_row vectors from each of the row starts, which
# are i + r·step (load_rows, store_rows, load_square) or a tuple of offsets
# (load_at, store_at).
def _strided_starts(builder, i, step, rows):
    return [builder.add(i, builder.mul(step, ir.Constant(_I64, r))) for r in range(rows)]


def _tuple_starts(context, builder, offsets, oty):
    return [context.cast(builder, builder.extract_value(offsets, r), oty.dtype, types.intp)
            for r in range(len(oty))]


def _load_block(context, builder, aty, arr, starts, vt, per_row):
    """The vectors of the rows from ``starts``, ``per_row`` from each, row by row."""
    align = aty.dtype.bitwidth // 8
    return [builder.load(p, align=align) for start in starts
            for p in _vector_ptrs(context, builder, aty, arr, start, vt, per_row)]


def _store_block(context, builder, aty, arr, starts, vt, block, per_row):
    """The reverse of :func:`_load_block`: the tuple ``block`` into the rows."""
    for r, start in enumerate(starts):
        values = [builder.extract_value(block, r * per_row + t) for t in range(per_row)]
        _store_vectors(context, builder, aty, arr, start, vt, values)


def _splat(context, builder, vt, scalar):
    """``scalar`` in every lane of a vector of type ``vt``."""
    lt = context.get_value_type(vt)
    undef = ir.Constant(lt, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(_I32, vt.lanes), [0] * vt.lanes)
    return builder.shuffle_vector(builder.insert_element(undef, scalar, ir.Constant(_I32, 0)),
                                  undef, zeros)


def _fma_function(builder, vector_type):
    """LLVM's fused multiply-add on whole vectors (llvm.fma.v16f32 and the like)."""
    bits = 32 if isinstance(vector_type.element, ir.FloatType) else 64
    name = f"llvm.fma.v{vector_type.count}f{bits}"
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vector_type, [vector_type] * 3), name)


@intrinsic
def lanes(typingctx, a):
    """The number of elements of a's dtype in one vector (a compile-time constant)."""
    n = Vector(a.dtype).lanes

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)
    return types.intp(a), codegen


@intrinsic
def load_n(typingctx, a, i, count):
    """The ``count`` consecutive vectors a[i + t·L : i + (t+1)·L], as a tuple."""
    group = _group(a, count)
    if group is None:
        return None
    n, vt, tt = group

    def codegen(context, builder, sig, args):
        ptrs = _vector_ptrs(context, builder, a, args[0], args[1], vt, n)
        align = a.dtype.bitwidth // 8
        return context.make_tuple(builder, tt, [builder.load(p, align=align) for p in ptrs])
    return tt(a, types.intp, count), codegen


@intrinsic
def store_n(typingctx, a, i, vs):
    """a[i + t·L : i + (t+1)·L] = vs[t] for every vector of the tuple ``vs``."""
    n, vt = len(vs), vs.dtype

    def codegen(context, builder, sig, args):
        values = [builder.extract_value(args[2], t) for t in range(n)]
        _store_vectors(context, builder, a, args[0], args[1], vt, values)
        return context.get_dummy_value()
    return types.none(a, types.intp, vs), codegen


@intrinsic
def store_rows(typingctx, a, i, step, vs, count):
    """vs as rows of ``count`` vectors: vector r·count + t at a[i + r·step + t·L].
    A register block of r rows (output channels, say) stored into r rows of
    a 2-D array (flat ``a``, rows ``step`` elements apart)."""
    if not isinstance(count, types.IntegerLiteral) or len(vs) % count.literal_value:
        return None
    per_row, vt = count.literal_value, vs.dtype

    def codegen(context, builder, sig, args):
        starts = _strided_starts(builder, args[1], args[2], len(vs) // per_row)
        _store_block(context, builder, a, args[0], starts, vt, args[3], per_row)
        return context.get_dummy_value()
    return types.none(a, types.intp, types.intp, vs, count), codegen


@intrinsic
def load_rows(typingctx, a, i, step, rows, count):
    """``rows`` rows of ``count`` vectors, row r from a[i + r·step]: the
    reverse of :func:`store_rows` (a register block loaded back)."""
    if not (isinstance(rows, types.IntegerLiteral) and isinstance(count, types.IntegerLiteral)):
        return None
    per_row, vt = count.literal_value, Vector(a.dtype)
    tt = types.UniTuple(vt, rows.literal_value * per_row)

    def codegen(context, builder, sig, args):
        starts = _strided_starts(builder, args[1], args[2], rows.literal_value)
        return context.make_tuple(builder, tt, _load_block(context, builder, a, args[0], starts,
                                                           vt, per_row))
    return tt(a, types.intp, types.intp, rows, count), codegen


@intrinsic
def load_at(typingctx, a, offsets, count):
    """``count`` consecutive vectors from a[o] for each o of the tuple
    ``offsets``: a register block whose rows lie anywhere in ``a``."""
    if not (isinstance(offsets, types.UniTuple) and isinstance(count, types.IntegerLiteral)):
        return None
    per_row, vt = count.literal_value, Vector(a.dtype)
    tt = types.UniTuple(vt, len(offsets) * per_row)

    def codegen(context, builder, sig, args):
        starts = _tuple_starts(context, builder, args[1], offsets)
        return context.make_tuple(builder, tt, _load_block(context, builder, a, args[0], starts,
                                                           vt, per_row))
    return tt(a, offsets, count), codegen


@intrinsic
def store_at(typingctx, a, offsets, vs, count):
    """The reverse of :func:`load_at`: vector r·count + t of ``vs`` at
    a[offsets[r] + t·L]."""
    if not (isinstance(offsets, types.UniTuple) and isinstance(count, types.IntegerLiteral)
            and len(vs) == len(offsets) * count.literal_value):
        return None
    per_row, vt = count.literal_value, vs.dtype

    def codegen(context, builder, sig, args):
        starts = _tuple_starts(context, builder, args[1], offsets)
        _store_block(context, builder, a, args[0], starts, vt, args[2], per_row)
        return context.get_dummy_value()
    return types.none(a, offsets, vs, count), codegen


@intrinsic
def splat_n(typingctx, a, i, count):
    """a[i], a[i + 1], ..., a[i + count − 1], each broadcast to a whole vector."""
    group = _group(a, count)
    if group is None:
        return None
    n, vt, tt = group

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, a, args[0], args[1])
        out = [_splat(context, builder, vt, builder.load(builder.gep(p, [ir.Constant(_I64, t)])))
               for t in range(n)]
        return context.make_tuple(builder, tt, out)
    return tt(a, types.intp, count), codegen


@intrinsic
def splat_at(typingctx, a, i, offsets):
    """a[i + o] broadcast to a whole vector, for each o of the tuple ``offsets``
    (a tuple of ints, computed once outside the loop that calls this)."""
    if not isinstance(offsets, types.UniTuple) or not isinstance(offsets.dtype, types.Integer):
        return None
    vt = Vector(a.dtype)
    tt = types.UniTuple(vt, len(offsets))

    def codegen(context, builder, sig, args):
        out = []
        for t in range(len(offsets)):
            o = context.cast(builder, builder.extract_value(args[2], t), offsets.dtype, types.intp)
            s = builder.load(_element_ptr(context, builder, a, args[0], builder.add(args[1], o)))
            out.append(_splat(context, builder, vt, s))
        return context.make_tuple(builder, tt, out)
    return tt(a, types.intp, offsets), codegen


@intrinsic
def zeros_n(typingctx, a, count):
    """``count`` vectors of zeros in a's dtype."""
    group = _group(a, count)
    if group is None:
        return None
    n, vt, tt = group

    def codegen(context, builder, sig, args):
        lt = context.get_value_type(vt)
        z = ir.Constant(lt, [ir.Constant(lt.element, 0)] * vt.lanes)
        return context.make_tuple(builder, tt, [z] * n)
    return tt(a, count), codegen


@intrinsic
def outer_fma(typingctx, acc, w, x):
    """acc[k·V + v] + w[k]·x[v] for every k < len(w), v < V = len(x): the
    outer product of two groups of vectors added onto a block of
    accumulators, each a fused multiply-add (one rounding)."""
    nk, nv = len(w), len(x)
    if len(acc) != nk * nv:
        return None

    def codegen(context, builder, sig, args):
        a, wt, xt = args
        fma = _fma_function(builder, context.get_value_type(acc.dtype))
        ws = [builder.extract_value(wt, k) for k in range(nk)]
        xs = [builder.extract_value(xt, v) for v in range(nv)]
        out = [builder.call(fma, [ws[k], xs[v], builder.extract_value(a, k * nv + v)])
               for k in range(nk) for v in range(nv)]
        return context.make_tuple(builder, sig.return_type, out)
    return acc(acc, w, x), codegen


@intrinsic
def transpose_square(typingctx, vs):
    """The L vectors of ``vs`` (L = their lanes) as the rows of an L x L
    matrix, transposed: vector r of the result holds lane r of each.  In
    log2(L) rounds of shuffles; in the round of half-size b, rows i and
    i + b of each pair swap their off-diagonal b x b blocks:

        row i  <- (row i)[l]      where l & b == 0, else (row i + b)[l − b]
        row i+b <- (row i)[l + b]  where l & b == 0, else (row i + b)[l]

    (after the rounds b = L/2, L/4, ..., 1 every block has been swapped)."""
    if not isinstance(vs, types.UniTuple) or not isinstance(vs.dtype, Vector):
        return None
    n = vs.dtype.lanes
    if len(vs) != n:
        return None

    def codegen(context, builder, sig, args):
        rows = [builder.extract_value(args[0], r) for r in range(n)]
        b = n // 2
        while b:
            lo = [l if not l & b else n + l - b for l in range(n)]
            hi = [l + b if not l & b else n + l for l in range(n)]
            for i in range(n):
                if i & b:
                    continue
                a, c = rows[i], rows[i + b]
                rows[i] = builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(_I32, n), lo))
                rows[i + b] = builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(_I32, n), hi))
            b //= 2
        return context.make_tuple(builder, sig.return_type, rows)
    return vs(vs), codegen


@intrinsic
def load_square(typingctx, a, i, step):
    """L vectors of a's dtype (L = its lanes), vector r from a[i + r·step]:
    an L x L block of a matrix whose rows are ``step`` apart."""
    vt = Vector(a.dtype)
    tt = types.UniTuple(vt, vt.lanes)

    def codegen(context, builder, sig, args):
        starts = _strided_starts(builder, args[1], args[2], vt.lanes)
        return context.make_tuple(builder, tt, _load_block(context, builder, a, args[0], starts,
                                                           vt, 1))
    return tt(a, types.intp, types.intp), codegen


@intrinsic
def prefer_512_bit_vectors(typingctx):
    """Mark the calling function so LLVM's vectoriser may use 512-bit registers.

    LLVM stops at 256 bits by default on Intel CPUs with AVX-512 (older ones
    lowered their clock for 512-bit work); for FMA-bound loops the full
    width is about 1.6x faster.  A no-op where the CPU has no 512-bit vectors.
    """
    def codegen(context, builder, signature, args):
        # llvmlite checks attribute names against a fixed list that lacks
        # LLVM's string attributes, so the set is extended directly
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()
    return types.none(), codegen
