"""The CPU fast path (Numba kernels, kernels/cpu_numba.py) against its oracles.

1. Each kernel against a naive NumPy loop written here (float32 and float64).
2. Each op with the fast path on against the same op in ``reference_mode``
   (forward and every gradient), and a float64 gradient check with it on.
Shapes are tiny: this file is about correctness; timing lives in benchmarks/.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import minigrad
from minigrad import config
from minigrad.kernels import cpu_numba as K
import minigrad.nn.functional as F

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def distinct(rng, shape, dtype):
    """Shuffled distinct values away from 0 (no ReLU kinks, no max-pool ties)."""
    n = int(np.prod(shape))
    v = (np.arange(n) + 0.5) / n * 4 - 2
    v = np.where(np.abs(v) < 1e-3, 0.37, v)
    return rng.permutation(v).reshape(shape).astype(dtype)


# ---------------------------------------------------------------------------
# Naive oracles
# ---------------------------------------------------------------------------
def naive_conv(x, w, b, s, p):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * p, wd + 2 * p), x.dtype)
    xp[:, :, p:p + h, p:p + wd] = x
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    y = np.zeros((n, k, ho, wo), np.float64)
    for oy in range(ho):
        for ox in range(wo):
            patch = xp[:, :, oy * s:oy * s + kh, ox * s:ox * s + kw]
            y[:, :, oy, ox] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def naive_maxpool(x, k, s, p):
    n, c, h, w = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    y = np.empty((n, c, ho, wo), x.dtype)
    for a in range(n):
        for ch in range(c):
            for oy in range(ho):
                for ox in range(wo):
                    best = -np.inf
                    for i in range(k):
                        for j in range(k):
                            iy, ix = oy * s + i - p, ox * s + j - p
                            if 0 <= iy < h and 0 <= ix < w:
                                best = max(best, x[a, ch, iy, ix])
                    y[a, ch, oy, ox] = best
    return y


# ---------------------------------------------------------------------------
# 1. Kernels against the oracles
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kh,s,p", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 2, 3)])
@pytest.mark.parametrize("h,w", [(7, 6), (2, 2), (19, 17)])
def test_im2col_col2im_kernels(dtype, kh, s, p, h, w):
    """Small output planes (at most K.SMALL_PLANE pixels: the table of source
    pixels) and larger ones (row by row), against the loops here."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, h, w)).astype(dtype)
    ho, wo = (h + 2 * p - kh) // s + 1, (w + 2 * p - kh) // s + 1
    cols = np.full((2 * kh * kh, 2 * ho * wo), np.nan, dtype)
    K.im2col(x, kh, kh, s, s, p, p, 1, 3, cols)          # images 1 and 2 only
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    assert (ho * wo <= K.SMALL_PLANE) == ((h, w) != (19, 17))
    want = np.empty((2, kh, kh, 2, ho, wo), dtype)
    for c in range(2):
        for i in range(kh):
            for j in range(kh):
                for b in range(2):
                    for oy in range(ho):
                        for ox in range(wo):
                            want[c, i, j, b, oy, ox] = xp[1 + b, c, oy * s + i, ox * s + j]
    np.testing.assert_array_equal(cols, want.reshape(cols.shape))
    # col2im is the adjoint of im2col: <im2col(x), d> == <x, col2im(d)>
    d = rng.standard_normal(cols.shape).astype(dtype)
    dx = np.full(x.shape, np.nan, dtype)
    dx[0] = 7.0
    K.col2im(d, kh, kh, s, s, p, p, 1, 3, dx)
    assert np.all(dx[0] == 7.0)                          # images outside [1, 3) untouched
    lhs = float(np.sum(cols.astype(np.float64) * d))
    rhs = float(np.sum(x[1:3].astype(np.float64) * dx[1:3]))
    assert lhs == pytest.approx(rhs, rel=1e-5 if dtype == np.float32 else 1e-12)


@settings(max_examples=60, deadline=None)
@given(kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 2), sw=st.integers(1, 2),
       ph=st.integers(0, 2), pw=st.integers(0, 2), h=st.integers(1, 13), w=st.integers(1, 13),
       data=st.data())
def test_im2col_any_geometry_and_row_range(kh, kw, sh, sw, ph, pw, h, w, data):
    """Every kernel size, stride and padding (including the stride-1 'same'
    shapes that take the block-copy path), output planes on either side of
    K.SMALL_PLANE, and any slice of rows r0:r1."""
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    assume(ho > 0 and wo > 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, h, w)).astype(np.float32)
    rows = 2 * kh * kw
    r0 = data.draw(st.integers(0, rows - 1))
    r1 = data.draw(st.integers(r0 + 1, rows))
    cols = np.full((rows, 2 * ho * wo), np.nan, np.float32)
    K.im2col(x, kh, kw, sh, sw, ph, pw, 1, 3, cols, r0, r1)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    want = np.full(cols.shape, np.nan, np.float32)
    for r in range(r0, r1):
        c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        for b in range(2):
            patch = xp[1 + b, c, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
            want[r, b * ho * wo:(b + 1) * ho * wo] = patch.ravel()
    np.testing.assert_array_equal(cols, want)


@pytest.mark.parametrize("n,chunk_bytes", [(7, 1), (7, 1 << 30), (2, 1 << 30)],
                         ids=["chunks-per-thread", "one-chunk-per-thread", "split-steps"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("cout", [7, 3])
def test_conv_driver_both_schedules(n, chunk_bytes, stride, cout, monkeypatch):
    """Batches of at least as many images as threads (each thread runs whole
    chunks, BLAS on one thread) and smaller ones (each step split over the
    threads) give the reference answer; three threads, whatever the machine.
    More and fewer output than input channels: the backward's buffers, shared
    between the columns of x and of dY, are then sized by one or the other."""
    rng = np.random.default_rng(4)
    monkeypatch.setattr(K, "_threads", lambda: 3)
    x = rng.standard_normal((n, 5, 9, 8))
    w = rng.standard_normal((cout, 5, 3, 3))
    b = rng.standard_normal(cout)
    monkeypatch.setattr(K, "CHUNK_BYTES", chunk_bytes)
    s = (stride, stride)
    y = K._im2col_conv2d_forward(x, w, b, s, (1, 1))          # (3x3: not the direct kernels)
    g = rng.standard_normal(y.shape)
    dx, dw, db = K._im2col_conv2d_backward(x, w, g, s, (1, 1), True, True, True)
    np.testing.assert_allclose(y, naive_conv(x, w, b, stride, 1), rtol=1e-10, atol=1e-10)
    with minigrad.reference_mode():
        xt = minigrad.Tensor(x, requires_grad=True)
        wt = minigrad.Tensor(w, requires_grad=True)
        bt = minigrad.Tensor(b, requires_grad=True)
        (F.conv2d(xt, wt, bt, stride=stride, padding=1) * minigrad.Tensor(g)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


def reference_conv_grads(x, w, b, g, s, p):
    """(dx, dw, db) of sum(conv2d(x, w, b) * g) on the reference path, in float64."""
    with minigrad.reference_mode():
        ts = [minigrad.Tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
        (F.conv2d(*ts, stride=s, padding=p) * minigrad.Tensor(g.astype(np.float64))).sum().backward()
    return [t.grad.numpy() for t in ts]


def conv_3x3_case(seed, n, c, k, h, w, dtype, stride=1):
    """Random (x, weight, bias, dY) of a 3x3 convolution with padding 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    g = rng.standard_normal((n, k, ho, wo)).astype(dtype)
    return x, wt, b, g


def fast_3x3_tolerance(dtype):
    """Tolerances of the fast 3x3 paths against the naive loops and the float64 references."""
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def blas_as_wide_as_the_kernels():
    """The products per run of pixels are taken only where NumPy's BLAS has
    vectors as wide as minigrad's kernels (cpu_numba.blas_vector_bytes); the
    tests of those products say it has, whatever this machine's BLAS is."""
    from unittest import mock
    return mock.patch.dict(K._BLAS_WIDTH, {"bytes": K.VECTOR_BYTES})


def assert_conv_matches_reference(x, wt, b, g, stride, y, grads):
    """y and (dx, dw, db) of a fast 3x3 path (padding 1) against the naive
    loops and the reference gradients, each in x's dtype; returns the
    reference gradients."""
    tol = fast_3x3_tolerance(x.dtype)
    np.testing.assert_allclose(y, naive_conv(x, wt, b, stride, 1), **tol)
    want = reference_conv_grads(x, wt, b, g, stride, 1)
    for got, ref in zip(grads, want):
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got, ref, **tol)
    return want


def simd_lanes(dtype):
    """simd.lanes for ``dtype``: the elements of one vector."""
    from numba import njit
    from minigrad.kernels.simd import lanes
    return njit(lambda a: lanes(a))(np.zeros(1, dtype))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 7), c=st.integers(1, 6), k=st.integers(1, 7), h=st.integers(1, 9),
       w=st.integers(1, 12), stride=st.sampled_from([1, 2]), dtype=st.sampled_from(DTYPES),
       one_image_chunks=st.booleans())
def test_direct_3x3_kernels(n, c, k, h, w, stride, dtype, one_image_chunks):
    """The direct 3x3 path (padding 1, stride 1 or 2) on any plane size (odd
    ones too) and channel counts (odd ones, fewer than 4 output channels),
    three threads, in one chunk per thread or one image per chunk, against
    the naive loops and the reference gradients; the backward also without
    dx, as for a network's first layer."""
    from unittest import mock
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + k * 10 + h + w, n, c, k, h, w, dtype, stride)
    s = (stride, stride)
    with mock.patch.object(K, "_threads", lambda: 3), \
            mock.patch.object(K, "DIRECT_CHUNK_BYTES", 1 if one_image_chunks else 1 << 30):
        assert K.direct_3x3_applies(x, wt, s, (1, 1))
        y = K.conv2d_forward(x, wt, b, s, (1, 1))
        grads = K.conv2d_backward(x, wt, g, s, (1, 1))
        # a first layer's backward (no dx): with fewer input than output
        # channels, dW is summed with x shifted instead of dY
        first = K.conv2d_backward(x, wt, g, s, (1, 1), False, True, True)
    want = assert_conv_matches_reference(x, wt, b, g, stride, y, grads)
    tol = fast_3x3_tolerance(dtype)
    assert first[0] is None
    for got, ref in zip(first[1:], want[1:]):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("h,w,stride,by_image", [
    (8, 8, 1, True), (16, 16, 1, True), (8, 12, 1, True), (16, 16, 2, True),
    (4, 4, 1, True), (12, 12, 1, True), (7, 7, 1, False), (6, 6, 1, False)])
def test_direct_3x3_blocks_image_by_image(h, w, stride, by_image):
    """Where an image's output positions are whole blocks and one narrower
    block, the forward kernel's blocks go image by image and skip the
    positions between the images; elsewhere they run over the whole chunk.
    Both against the naive loops and the reference gradients, several
    images per chunk."""
    from minigrad.kernels import cpu_conv3x3 as D
    dtype = np.float32
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    if simd_lanes(dtype) == 16:         # (by_image: with AVX-512's blocks of 2 vectors and 1)
        assert D.image_blocks(ho * wo, 16) == by_image
    x, wt, b, g = conv_3x3_case(h * 100 + w * 10 + stride, 5, 3, 6, h, w, dtype, stride)
    from unittest import mock
    with mock.patch.object(K, "_threads", lambda: 2):
        y = K.conv2d_forward(x, wt, b, (stride, stride), (1, 1))
        grads = K.conv2d_backward(x, wt, g, (stride, stride), (1, 1))
    assert_conv_matches_reference(x, wt, b, g, stride, y, grads)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 6), c=st.sampled_from([1, 8, 13, 24]), k=st.sampled_from([5, 16, 32, 64, 70]),
       h=st.integers(1, 7), w=st.integers(1, 9), dtype=st.sampled_from(DTYPES),
       one_image_chunks=st.booleans(), tile=st.sampled_from([1, 50, 4096]))
def test_channels_last_3x3_kernels(n, c, k, h, w, dtype, one_image_chunks, tile):
    """The channels-last 3x3 path (stride 1, padding 1) on any plane size,
    with channel counts that fill whole register blocks or leave a part of
    one (and, where they do not fill the weight gradient's blocks, its dW
    through im2col), three threads, one or several images per chunk, and
    weight-gradient tiles of one image, of a few, of the whole batch, against
    the naive loops and the reference gradients."""
    from unittest import mock
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + k * 10 + h + w, n, c, k, h, w, dtype)
    with mock.patch.object(K, "_threads", lambda: 3), \
            mock.patch.object(K, "NHWC_MIN_CHANNEL_PAIRS", 1), \
            mock.patch.object(K, "NHWC_MAX_PLANE", 64), mock.patch.object(K, "TILE", tile), \
            mock.patch.object(K, "NHWC_CHUNK_BYTES", 1 if one_image_chunks else 1 << 30):
        assert K.nhwc_3x3_applies(x, wt, (1, 1), (1, 1))
        y = K.conv2d_forward(x, wt, b, (1, 1), (1, 1))
        grads = K.conv2d_backward(x, wt, g, (1, 1), (1, 1))
        first = K.conv2d_backward(x, wt, g, (1, 1), (1, 1), False, True, False)
    want = assert_conv_matches_reference(x, wt, b, g, 1, y, grads)
    assert first[0] is None and first[2] is None
    np.testing.assert_allclose(first[1], want[1], **fast_3x3_tolerance(dtype))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 6), c=st.sampled_from([2, 8, 14, 24]), blocks=st.integers(1, 2),
       h=st.integers(1, 16), w=st.integers(1, 16), dtype=st.sampled_from(DTYPES),
       tile=st.sampled_from([1, 50, 4096]))
def test_channels_last_weight_grad_of_stride_2(n, c, blocks, h, w, dtype, tile):
    """Stride 2 onto small planes with output channels that fill whole
    register blocks: dW channels-last, split over three threads by blocks of
    output channels or, with fewer blocks than threads, by input channels,
    next to the direct or channels-last forward and im2col's dx (the direct
    kernels' backward is never called); against the naive loops and the
    reference gradients."""
    from unittest import mock
    from minigrad.kernels.cpu_conv3x3_nhwc import channel_block
    stride = 2
    k = blocks * channel_block(dtype)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    assume(ho * wo <= 64)
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + blocks * 10 + h + w, n, c, k, h, w, dtype,
                                stride)
    s = (stride, stride)
    with mock.patch.object(K, "_threads", lambda: 3), mock.patch.object(K, "TILE", tile), \
            mock.patch.object(K, "_conv3x3_backward", side_effect=AssertionError("direct dx")):
        assert K.nhwc_weight_grad_applies(x, wt, 2) and K.direct_3x3_applies(x, wt, s, (1, 1))
        y = K.conv2d_forward(x, wt, b, s, (1, 1))
        grads = K.conv2d_backward(x, wt, g, s, (1, 1))
    assert_conv_matches_reference(x, wt, b, g, stride, y, grads)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 5), c=st.sampled_from([16, 18, 30]), blocks=st.integers(1, 2),
       h=st.integers(1, 12), w=st.integers(1, 12), dtype=st.sampled_from(DTYPES),
       one_image_chunks=st.booleans())
def test_channels_last_forward_of_stride_2(n, c, blocks, h, w, dtype, one_image_chunks):
    """Stride-2 layers with a multiple of 64 output channels: the forward
    channels-last (tap lists of every second position, any plane, odd sizes
    too), on three threads, in chunks of one image or of all; against the
    naive loops, and the backward (whichever kernels take it) against the
    reference gradients."""
    from unittest import mock
    k = blocks * K.NHWC_S2_OUT_CHANNELS
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + blocks * 10 + h + w, n, c, k, h, w, dtype,
                                2)
    s = (2, 2)
    with mock.patch.object(K, "_threads", lambda: 3), \
            mock.patch.object(K, "NHWC_CHUNK_BYTES", 1 if one_image_chunks else 1 << 30), \
            mock.patch.object(K, "_conv3x3_forward", side_effect=AssertionError("direct fwd")):
        assert K.conv2d_routes(x, wt, s, (1, 1))[0] == K.NHWC
        y = K.conv2d_forward(x, wt, b, s, (1, 1))
        grads = K.conv2d_backward(x, wt, g, s, (1, 1))
    assert_conv_matches_reference(x, wt, b, g, 2, y, grads)
    # fewer output channels, or fewer input channels, keep the direct forward
    for kk, cc in ((k - 2, c), (k, 14)):
        xx, ww = np.empty((n, cc, h, w), dtype), np.empty((kk, cc, 3, 3), dtype)
        with mock.patch.object(K, "_threads", lambda: 3):
            assert K.conv2d_routes(xx, ww, s, (1, 1))[0] == K.DIRECT


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 5), c=st.sampled_from([1, 5, 24, 33, 70]),
       k=st.sampled_from([1, 6, 16, 64, 70]), h=st.integers(1, 17), w=st.integers(1, 17),
       dtype=st.sampled_from(DTYPES), one_image_chunks=st.booleans())
def test_channels_last_input_grad_of_stride_2(n, c, k, h, w, dtype, one_image_chunks):
    """dx of stride-2 layers channels-last (the forward's tap lists read the
    other way round), whatever takes the forward and dW: any plane (odd
    sizes too), channel counts that fill whole register blocks or part of
    one (the smallest by lowering the threshold), three threads, chunks of
    one image or of all; dx alone, and with dW and db, against the naive
    loops and the reference gradients."""
    from unittest import mock
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + k * 10 + h + w, n, c, k, h, w, dtype, 2)
    s = (2, 2)
    spy = mock.MagicMock(wraps=K._nhwc_input_grad_s2)
    with mock.patch.object(K, "_threads", lambda: 3), \
            mock.patch.object(K, "NHWC_S2_DX_MIN_FILL", 0), \
            mock.patch.object(K, "NHWC_CHUNK_BYTES", 1 if one_image_chunks else 1 << 30), \
            mock.patch.object(K, "_nhwc_input_grad_s2", spy):
        assert K.conv2d_routes(x, wt, s, (1, 1))[1] == K.NHWC
        y = K.conv2d_forward(x, wt, b, s, (1, 1))
        grads = K.conv2d_backward(x, wt, g, s, (1, 1))
        alone = K.conv2d_backward(x, wt, g, s, (1, 1), True, False, False)
        with_db = K.conv2d_backward(x, wt, g, s, (1, 1), True, False, True)
    assert spy.call_count == 3
    want = assert_conv_matches_reference(x, wt, b, g, 2, y, grads)
    tol = fast_3x3_tolerance(dtype)
    assert alone[1] is None and alone[2] is None and with_db[1] is None
    np.testing.assert_allclose(alone[0], want[0], **tol)
    np.testing.assert_allclose(with_db[2], want[2], **tol)
    # the threshold: half a register block of input channels, not one fewer
    half = K.channel_block(dtype) // 2
    with mock.patch.object(K, "_threads", lambda: 3):
        for cc, takes in ((half, True), (half - 1, False)):
            xx, ww = np.empty((n, cc, h, w), dtype), np.empty((k, cc, 3, 3), dtype)
            assert (K.conv2d_routes(xx, ww, s, (1, 1))[1] == K.NHWC) == takes


@pytest.mark.parametrize("h,w", [(1, 1), (1, 2), (2, 1), (2, 2), (3, 4), (4, 4), (5, 3)])
def test_pixel_runs_are_every_tap_inside_the_plane_once(h, w):
    """The runs of the small-plane products cover each (tap, output pixel)
    pair whose input pixel lies inside the plane exactly once, with that
    input pixel: against a loop over every pair."""
    want = set()
    for t in range(9):
        i, j = divmod(t, 3)
        for oy in range(h):
            for ox in range(w):
                iy, ix = oy + i - 1, ox + j - 1
                if 0 <= iy < h and 0 <= ix < w:
                    want.add((t, oy * w + ox, iy * w + ix))
    got = [(t, p, p + d) for t, p0, count, d in K.pixel_runs(h, w) for p in range(p0, p0 + count)]
    assert len(got) == len(set(got)) and set(got) == want


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), hw=st.sampled_from([(1, 1), (1, 2), (2, 1), (2, 2), (1, 4), (4, 1)]),
       c=st.integers(1, 9), k=st.integers(1, 9), threads=st.integers(1, 3),
       dtype=st.sampled_from(DTYPES))
def test_small_planes_as_matrix_products(n, hw, c, k, threads, dtype):
    """A 3x3 convolution on planes of at most 4 pixels as matrix products
    per run of pixels (forced for few channels), on one to three threads:
    the output and the three gradients against the naive loops and the
    reference gradients, and bit-identical when repeated."""
    from unittest import mock
    h, w = hw
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + k * 10 + h * 4 + w, n, c, k, h, w, dtype)
    with mock.patch.object(K, "_threads", lambda: threads), blas_as_wide_as_the_kernels(), \
            mock.patch.object(K, "PIXEL_GEMM_MIN_CHANNEL_PAIRS", 1), \
            mock.patch.object(K, "_nhwc_conv", side_effect=AssertionError("channels-last")):
        assert K.pixel_gemm_applies(x, wt, (1, 1), (1, 1))
        y = K.conv2d_forward(x, wt, b, (1, 1), (1, 1))
        grads = K.conv2d_backward(x, wt, g, (1, 1), (1, 1))
        again = K.conv2d_backward(x, wt, g, (1, 1), (1, 1))
        only_w = K.conv2d_backward(x, wt, g, (1, 1), (1, 1), False, True, False)
    assert_conv_matches_reference(x, wt, b, g, 1, y, grads)
    for a, r in zip(grads, again):
        np.testing.assert_array_equal(a, r)
    assert only_w[0] is None and only_w[2] is None
    np.testing.assert_array_equal(only_w[1], grads[1])
    assert all(a.dtype == dtype for a in (y, *grads))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c,k,h,w", [(3, 3, 5, 4, 4), (3, 4, 6, 3, 4), (4, 2, 3, 1, 16),
                                       (5, 5, 2, 4, 3)])
def test_weight_gradient_by_pixel_runs_beside_channels_last_dx(n, c, k, h, w, dtype):
    """A channels-last backward on a plane of up to 16 pixels whose weight
    gradient goes through the products per run of pixels (forced for few
    channels), on three threads: dx, dW and db against the reference
    gradients."""
    from unittest import mock
    x, wt, b, g = conv_3x3_case(n * 1000 + c * 100 + k * 10 + h + w, n, c, k, h, w, dtype)
    with mock.patch.object(K, "_threads", lambda: 3), blas_as_wide_as_the_kernels(), \
            mock.patch.object(K, "NHWC_MIN_CHANNEL_PAIRS", 1), \
            mock.patch.object(K, "PIXEL_GEMM_DW_MIN_CHANNEL_PAIRS", 1), \
            mock.patch.object(K, "_nhwc_weight_grad", side_effect=AssertionError("nhwc dW")):
        assert K.nhwc_3x3_applies(x, wt, (1, 1), (1, 1))
        assert not K.pixel_gemm_applies(x, wt, (1, 1), (1, 1))
        grads = K.conv2d_backward(x, wt, g, (1, 1), (1, 1))
    tol = fast_3x3_tolerance(dtype)
    for got, want in zip(grads, reference_conv_grads(x, wt, b, g, 1, 1)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


def test_channels_last_path_takes_the_deep_layers_of_vgg():
    """VGG's layers of 128 x 256 channels and more on 8x8 images or smaller
    and ResNet's 64 x 64 on 8x8 go through the channels-last kernels (those
    on 2x2, with 256 x 256 channels and more, through matrix products per
    run of pixels, where the BLAS is as wide as the kernels), fewer channels
    and the 16x16 layers do not, but the weight gradient of ResNet's
    stride-2 layer into 64 channels does."""
    from unittest import mock

    def applies(c, k, hw):
        return K.nhwc_3x3_applies(np.empty((8, c, hw, hw), np.float32),
                                  np.empty((k, c, 3, 3), np.float32), (1, 1), (1, 1))

    def pixels(c, k, hw):
        return K.pixel_gemm_applies(np.empty((8, c, hw, hw), np.float32),
                                    np.empty((k, c, 3, 3), np.float32), (1, 1), (1, 1))

    def pixels_dw(c, k, hw):         # the weight gradient alone, next to channels-last dx
        return K.pixel_weight_grad_applies(np.empty((8, c, hw, hw), np.float32),
                                           np.empty((k, c, 3, 3), np.float32))
    assert applies(128, 256, 8) and applies(256, 256, 8) and applies(512, 512, 2)
    assert applies(64, 64, 8) and applies(64, 128, 4)
    with blas_as_wide_as_the_kernels():
        assert pixels(512, 512, 2) and pixels(256, 512, 2) and pixels(256, 256, 2)
        assert not pixels(512, 512, 4) and not pixels(128, 128, 2) and not pixels(256, 256, 8)
    with mock.patch.dict(K._BLAS_WIDTH, {"bytes": K.VECTOR_BYTES // 2}):   # a narrower BLAS
        assert not pixels(512, 512, 2) and not pixels_dw(512, 512, 4)
        assert applies(512, 512, 2)

    with blas_as_wide_as_the_kernels():
        assert pixels_dw(512, 512, 4) and pixels_dw(256, 512, 4)
        assert not pixels_dw(128, 256, 4) and not pixels_dw(512, 512, 8)
    assert not applies(32, 64, 8) and not applies(32, 32, 8)
    assert not applies(128, 128, 16) and not applies(256, 256, 16)
    # the weight gradient of ResNet's stride-2 layer into 64 channels
    # (16x16 -> 8x8), not that of a stride-2 layer onto 16x16
    x16, x32, w64 = (np.empty(s, np.float32) for s in ((8, 32, 16, 16), (8, 32, 32, 32),
                                                       (64, 32, 3, 3)))
    assert K.nhwc_weight_grad_applies(x16, w64, 2)
    assert not K.nhwc_weight_grad_applies(x32, w64, 2)


def test_blas_vector_width_from_what_threadpoolctl_reports():
    """blas_vector_bytes: 64 for OpenBLAS's AVX-512 cores, 32 for its
    others, the kernels' own width for another BLAS or none it can see."""
    from types import SimpleNamespace
    from unittest import mock

    def width(*libs):
        ctl = SimpleNamespace(lib_controllers=list(libs))
        with mock.patch.dict(K._BLAS_WIDTH, clear=True), \
                mock.patch.object(K, "_blas_controller", lambda: ctl):
            return K.blas_vector_bytes()

    def lib(api, core, user_api="blas"):
        return SimpleNamespace(user_api=user_api, internal_api=api, architecture=core)
    assert width(lib("openblas", "SkylakeX")) == width(lib("openblas", "Cooperlake")) == 64
    assert width(lib("openblas", "Haswell")) == width(lib("openblas", "Zen")) == 32
    assert width(lib("mkl", None)) == width() == K.VECTOR_BYTES
    assert width(lib("openmp", "x", user_api="openmp"), lib("openblas", "Haswell")) == 32


def _routes_run(x, wt, g, stride, need_x):
    """The routes a forward and a backward pass of these arrays really take,
    read from which of cpu_numba's drivers were called and with what."""
    from unittest import mock
    names = ("_pixel_gemm_forward", "_pixel_gemm_backward", "_nhwc_conv", "_nhwc_weight_grad",
             "_nhwc_input_grad_s2", "_conv3x3_forward", "_conv3x3_backward",
             "_im2col_conv2d_forward", "_im2col_conv2d_backward")
    spies = {nm: mock.MagicMock(wraps=getattr(K, nm)) for nm in names}
    s = (stride, stride)
    with contextlib.ExitStack() as stack:
        for nm, spy in spies.items():
            stack.enter_context(mock.patch.object(K, nm, spy))
        K.conv2d_forward(x, wt, None, s, (1, 1))
        K.conv2d_backward(x, wt, g, s, (1, 1), need_x=need_x)

    def called(nm, test=lambda args: True):
        return any(test(c.args) for c in spies[nm].call_args_list)
    fwd = [r for r, nm, t in ((K.PIXELS, "_pixel_gemm_forward", None),
                              (K.NHWC, "_nhwc_conv", lambda a: not a[2]),
                              (K.DIRECT, "_conv3x3_forward", None),
                              (K.IM2COL, "_im2col_conv2d_forward", None))
           if called(nm, *(t and (t,) or ()))]
    dx = [r for r, nm, t in ((K.PIXELS, "_pixel_gemm_backward", lambda a: a[3]),
                             (K.NHWC, "_nhwc_conv", lambda a: a[2]),
                             (K.NHWC, "_nhwc_input_grad_s2", lambda a: True),
                             (K.DIRECT, "_conv3x3_backward", lambda a: a[4]),
                             (K.IM2COL, "_im2col_conv2d_backward", lambda a: a[5]))
          if called(nm, t)]
    dw = [r for r, nm, t in ((K.PIXELS, "_pixel_gemm_backward", lambda a: a[4]),
                             (K.NHWC, "_nhwc_weight_grad", None),
                             (K.IM2COL, "_im2col_conv2d_backward", lambda a: a[6]))
          if called(nm, *(t and (t,) or ()))]
    dw += [r for r, how in K.DIRECT_DW.items()
           if called("_conv3x3_backward", lambda a, how=how: a[7] == how)]
    return fwd, dx, dw


def test_conv2d_routes_name_the_kernels_that_run():
    """conv2d_routes names, for each of these layers, the forward, dx and dW
    drivers that conv2d_forward and conv2d_backward then call (and no
    other); together the layers take every route."""
    lanes = K.CV * K.VECTOR_BYTES // 4        # input channels of the lanes dW
    cases = [  # (c, k, h, stride, need_x)
        (256, 256, 2, 1, True),               # VGG's 2x2 layers: matrix products
        (256, 512, 4, 1, True),               # channels-last, dW by products
        (64, 64, 8, 1, True),                 # channels-last
        (66, 66, 4, 1, True),                 # channels-last, dW by im2col (no whole blocks)
        (32, 64, 16, 2, True),                # channels-last forward, dx and dW (stride 2)
        (16, 64, 16, 2, True),                # col2im's dx (16 channels), dW channels-last
        (32, 32, 32, 2, True),                # direct, dx channels-last, dW from planes
        (256, 256, 8, 2, True),               # channels-last, dW by im2col
        (lanes, lanes, 8, 1, True),           # direct, dW with x in the lanes
        (16, 16, 8, 1, True),                 # direct, dW from planes
        (16, 32, 32, 2, True),                # direct stride 2, dW from planes
        (3, 16, 8, 1, False),                 # a first layer: dW from shifted x
        (3, 16, 8, 1, True),                  # the same with dx: planes
    ]
    from unittest import mock
    seen = set()
    with mock.patch.object(K, "_threads", lambda: 2), blas_as_wide_as_the_kernels():
        for c, k, h, stride, need_x in cases:
            x, wt, _, g = conv_3x3_case(c + k + h, 2, c, k, h, h, np.float32, stride)
            fwd, dx, dw = K.conv2d_routes(x, wt, (stride, stride), (1, 1), need_x)
            assert _routes_run(x, wt, g, stride, need_x) == (
                [fwd], [dx] if need_x else [], [dw]), (c, k, h, stride, need_x)
            seen |= {fwd, dx, dw}
        # a 5x5 kernel: im2col throughout
        x, g = np.ones((2, 4, 6, 6), np.float32), np.ones((2, 4, 4, 4), np.float32)
        wt = np.ones((4, 4, 5, 5), np.float32)
        assert K.conv2d_routes(x, wt, (1, 1), (1, 1)) == (K.IM2COL,) * 3
    assert seen - {None} == {K.PIXELS, K.NHWC, K.DIRECT, K.IM2COL, *K.DIRECT_DW}


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_square_transposes_a_block_of_vectors(dtype):
    """simd.load_square / transpose_square / store_rows: an L x L block read
    from rows 3L + 1 apart, transposed in registers, written to rows 2L + 5
    apart, against NumPy's transpose; nothing else is written."""
    from numba import njit
    from minigrad.kernels.simd import load_square, store_rows, transpose_square

    @njit
    def move(src, dst, i, a, j, b):
        store_rows(dst, j, b, transpose_square(load_square(src, i, a)), 1)

    L = simd_lanes(dtype)
    src = np.arange(3 * L * L + 8 * L, dtype=dtype)
    dst = np.zeros(2 * L * L + 8 * L, dtype)
    move(src, dst, 2, 3 * L + 1, 1, 2 * L + 5)
    block = np.stack([src[2 + r * (3 * L + 1):2 + r * (3 * L + 1) + L] for r in range(L)])
    want = np.zeros_like(dst)
    for r in range(L):
        want[1 + r * (2 * L + 5):1 + r * (2 * L + 5) + L] = block.T[r]
    np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c, h, w", [(32, 4, 4), (32, 8, 8), (16, 2, 8), (24, 4, 4), (32, 3, 5),
                                     (48, 2, 2)])
def test_channels_last_layouts_against_numpy(dtype, c, h, w):
    """to_nhwc and nhwc_to_nchw (whole blocks transposed in registers where
    the plane and the channels fill them, element by element elsewhere)
    against NumPy's transposes, for images 1:3 of 4."""
    from minigrad.kernels.cpu_conv3x3_nhwc import nhwc_to_nchw, to_nhwc
    rng = np.random.default_rng(c + h + w)
    x = rng.standard_normal((4, c, h, w)).astype(dtype)
    xt = np.full((2 * h * w + 1, c), np.nan, dtype)
    to_nhwc(x, 1, 3, xt)
    np.testing.assert_array_equal(xt[:-1], x[1:3].transpose(0, 2, 3, 1).reshape(-1, c))
    assert np.isnan(xt[-1]).all()
    y = np.full((4, c, h * w), np.nan, dtype)
    nhwc_to_nchw(xt, 2, np.zeros(1, dtype), False, y, 1)
    np.testing.assert_array_equal(y[1:3], x[1:3].reshape(2, c, -1))
    assert np.isnan(y[0]).all() and np.isnan(y[3]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_at_and_store_at_move_rows_anywhere(dtype):
    """simd.load_at / store_at: a block of 3 rows x 2 vectors from rows at
    any offsets (out of order, one of them unaligned) to others, and nothing
    else is written."""
    from numba import njit
    from minigrad.kernels.simd import load_at, store_at

    @njit
    def move(src, dst, a, b):
        store_at(dst, b, load_at(src, a, 2), 2)

    L = simd_lanes(dtype)
    src = np.arange(20 * L, dtype=dtype) + 1
    dst = np.zeros(20 * L, dtype)
    a, b = (9 * L, 1, 4 * L), (0, 15 * L + 3, 6 * L)
    move(src, dst, a, b)
    want = np.zeros_like(dst)
    for i, j in zip(a, b):
        want[j:j + 2 * L] = src[i:i + 2 * L]
    np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_rows_puts_each_row_of_a_block_in_its_row(dtype):
    """simd.store_rows: a block of 3 rows x 2 vectors goes to rows 5 apart
    (in vectors) from element 3 on, and nothing else is written."""
    from numba import njit
    from minigrad.kernels.simd import load_n, store_rows

    @njit
    def copy_block(src, dst, start, step):
        store_rows(dst, start, step, load_n(src, 0, 6), 2)

    n = 64 // np.dtype(dtype).itemsize          # room for the widest vectors
    src = np.arange(6 * n, dtype=dtype) + 1
    dst = np.zeros(3 + 2 * 5 * n + 2 * n + 4, dtype)
    copy_block(src, dst, 3, 5 * n)
    L = simd_lanes(dtype)
    want = np.zeros_like(dst)
    for r in range(3):
        want[3 + r * 5 * n:3 + r * 5 * n + 2 * L] = src[r * 2 * L:(r + 1) * 2 * L]
    np.testing.assert_array_equal(dst, want)


@pytest.mark.parametrize("h, w", [(7, 2048), (6, 2048), (5, 8), (9, 7), (3, 1)])
@pytest.mark.parametrize("j0, j1", [(0, 3), (1, 3), (0, 1), (0, 2), (1, 2), (2, 3)])
def test_phase_planes_hold_the_rows_and_columns_of_each_parity(h, w, j0, j1):
    """The layout of a stride-2 convolution against the pixels it is made
    of, on a buffer that starts out as NaN: even and odd W, odd H, rows so
    wide (2,048) that the even-W path goes through its row buffer in more
    than one pass, and each run of copies j0 <= j < j1 (the even-W path
    makes copy 0 from copy 2 where it makes both)."""
    from minigrad.kernels.cpu_conv3x3 import phase_planes
    rng = np.random.default_rng(h * w + 3 * j0 + j1)
    n, c, n0, n1 = 5, 2, 1, 4
    x = rng.standard_normal((n, c, h, w))
    lay = K._Planes(x.shape, 2, n1 - n0)
    ph = np.full((6, c, lay.length), np.nan)
    phase_planes(x, n0, n1, lay.m, ph, j0, j1)
    want = np.zeros_like(ph)
    ho, m = (h + 1) // 2, lay.m
    for p in range(2):
        for j in range(3):
            q, shift = (0, 0) if j == 1 else (1, 1 if j == 0 else 0)
            for b in range(n1 - n0):
                for a in range(ho):
                    iy = 2 * a + p
                    for t in range(shift, m):
                        ix = 2 * (t - shift) + q
                        if iy < h and ix < w:
                            want[3 * p + j, :, m + b * lay.s + a * m + t] = x[n0 + b, :, iy, ix]
    for p in range(2):
        for j in range(3):
            if j0 <= j < j1:
                np.testing.assert_array_equal(ph[3 * p + j], want[3 * p + j])
            else:                                   # copies outside the run left alone
                assert np.isnan(ph[3 * p + j]).all()


@settings(max_examples=200, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), stride=st.sampled_from([1, 2]),
       images=st.integers(1, 300))
def test_register_blocks_read_inside_their_buffer(h, w, stride, images):
    """The forward kernel loads whole register blocks with no bounds checks,
    so a block may start up to one span before the last position of a chunk
    and read a whole span from there (plus the next kernel row's offset): a
    channel's planes must hold that much, or the last channel of the last
    copy would read past the buffer."""
    from minigrad.kernels import cpu_conv3x3 as D
    lay = K._Planes((images, 1, h, w), stride, images)
    span = D.VR * D.FLOAT32_LANES                    # float32: the widest block
    last_block = (lay.total(images) - 1) // span * span
    furthest_offset = lay.m if stride == 1 else 0    # rows[2] is one row down for stride 1
    assert lay.m + last_block + furthest_offset + span <= lay.length


@pytest.mark.parametrize("stride", [1, 2])
def test_direct_3x3_across_tiles_and_without_some_gradients(stride):
    """Chunks longer than one register block and one partial-sum tile, and a
    backward that needs only some of (dx, dW, db)."""
    from minigrad.kernels import cpu_conv3x3 as D
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 5, 49, 45) if stride == 2 else (4, 5, 25, 23))
    wt = rng.standard_normal((6, 5, 3, 3))
    b = rng.standard_normal(6)
    y = K.conv2d_forward(x, wt, b, (stride, stride), (1, 1))
    assert 4 * y.shape[2] * y.shape[3] > max(D.READ_AHEAD, D.SUM_TILE)
    np.testing.assert_allclose(y, naive_conv(x, wt, b, stride, 1), rtol=1e-11, atol=1e-11)
    g = rng.standard_normal(y.shape)
    want = reference_conv_grads(x, wt, b, g, stride, 1)
    for need in [(True, False, False), (False, True, False), (False, False, True),
                 (False, True, True), (True, True, True)]:
        got = K.conv2d_backward(x, wt, g, (stride, stride), (1, 1), *need)
        for flag, a, e in zip(need, got, want):
            if flag:
                np.testing.assert_allclose(a, e, rtol=1e-11, atol=1e-11)
            else:
                assert a is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_driver_small_chunks(dtype, monkeypatch):
    """Several chunks of images (the scratch buffers reused) give the one-chunk answer."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    g = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
    monkeypatch.setattr(K, "CHUNK_BYTES", 1)             # one image per chunk
    y = K._im2col_conv2d_forward(x, w, b, (2, 2), (1, 1))
    dx, dw, db = K._im2col_conv2d_backward(x, w, g, (2, 2), (1, 1), True, True, True)
    np.testing.assert_allclose(y, naive_conv(x, w, b, 2, 1), **TOL[dtype])
    # the gradients through the adjoint identities, computed in float64
    x64, w64, g64 = x.astype(np.float64), w.astype(np.float64), g.astype(np.float64)
    eps = rng.standard_normal(x.shape)
    assert float(np.sum(dx * eps)) == pytest.approx(
        float(np.sum(naive_conv(eps, w64, None, 2, 1) * g64)), rel=1e-4)
    for k in range(4):
        e = np.zeros_like(w64)
        e[k, 1, 2, 0] = 1.0
        assert dw[k, 1, 2, 0] == pytest.approx(float(np.sum(naive_conv(x64, e, None, 2, 1) * g64)),
                                               rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(db, g64.sum(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_kernels(dtype, k, s, p, split_work):
    rng = np.random.default_rng(3)
    x = distinct(rng, (2, 3, 7, 8), dtype)
    y, idx = K.max_pool2d_forward(x, (k, k), (s, s), (p, p))
    np.testing.assert_array_equal(y, naive_maxpool(x, k, s, p))
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = K.max_pool2d_backward(g, idx, x.shape)
    want = np.zeros(x.shape, np.float64)
    flat = x.reshape(2, 3, -1)
    for a in range(2):                                   # each output's gradient to its argmax
        for c in range(3):
            for o, v in zip(y[a, c].ravel(), g[a, c].ravel()):
                pos = int(np.flatnonzero(flat[a, c] == o)[0])
                want[a, c].flat[pos] += v
    np.testing.assert_allclose(dx, want, **TOL[dtype])


@pytest.mark.parametrize("h,w", [(6, 8), (7, 9)])
def test_maxpool_2x2_kernel_ties_and_nan(h, w, split_work):
    """The 2x2 stride-2 kernel against a first-maximum loop written here, on
    values with many ties and a NaN: the first maximum in scan order wins,
    and the general kernel agrees with it element for element."""
    rng = np.random.default_rng(19)
    x = rng.integers(0, 3, (2, 3, h, w)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan                              # first in its window: stays
    x[1, 2, 2, 3] = np.nan                              # last in its window: skipped
    y, idx = K.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0))
    ho, wo = (h - 2) // 2 + 1, (w - 2) // 2 + 1
    for a in range(2):
        for c in range(3):
            for oy in range(ho):
                for ox in range(wo):
                    cells = [(2 * oy + i, 2 * ox + j) for i in range(2) for j in range(2)]
                    best = cells[0]
                    for cell in cells[1:]:
                        if x[a, c][cell] > x[a, c][best]:
                            best = cell
                    assert idx[a, c, oy, ox] == best[0] * w + best[1]
                    np.testing.assert_array_equal(y[a, c, oy, ox], x[a, c][best])
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[1, 2, 1, 1])
    y2, idx2 = np.empty_like(y), np.empty_like(idx)
    K.maxpool2d_forward(x, 2, 2, 2, 2, 0, 0, y2, idx2, 0, 6)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(y2, y)


@pytest.fixture
def split_work(monkeypatch):
    """Every parallel_for split over three threads, however small the work."""
    monkeypatch.setattr(K, "SERIAL_BELOW", 0)
    monkeypatch.setattr(K, "_threads", lambda: 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_kernels(dtype, split_work):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((4, 3, 5)) * 3 + 1).astype(dtype)
    gamma, beta = np.array([0.5, -2.0, 1.5]), np.array([0.1, 0.0, -0.3])
    x64 = x.astype(np.float64)
    want_mean = [sum(x64[:, c].ravel()) / 20 for c in range(3)]
    want_var = [sum((v - want_mean[c]) ** 2 for v in x64[:, c].ravel()) / 20 for c in range(3)]
    for training in (True, False):
        mean = np.empty(3) if training else np.array([0.2, -1.0, 3.0])
        var = np.empty(3) if training else np.array([1.5, 0.5, 2.0])
        coef, y = np.empty((2, 3), dtype), np.empty_like(x)
        none = np.empty((4, 3, 0), dtype)
        K.parallel_for(K.bn_forward_channels, 3, x.size, x, none, False, gamma, beta, 1e-5,
                       training, mean, var, coef[0], coef[1], y)
        if training:
            np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
            np.testing.assert_allclose(var, want_var, rtol=1e-6)
        scale = gamma / np.sqrt(var + 1e-5)
        want = (x64 - mean.reshape(1, 3, 1)) * scale.reshape(1, 3, 1) + beta.reshape(1, 3, 1)
        np.testing.assert_allclose(y, want, **TOL[dtype])
        g = rng.standard_normal(x.shape).astype(dtype)
        inv_std = 1 / np.sqrt(var + 1e-5)
        dx, dgamma, dbeta = np.empty_like(g), np.empty(3), np.empty(3)
        K.parallel_for(K.bn_backward_channels, 3, x.size, g, none, x, mean, inv_std, gamma,
                       training, np.empty((4, 3), dtype), dx, none, dgamma, dbeta)
        g64, xc = g.astype(np.float64), x64 - mean.reshape(1, 3, 1)
        s, t = g64.sum(axis=(0, 2)), (g64 * xc).sum(axis=(0, 2))
        np.testing.assert_allclose(dbeta, s, rtol=1e-5)
        np.testing.assert_allclose(dgamma, t * inv_std, rtol=1e-5)
        a = (gamma * inv_std).reshape(1, 3, 1)
        want_dx = a * g64
        if training:        # the closed form, written out here from the definitions
            want_dx = a * (g64 - s.reshape(1, 3, 1) / 20
                           - xc * (inv_std ** 2 * t).reshape(1, 3, 1) / 20)
        np.testing.assert_allclose(dx, want_dx, **TOL[dtype])


def test_batch_norm_statistics_far_from_zero():
    """float32 sums along each plane, float64 across planes, the variance from
    the deviations: a channel of values 1000 ± 1 still gets its variance to
    1e-4 (E[x²] − E[x]² in float32 would lose it all)."""
    rng = np.random.default_rng(18)
    x = (1000 + rng.standard_normal((128, 2, 1024)) * np.array([1.0, 0.01]).reshape(1, 2, 1))
    x32 = x.astype(np.float32)
    _, mean, var, _ = K.batch_norm_forward(x32, None, None, None, None, 1e-5, True)
    x64 = x32.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2)), rtol=1e-7)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2)), rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("residual", [False, True])
def test_batch_norm_relu_kernels(dtype, residual, split_work):
    """The fused kernels against the formulas written out here: z = max(BN(x) + r, 0);
    backward of the masked gradient ĝ = g·[z > 0], which is also dr."""
    rng = np.random.default_rng(14)
    x = (rng.standard_normal((4, 3, 5)) * 3 + 1).astype(dtype)
    r = rng.standard_normal(x.shape).astype(dtype) if residual else None
    gamma, beta = np.array([0.5, -2.0, 1.5]), np.array([0.1, 0.0, -0.3])
    z, mean, var, inv_std = K.batch_norm_forward(x, None, None, gamma, beta, 1e-5, True, r,
                                                 relu=True)
    x64 = x.astype(np.float64)
    mu, sd = x64.mean(axis=(0, 2), keepdims=True), np.sqrt(x64.var(axis=(0, 2), keepdims=True)
                                                           + 1e-5)
    pre = (x64 - mu) / sd * gamma.reshape(1, 3, 1) + beta.reshape(1, 3, 1)
    if residual:
        pre = pre + r
    assert 0.2 < np.mean(pre > 0) < 0.8                  # the mask matters
    np.testing.assert_allclose(z, np.maximum(pre, 0), **TOL[dtype])
    g = rng.standard_normal(x.shape).astype(dtype)
    dx, dgamma, dbeta, dr = K.batch_norm_backward(g, x, mean, inv_std, gamma, True, z, residual)
    gm = np.where(pre > 0, g.astype(np.float64), 0.0)
    xhat = (x64 - mu) / sd
    s, t = gm.sum(axis=(0, 2)), (gm * xhat).sum(axis=(0, 2))
    np.testing.assert_allclose(dbeta, s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dgamma, t, rtol=1e-5, atol=1e-6)
    want_dx = gamma.reshape(1, 3, 1) / sd * (gm - s.reshape(1, 3, 1) / 20
                                             - xhat * t.reshape(1, 3, 1) / 20)
    np.testing.assert_allclose(dx, want_dx, **TOL[dtype])
    if residual:
        np.testing.assert_array_equal(dr, gm.astype(dtype))
    else:
        assert dr is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_sgd_kernels(dtype, split_work):
    rng = np.random.default_rng(5)
    x = distinct(rng, (50,), dtype)
    y = np.empty_like(x)
    K.parallel_for(K.relu_forward, 50, 50, x, y)
    np.testing.assert_array_equal(y, np.where(x > 0, x, 0))
    g = rng.standard_normal(50).astype(dtype)
    dx = np.empty_like(g)
    K.parallel_for(K.relu_backward, 50, 50, g, y, dx)
    np.testing.assert_array_equal(dx, np.where(x > 0, g, 0))
    z = np.empty_like(x)
    K.parallel_for(K.add_forward, 50, 50, x, g, z)
    np.testing.assert_array_equal(z, (x.astype(np.float64) + g).astype(dtype))   # exact, rounded once
    # SGD, momentum 0.9, dampening 0.1, wd 0.01, two steps, with and without Nesterov
    for nesterov in (False, True):
        damp = 0.0 if nesterov else 0.1
        p = rng.standard_normal(50).astype(dtype)
        p_ref = p.astype(np.float64)
        buf = np.empty_like(p)
        buf_ref = None
        for step in range(2):
            gr = rng.standard_normal(50).astype(dtype)
            K.sgd_momentum_update(p, gr, buf, dtype(0.1), dtype(0.9), dtype(damp), dtype(0.01),
                                  nesterov, step == 0)
            d = gr + 0.01 * p_ref
            buf_ref = d.copy() if buf_ref is None else 0.9 * buf_ref + (1 - damp) * d
            p_ref = p_ref - 0.1 * (d + 0.9 * buf_ref if nesterov else buf_ref)
        np.testing.assert_allclose(p, p_ref, **TOL[dtype])


# ---------------------------------------------------------------------------
# 2. Ops: fast path == reference path
# ---------------------------------------------------------------------------
def run_both(fn, arrays, seed=0):
    """Run ``fn(*tensors)`` fast and in reference mode on the same inputs;
    return [(output, grads...)] for each, using a fixed upstream gradient."""
    results = []
    for fast in (True, False):
        with (config.fast_mode() if fast else config.reference_mode()):
            ts = [minigrad.Tensor(a.copy(), requires_grad=True) for a in arrays]
            y = fn(*ts)
            g = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
            y.backward(g)
            results.append([y.numpy()] + [t.grad.numpy() for t in ts])
    return results


def assert_same(results, dtype):
    fast, ref = results
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, **TOL[dtype])


CONV_CASES = [  # (x shape, weight shape, stride, padding)
    ((2, 3, 8, 8), (4, 3, 1, 1), 1, 0),
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1),
    ((2, 3, 9, 7), (5, 3, 3, 3), 2, 1),
    ((2, 2, 13, 11), (3, 2, 7, 7), 2, 3),
    ((3, 2, 5, 6), (2, 2, 3, 3), 1, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,ws,s,p", CONV_CASES)
def test_conv2d_fast_equals_reference(dtype, xs, ws, s, p):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype),
              rng.standard_normal(ws[0]).astype(dtype)]
    res = run_both(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p), arrays)
    assert_same(res, dtype)
    np.testing.assert_allclose(res[0][0], naive_conv(*arrays, s, p), **TOL[dtype])


def test_each_op_picks_its_implementation_once():
    """The functional op chooses the class: the fast subclass where the CPU fast
    path applies, the reference class itself otherwise (float16, reference mode)."""
    from minigrad.ops import activation, conv, norm, pool
    rng = np.random.default_rng(0)
    x = minigrad.Tensor(rng.standard_normal((2, 2, 4, 4)).astype(np.float32), requires_grad=True)
    w = minigrad.Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    ops = [(lambda: F.conv2d(x, w), conv.Conv2d, conv.Conv2dFast),
           (lambda: F.relu(x), activation.ReLU, activation.ReLUFast),
           (lambda: F.max_pool2d(x, 2), pool.MaxPool2d, pool.MaxPool2dFast),
           (lambda: F.batch_norm(x, None, None, training=True), norm.BatchNorm,
            norm.BatchNormFast)]
    for make, reference, fast in ops:
        assert issubclass(fast, reference)
        with config.fast_mode():
            assert type(make()._ctx) is fast
        with config.reference_mode():
            assert type(make()._ctx) is reference
    half = minigrad.Tensor(np.ones((1, 1, 4, 4), np.float16), requires_grad=True)
    assert type(F.relu(half)._ctx) is activation.ReLU
    assert not config.use_fast(np.ones(2, np.float16))
    assert not config.use_fast(np.ones(2, np.float32), np.ones(2, np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_pool_fast_equals_reference(dtype, k, s, p):
    x = distinct(np.random.default_rng(7), (2, 3, 9, 8), dtype)
    assert_same(run_both(lambda t: F.max_pool2d(t, k, s, p), [x]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (6, 3)])
def test_batch_norm_fast_equals_reference(dtype, training, shape):
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma = rng.standard_normal(3).astype(dtype)
    beta = rng.standard_normal(3).astype(dtype)
    stats = []
    for fast in (True, False):
        rm = np.array([0.1, -0.2, 0.3], dtype)
        rv = np.array([1.5, 0.5, 2.0], dtype)
        with (config.fast_mode() if fast else config.reference_mode()):
            ts = [minigrad.Tensor(a.copy(), requires_grad=True) for a in (x, gamma, beta)]
            y = F.batch_norm(ts[0], rm, rv, ts[1], ts[2], training=training)
            y.backward(np.cos(np.arange(y.size)).reshape(y.shape).astype(dtype))
            stats.append([y.numpy()] + [t.grad.numpy() for t in ts] + [rm, rv])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else TOL[dtype]
    for a, b in zip(*stats):
        np.testing.assert_allclose(a, b, **tol)


def _bn_relu_inputs(dtype, residual, seed=15, shape=(4, 3, 5, 6)):
    rng = np.random.default_rng(seed)
    arrays = [(rng.standard_normal(shape) * 2 + 0.5), rng.uniform(0.5, 1.5, shape[1]),
              rng.standard_normal(shape[1])]
    if residual:
        arrays.append(rng.standard_normal(shape))
    return [a.astype(dtype) for a in arrays]


def _bn_relu_run(arrays, training, how):
    """Output and gradients of relu(batch_norm(x) + r): ``how`` is "fused"
    (F.batch_norm_relu) or "separate" (batch_norm, add, relu), on the fast path,
    or "reference" (F.batch_norm_relu in reference mode)."""
    with (config.reference_mode() if how == "reference" else config.fast_mode()):
        ts = [minigrad.Tensor(a.copy(), requires_grad=True) for a in arrays]
        rm, rv = np.array([0.1, -0.2, 0.3], arrays[0].dtype), np.array([1.5, 0.5, 2.0],
                                                                         arrays[0].dtype)
        r = ts[3] if len(ts) > 3 else None
        if how == "separate":
            y = F.batch_norm(ts[0], rm, rv, ts[1], ts[2], training=training)
            z = F.relu(y if r is None else y + r)
        else:
            z = F.batch_norm_relu(ts[0], rm, rv, ts[1], ts[2], training=training, residual=r)
        g = np.cos(np.arange(z.size)).reshape(z.shape).astype(z.dtype)
        z.backward(g)
        return type(z._ctx), [z.numpy(), rm, rv] + [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (16, 3)])
def test_batch_norm_relu_fused_equals_separate(dtype, training, residual, shape):
    """The fused op gives exactly the numbers of batch norm, add and ReLU run one
    after another on the fast path (the same roundings, by construction), and
    the reference path's within the float tolerance; (N, C) input too (a
    BatchNorm1d then a ReLU in a Sequential)."""
    from minigrad.ops import activation, norm
    arrays = _bn_relu_inputs(dtype, residual, shape=shape)
    kind, fused = _bn_relu_run(arrays, training, "fused")
    assert kind is norm.BatchNormReLUFast
    _, separate = _bn_relu_run(arrays, training, "separate")
    kind, reference = _bn_relu_run(arrays, training, "reference")
    assert kind is activation.ReLU                        # the composition of the three ops
    assert 0.2 < np.mean(fused[0] > 0) < 0.8
    for a, b, c in zip(fused, separate, reference):
        np.testing.assert_array_equal(a, b)
        tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else TOL[dtype]
        np.testing.assert_allclose(a, c, **tol)


@pytest.mark.parametrize("residual", [False, True])
def test_batch_norm_relu_gradcheck(residual):
    """float64 central differences through the fused op (fast path), inputs
    chosen away from ReLU's kink."""
    arrays = _bn_relu_inputs(np.float64, residual, seed=16, shape=(2, 3, 3, 3))
    with config.fast_mode():
        ts = [minigrad.Tensor(a, requires_grad=True) for a in arrays]
        pre = F.batch_norm(ts[0], None, None, ts[1], ts[2], training=True).numpy()
        if residual:
            pre = pre + arrays[3]
        assert np.min(np.abs(pre)) > 1e-3 and 0.2 < np.mean(pre > 0) < 0.8

        def f(*t):
            return F.batch_norm_relu(t[0], None, None, t[1], t[2], training=True,
                                     residual=t[3] if residual else None)
        assert type(f(*ts)._ctx).__name__ == "BatchNormReLUFast"
        minigrad.gradcheck(f, tuple(ts))


def test_batch_norm_relu_errors():
    x = minigrad.Tensor(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"batch_norm_relu: the residual has shape "
                                         r"\(2, 3, 4, 5\), the input \(2, 3, 4, 4\)"):
        F.batch_norm_relu(x, None, None, training=True,
                          residual=minigrad.Tensor(np.ones((2, 3, 4, 5), np.float32)))
    with pytest.raises(ValueError, match=r"batch_norm_relu: input has 3 channels .* weight"):
        F.batch_norm_relu(x, None, None, minigrad.Tensor(np.ones(4, np.float32)),
                          training=True)


def test_bn_relu_fuses_only_what_no_one_watches():
    """nn.bn_relu (and Sequential's BatchNorm -> ReLU) fuse plain modules
    without hooks; a hook, a BatchNorm subclass or SyncBatchNorm gets the
    modules called one by one, with the same numbers."""
    from minigrad import nn
    from minigrad.ops import norm
    rng = np.random.default_rng(17)
    x = minigrad.Tensor(rng.standard_normal((4, 3, 5, 5)).astype(np.float32))
    r = minigrad.Tensor(rng.standard_normal((4, 3, 5, 5)).astype(np.float32))
    with config.fast_mode():
        bn, relu = nn.BatchNorm2d(3), nn.ReLU()
        fused = nn.bn_relu(bn, relu, x, r)
        assert type(fused._ctx) is norm.BatchNormReLUFast
        assert int(bn.num_batches_tracked.data) == 1          # the module's bookkeeping ran
        seen = []
        bn2 = nn.BatchNorm2d(3)
        bn2.register_forward_hook(lambda m, i, o: seen.append(o.numpy().copy()))
        watched = nn.bn_relu(bn2, nn.ReLU(), x, r)
        assert len(seen) == 1 and np.min(seen[0]) < 0          # BN's own output, before ReLU
        np.testing.assert_array_equal(watched.numpy(), fused.numpy())
        np.testing.assert_array_equal(bn2.running_var.numpy(), bn.running_var.numpy())

        class Doubled(nn.BatchNorm2d):
            def forward(self, x):
                return super().forward(x) * 2
        z = nn.bn_relu(Doubled(3), nn.ReLU(), x)
        np.testing.assert_allclose(z.numpy(), 2 * nn.bn_relu(nn.BatchNorm2d(3), nn.ReLU(),
                                                            x).numpy(), rtol=1e-6)
        assert type(nn.bn_relu(nn.SyncBatchNorm(3), nn.ReLU(), x)._ctx) is not \
            norm.BatchNormReLUFast

        seq = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.BatchNorm2d(3))
        assert type(seq(x)._ctx) is norm.BatchNormFast       # the pair fused, the last BN alone
        assert type(seq[:2](x)._ctx) is norm.BatchNormReLUFast
        inputs = []
        seq[1].register_forward_hook(lambda m, i, o: inputs.append(i[0].numpy().copy()))
        seq[:2](x)
        assert len(inputs) == 1 and np.min(inputs[0]) < 0


def test_fused_bn_relu_changes_no_number_in_a_resnet():
    """Training steps of a small ResNet with every BN and ReLU hooked (nothing
    fused) and without (fused): the same losses and weights, bit for bit."""
    from minigrad import nn
    runs = []
    for watch in (False, True):
        minigrad.manual_seed(3)
        model = minigrad.models.create("resnet20", width=4, blocks_per_stage=1, shortcut="B")
        if watch:
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm2d, nn.ReLU)):
                    m.register_forward_hook(lambda *args: None)
        opt = minigrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        rng = np.random.default_rng(3)
        losses = []
        with config.fast_mode():
            for _ in range(2):
                x = minigrad.Tensor(rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
                opt.zero_grad()
                loss = F.cross_entropy(model(x), rng.integers(0, 10, 8))
                loss.backward()
                opt.step()
                losses.append(loss.item())
        runs.append((losses, [p.numpy().copy() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,s,extra", [((4, 3, 8, 8), 2, 5), ((2, 2, 7, 5), 2, 2),
                                           ((3, 4, 6, 6), 1, 3), ((2, 3, 9, 9), 3, 0)])
def test_subsample_pad_fast_equals_reference(dtype, shape, s, extra, split_work):
    """Both paths against numpy's strided slice and pad, and the gradient
    against the same put back by hand; the fast path is the one that ran."""
    from minigrad.ops import shape as shape_ops
    x = np.random.default_rng(20).standard_normal(shape).astype(dtype)
    res = run_both(lambda t: F.subsample_pad(t, s, extra), [x])
    want = np.pad(x[:, :, ::s, ::s], ((0, 0), (0, extra), (0, 0), (0, 0)))
    g = np.random.default_rng(0).standard_normal(want.shape).astype(dtype)   # run_both's
    want_dx = np.zeros_like(x)
    want_dx[:, :, ::s, ::s] = g[:, :shape[1]]
    for y, dx in res:
        np.testing.assert_array_equal(y, want)
        np.testing.assert_array_equal(dx, want_dx)
    with config.fast_mode():
        assert type(F.subsample_pad(minigrad.Tensor(x, requires_grad=True), s, extra)._ctx) is \
            shape_ops.SubsamplePadFast


def test_subsample_pad_errors():
    x = minigrad.Tensor(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"subsample_pad: expected input \(N, C, H, W\), "
                                         r"got shape \(2, 3, 4\)"):
        F.subsample_pad(x, 2, 1)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        F.subsample_pad(minigrad.Tensor(np.ones((1, 1, 2, 2))), 0, 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_fast_equals_reference(dtype):
    x = distinct(np.random.default_rng(9), (3, 4, 5), dtype)
    assert_same(run_both(F.relu, [x]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_fast_equals_reference(dtype):
    rng = np.random.default_rng(13)
    x, y = rng.standard_normal((2, 3, 4, 5)).astype(dtype), rng.standard_normal((2, 3, 4, 5))
    assert_same(run_both(lambda a, b: a + b, [x, y.astype(dtype)]), dtype)
    from minigrad.ops import math
    a, b = minigrad.Tensor(x, requires_grad=True), minigrad.Tensor(y.astype(dtype))
    with config.fast_mode():
        assert type((a + b)._ctx) is math.AddFast
        assert type((a + b[:, :, :1])._ctx) is math.Add          # broadcasting: the reference
        assert type((a + 1.5)._ctx) is math.Add


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-2),
                                                  (0.9, True, 5e-4)])
def test_sgd_fast_equals_reference(momentum, nesterov, wd):
    rng = np.random.default_rng(10)
    p0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(3)]
    finals = []
    for fast in (True, False):
        with (config.fast_mode() if fast else config.reference_mode()):
            p = minigrad.nn.Parameter(p0.copy()) if hasattr(minigrad.nn, "Parameter") \
                else minigrad.Tensor(p0.copy(), requires_grad=True)
            opt = minigrad.optim.SGD([p], lr=0.1, momentum=momentum, weight_decay=wd,
                                     nesterov=nesterov)
            for g in grads:
                p.grad = minigrad.Tensor(g.copy())
                opt.step()
            finals.append(p.numpy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-6, atol=1e-6)


def test_gradcheck_with_fast_path_on():
    """float64 central differences through conv -> batch norm -> relu -> max-pool."""
    rng = np.random.default_rng(11)
    x = minigrad.Tensor(rng.standard_normal((1, 2, 4, 4)), requires_grad=True)
    w = minigrad.Tensor(rng.standard_normal((3, 2, 3, 3)) * 0.5, requires_grad=True)
    b = minigrad.Tensor(rng.standard_normal(3), requires_grad=True)
    gamma = minigrad.Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
    beta = minigrad.Tensor(rng.standard_normal(3), requires_grad=True)

    def f(x, w, b, gamma, beta):
        y = F.conv2d(x, w, b, stride=1, padding=1)
        y = F.batch_norm(y, None, None, gamma, beta, training=True)
        return F.max_pool2d(F.relu(y), 2)

    with config.fast_mode():
        minigrad.gradcheck(f, (x, w, b, gamma, beta))


def _train_small_resnet(steps):
    """Losses and final weights of a few SGD steps of a tiny CIFAR ResNet on the
    fast path with the default threads (fixed seed and data)."""
    minigrad.manual_seed(5)
    model = minigrad.models.create("resnet20", width=8, blocks_per_stage=1)
    model.train()
    opt = minigrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    rng = np.random.default_rng(5)
    losses = []
    with config.fast_mode():
        for _ in range(steps):
            x = minigrad.Tensor(rng.standard_normal((64, 3, 32, 32)).astype(np.float32))
            y = rng.integers(0, 10, 64)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, [p.data.copy() for p in model.parameters()]


def test_training_is_bit_identical_between_runs():
    """The threads take chunks of the batch in whatever order they get to
    them; the weight and bias gradients (sums over the batch) must still add
    their parts in a fixed order, so two identical runs agree bit for bit."""
    losses1, weights1 = _train_small_resnet(8)
    losses2, weights2 = _train_small_resnet(8)
    assert losses1 == losses2
    differ = [i for i, (a, b) in enumerate(zip(weights1, weights2)) if not np.array_equal(a, b)]
    assert not differ, f"parameters {differ} differ between two identical runs"


def test_conv_from_two_user_threads_at_once():
    """Two threads running convolutions at the same time (each with its own
    scratch buffers) get the answers they get one at a time."""
    import threading
    rng = np.random.default_rng(9)
    cases = [(rng.standard_normal((8, 6, 12, 12)).astype(np.float32),
              rng.standard_normal((10, 6, 3, 3)).astype(np.float32)) for _ in range(2)]
    want = [K.conv2d_forward(x, w, None, (1, 1), (1, 1)) for x, w in cases]
    got = [[], []]

    def run(i):
        x, w = cases[i]
        for _ in range(20):
            got[i].append(K.conv2d_forward(x, w, None, (1, 1), (1, 1)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(got[i]) == 20
        for y in got[i]:
            np.testing.assert_array_equal(y, want[i])


def test_kernels_import_from_an_uninstalled_source_checkout(tmp_path):
    """Without the install's mapping (no site.py, so no editable finder), a
    checkout on PYTHONPATH still finds minigrad.kernels and takes the fast path."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(minigrad.__file__).resolve().parent.parent
    site_dirs = {str(Path(m.__file__).resolve().parent.parent) for m in (np, pytest)}
    import numba
    site_dirs.add(str(Path(numba.__file__).resolve().parent.parent))
    code = ("import minigrad, minigrad.kernels as k; from minigrad import config; "
            "print(k.__file__); print(config.cpu_kernels() is not None)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), *sorted(site_dirs)]))
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    where, fast = out.stdout.split()
    assert Path(where).resolve() == repo / "kernels" / "__init__.py"
    assert fast == "True"


def test_missing_kernels_warn_instead_of_silently_slowing_down(monkeypatch):
    import sys
    import minigrad.kernels
    monkeypatch.setitem(sys.modules, "minigrad.kernels.cpu_numba", None)   # import fails
    monkeypatch.delattr(minigrad.kernels, "cpu_numba", raising=False)
    monkeypatch.setitem(config._state, "kernels", None)
    with pytest.warns(RuntimeWarning, match="fast CPU kernels could not be imported"):
        assert config.cpu_kernels() is None
    x = np.ones((2, 3), np.float32)
    assert not config.use_fast(x)                       # the reference path runs


def test_parts_added_in_chunk_order_whatever_thread_runs_them():
    """add_in_order adds chunk parts in chunk order although the threads
    finish them out of order (a thread goes on to its next chunk with another
    of its buffers meanwhile), and a failing thread does not leave the others
    waiting for its part."""
    import threading
    import time

    class Total:                      # records the order of the additions
        def __init__(self):
            self.seen = []

        def __iadd__(self, part):
            self.seen.append(int(part[0]))
            return self

    chunks = K._SharedChunks(6, 1, 2, target=1)          # one image per chunk
    assert chunks.count == 6
    total = Total()

    def work(t):
        while (chunk := chunks.next()) is not None:
            i = chunk[0]
            part = chunks.part_buffer((1,), np.float64)
            time.sleep(0.02 if i % 2 == 0 else 0.0)      # even chunks finish late
            part[0] = i
            chunks.add_in_order(i, part, total)
    chunks.run(work, 2)
    assert total.seen == list(range(6))

    chunks = K._SharedChunks(6, 1, 2, target=1)

    def failing(t):
        while (chunk := chunks.next()) is not None:
            if chunk[0] == 1:
                raise ValueError("chunk 1 failed")
            chunks.add_in_order(chunk[0], np.zeros(1), Total())
    done = []
    runner = threading.Thread(target=lambda: done.append(pytest.raises(Exception, chunks.run,
                                                                       failing, 2)))
    runner.start()
    runner.join(timeout=30)
    assert done, "the threads kept waiting for the failed chunk's part"


@pytest.mark.parametrize("dtype,shape", [
    (np.float64, (3, 16, 8, 8)),        # 8x8 images, several per chunk
    (np.float64, (2, 32, 41, 37)),      # a plane longer than D.FLUSH_POSITIONS, odd sizes
    (np.float32, (5, 32, 6, 5)),
])
def test_weight_gradient_with_the_channels_in_the_lanes(dtype, shape):
    """The weight-gradient kernel with the input channels in the vector lanes
    (taken for whole blocks of CV vectors of channels) against the
    reference gradients."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal(shape).astype(dtype)
    wt = rng.standard_normal((6, shape[1], 3, 3)).astype(dtype)
    assert K._lanes_weight_grad(x, 1)
    g = rng.standard_normal((shape[0], 6) + shape[2:]).astype(dtype)
    assert K.direct_3x3_applies(x, wt, (1, 1), (1, 1))
    want = reference_conv_grads(x, wt, np.zeros(6), g, 1, 1)[1]
    dw = K.conv2d_backward(x, wt, g, (1, 1), (1, 1), False, True, False)[1]
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, want, **tol)


_AVX2_CHECK = """
import numpy as np
from minigrad.kernels import cpu_conv3x3 as D, cpu_numba as K, simd
assert simd.VECTOR_BYTES == 32 and D.VR == 3, (simd.VECTOR_BYTES, D.VR)
rng = np.random.default_rng(3)
# (the last: 4x8 images, 8 vectors of 4 float64, blocks of 3 and one of 2, image by image)
assert D.image_blocks(32, 4) and not D.image_blocks(63, 4)
for i, (stride, hw) in enumerate([(1, (7, 9)), (2, (7, 9)), (1, (4, 8))]):
    x = rng.standard_normal((3, 5) + hw)
    w = rng.standard_normal((6, 5, 3, 3))
    b = rng.standard_normal(6)
    assert K.direct_3x3_applies(x, w, (stride, stride), (1, 1))
    y = K.conv2d_forward(x, w, b, (stride, stride), (1, 1))
    g = rng.standard_normal(y.shape)
    dx, dw, _ = K.conv2d_backward(x, w, g, (stride, stride), (1, 1))
    np.save(f"y{i}.npy", y)
    np.save(f"dx{i}.npy", dx)
    np.save(f"dw{i}.npy", dw)
x = rng.standard_normal((3, 24, 7, 9))  # a stride-2 dx channels-last
w = rng.standard_normal((20, 24, 3, 3))
assert K.conv2d_routes(x, w, (2, 2), (1, 1))[1] == K.NHWC
g = rng.standard_normal((3, 20, 4, 5))
np.save("dx_s2_nhwc.npy", K.conv2d_backward(x, w, g, (2, 2), (1, 1))[0])
K.NHWC_MIN_CHANNEL_PAIRS = 1            # the channels-last kernels, on a small layer
x = rng.standard_normal((3, 6, 5, 4))
w = rng.standard_normal((16, 6, 3, 3))
assert K.nhwc_3x3_applies(x, w, (1, 1), (1, 1))
y = K.conv2d_forward(x, w, None, (1, 1), (1, 1))
g = rng.standard_normal(y.shape)
dx, dw, _ = K.conv2d_backward(x, w, g, (1, 1), (1, 1))
for name, a in (("y", y), ("dx", dx), ("dw", dw)):
    np.save(f"{name}_nhwc.npy", a)
from minigrad.kernels.cpu_conv3x3_nhwc import to_nhwc    # blocks transposed in registers
for dtype in (np.float32, np.float64):
    x = np.arange(2 * 16 * 4 * 4, dtype=dtype).reshape(2, 16, 4, 4)
    xt = np.zeros((33, 16), dtype)
    to_nhwc(x, 0, 2, xt)
    np.save(f"xt_{np.dtype(dtype).name}.npy", xt)
"""


def test_direct_3x3_on_a_cpu_without_avx512(tmp_path):
    """On a CPU without AVX-512 (compiled for Haswell's AVX2 through Numba's
    own NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, in a cache of its own), the
    register blocks take the narrower shape and give the same numbers (image
    by image too, with the narrower tail block); so do the channels-last
    kernels (forward, dx and dW) and their layout's blocks transposed in
    registers (8 x 8 and 4 x 4), and a stride-2 layer's channels-last dx.
    On a CPU that has no AVX-512 itself the
    check runs as compiled for it, from the kernels' usual cache."""
    import os
    import subprocess
    import sys
    from minigrad.kernels import simd
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    if simd.VECTOR_BYTES == 64:         # AVX-512 here: compile for Haswell instead
        features = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
                    "+movbe,+popcnt,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")
        env.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=features,
                   NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", _AVX2_CHECK], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rng = np.random.default_rng(3)
    for i, (stride, hw) in enumerate([(1, (7, 9)), (2, (7, 9)), (1, (4, 8))]):
        x = rng.standard_normal((3, 5) + hw)
        w = rng.standard_normal((6, 5, 3, 3))
        b = rng.standard_normal(6)
        want = naive_conv(x, w, b, stride, 1)
        g = rng.standard_normal(want.shape)
        np.testing.assert_allclose(np.load(tmp_path / f"y{i}.npy"), want, rtol=1e-11, atol=1e-11)
        want_dx, want_dw, _ = reference_conv_grads(x, w, b, g, stride, 1)
        np.testing.assert_allclose(np.load(tmp_path / f"dx{i}.npy"), want_dx,
                                   rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(np.load(tmp_path / f"dw{i}.npy"), want_dw,
                                   rtol=1e-11, atol=1e-11)
    x = rng.standard_normal((3, 24, 7, 9))
    w = rng.standard_normal((20, 24, 3, 3))
    g = rng.standard_normal((3, 20, 4, 5))
    want_dx = reference_conv_grads(x, w, np.zeros(20), g, 2, 1)[0]
    np.testing.assert_allclose(np.load(tmp_path / "dx_s2_nhwc.npy"), want_dx,
                               rtol=1e-11, atol=1e-11)
    x = rng.standard_normal((3, 6, 5, 4))
    w = rng.standard_normal((16, 6, 3, 3))
    want = naive_conv(x, w, np.zeros(16), 1, 1)
    g = rng.standard_normal(want.shape)
    want_dx, want_dw, _ = reference_conv_grads(x, w, np.zeros(16), g, 1, 1)
    for name, a in (("y", want), ("dx", want_dx), ("dw", want_dw)):
        np.testing.assert_allclose(np.load(tmp_path / f"{name}_nhwc.npy"), a, rtol=1e-11, atol=1e-11)
    for dtype in ("float32", "float64"):
        x = np.arange(2 * 16 * 4 * 4, dtype=dtype).reshape(2, 16, 4, 4)
        np.testing.assert_array_equal(np.load(tmp_path / f"xt_{dtype}.npy")[:32],
                                      x.transpose(0, 2, 3, 1).reshape(32, 16))


def test_set_num_threads_reaches_the_kernels():
    """The kernels keep the thread count they read; minigrad.set_num_threads
    updates it (and Numba's)."""
    import numba
    before = config.get_num_threads()
    try:
        config.set_num_threads(1)
        assert K._threads() == 1 and numba.get_num_threads() == 1
        config.set_num_threads(before)
        assert K._threads() == before
    finally:
        config.set_num_threads(before)


def test_kernels_compiled_and_cached_give_the_same_numbers(tmp_path):
    """A run is bit-identical when repeated, whether it compiles the kernels
    or loads them from Numba's cache: two training steps of a ResNet-20 and
    of a VGG-11 (tests/_fresh_and_cached.py), once with an empty cache, once
    from the cache that run wrote, give the same losses and weights.  (With
    products fused into batch norm's reassociated sums they did not.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).with_name("_fresh_and_cached.py")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    fresh, cached = (dict(line.split() for line in r.stdout.splitlines()) for r in runs)
    assert fresh.pop("cached") == "0" and int(cached.pop("cached")) > 20
    assert fresh == cached
