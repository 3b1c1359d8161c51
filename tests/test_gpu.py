"""minigrad on a CUDA GPU (CuPy): every op, its gradients, the hand-written kernels
of kernels/ against NumPy references, and a few ResNet-20 training steps.

Skipped unless CuPy is installed and sees a GPU (marker ``gpu``; run only these
with ``pytest -m gpu``).  Without a GPU the kernels are still tested: in Numba's
CUDA simulator (tests/kernels/test_numba_conv.py) and, for the CUDA C sources,
by a CPU emulation (tests/kernels/test_cuda_c_emulated.py).
"""
import numpy as np
import pytest

import minigrad
from minigrad import backend

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not backend.cuda_available(),
                                 reason="needs CuPy and a CUDA GPU")]

if backend.cuda_available():
    import cupy as cp
    import minigrad.nn.functional as F
    from minigrad import cuda as gpu


# --- NumPy references (float64), written from the definitions --------------------------
def windows(xpad, k, s, ho, wo):
    """{(ky, kx): the (N, C, Ho, Wo) view of the padded input under tap (ky, kx)}."""
    return {(ky, kx): xpad[:, :, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]
            for ky in range(k) for kx in range(k)}


def conv_reference(x, w, gy, s, p):
    """y, dL/dx, dL/dw of y = conv2d(x, w) for L = <y, gy> (gy may be None)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    N, C, H, W = x.shape
    K, _, k, _ = w.shape
    ho, wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = windows(xpad, k, s, ho, wo)
    y = sum(np.einsum("nchw,kc->nkhw", v, w[:, :, ky, kx]) for (ky, kx), v in win.items())
    if gy is None:
        return y, None, None
    gy = gy.astype(np.float64)
    gw = np.zeros_like(w)
    gxpad = np.zeros_like(xpad)
    gwin = windows(gxpad, k, s, ho, wo)          # views into gxpad
    for (ky, kx), v in win.items():
        gw[:, :, ky, kx] = np.einsum("nkhw,nchw->kc", gy, v)
        gwin[(ky, kx)] += np.einsum("nkhw,kc->nchw", gy, w[:, :, ky, kx])
    return y, gxpad[:, :, p:p + H, p:p + W], gw


def shuffled(shape, rng):
    """Distinct values in random order (no max-pooling ties)."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / 11.0 - 2.0).astype(np.float32)


def to_gpu(a):
    return cp.asarray(a)


# --- the hand-written kernels ----------------------------------------------------------------
CONV_SHAPES = [(2, 3, 5, 5, 7), (2, 16, 32, 16, 16), (3, 20, 18, 9, 11), (4, 64, 64, 8, 8)]


@pytest.mark.parametrize("impl", ["cupy", "numba", "im2col"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("N,C,K,H,W", CONV_SHAPES)
def test_conv3x3_kernels_match_numpy(impl, stride, N, C, K, H, W):
    rng = np.random.default_rng(N + C + K + H + stride)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    gy = rng.standard_normal((N, K, ho, wo)).astype(np.float32)
    y_ref, gx_ref, gw_ref = conv_reference(x, w, gy, stride, 1)
    tol = dict(rtol=1e-4, atol=1e-3)
    y = gpu.conv2d_forward(to_gpu(x), to_gpu(w), stride, 1, impl=impl)
    np.testing.assert_allclose(cp.asnumpy(y), y_ref, **tol)
    gx = gpu.conv2d_backward_input(to_gpu(gy), to_gpu(w), x.shape, stride, 1, impl=impl)
    np.testing.assert_allclose(cp.asnumpy(gx), gx_ref, **tol)
    gw = gpu.conv2d_backward_weight(to_gpu(x), to_gpu(gy), stride, 1, impl=impl)
    np.testing.assert_allclose(cp.asnumpy(gw), gw_ref, rtol=1e-4, atol=1e-2)


def test_conv3x3_rejects_bad_input():
    x = cp.zeros((1, 2, 5, 5), cp.float32)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        gpu.conv2d_forward(x, cp.zeros((3, 2, 3, 3), cp.float32), stride=3)
    with pytest.raises(ValueError, match=r"w \(K, C, 3, 3\)"):
        gpu.conv2d_forward(x, cp.zeros((3, 4, 3, 3), cp.float32))
    with pytest.raises(TypeError, match="float32"):
        gpu.conv2d_forward(x.astype(cp.float64), cp.zeros((3, 2, 3, 3), cp.float64))
    with pytest.raises(ValueError, match="unknown"):
        gpu.set_conv_kernel("winograd")


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (2, 2, 0)])
def test_im2col_col2im_kernels(k, s, p):
    rng = np.random.default_rng(k + s)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    N, C, H, W = x.shape
    ho, wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    want = np.empty((C, k, k, N, ho, wo), np.float32)
    for (ky, kx), v in windows(xpad, k, s, ho, wo).items():
        want[:, ky, kx] = v.transpose(1, 0, 2, 3)
    cols = gpu.im2col(to_gpu(x), k, k, s, p)
    np.testing.assert_array_equal(cp.asnumpy(cols), want.reshape(C * k * k, N * ho * wo))
    # col2im is the adjoint of im2col: <im2col(x), c> == <x, col2im(c)>
    c = rng.standard_normal(cols.shape).astype(np.float32)
    back = cp.asnumpy(gpu.col2im(to_gpu(c), x.shape, k, k, s, p))
    assert np.isclose((want.reshape(cols.shape).astype(np.float64) * c).sum(),
                      (x.astype(np.float64) * back).sum(), rtol=1e-5)


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_maxpool_kernels(k, s, p):
    rng = np.random.default_rng(k * 7 + s)
    x = shuffled((2, 3, 9, 8), rng)
    y, arg = gpu.maxpool2d_forward(to_gpu(x), k, s, p)
    y, arg = cp.asnumpy(y), cp.asnumpy(arg)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    want_y, want_gx = np.zeros(y.shape, np.float32), np.zeros(x.shape, np.float64)
    W = x.shape[3]
    for n, c, oy, ox in np.ndindex(y.shape):
        y0, x0 = oy * s - p, ox * s - p
        win = x[n, c, max(y0, 0):y0 + k, max(x0, 0):x0 + k]
        iy, ix = np.unravel_index(np.argmax(win), win.shape)
        iy, ix = iy + max(y0, 0), ix + max(x0, 0)
        want_y[n, c, oy, ox] = x[n, c, iy, ix]
        want_gx[n, c, iy, ix] += gy[n, c, oy, ox]
        assert arg[n, c, oy, ox] == iy * W + ix
    np.testing.assert_array_equal(y, want_y)
    gx = gpu.maxpool2d_backward(to_gpu(gy), to_gpu(arg), x.shape, k, s, p)
    np.testing.assert_allclose(cp.asnumpy(gx), want_gx, rtol=1e-6, atol=1e-6)


def lrn_reference(x, size, alpha, beta, k):
    x = x.astype(np.float64)
    C = x.shape[1]
    out = np.empty_like(x)
    for c in range(C):
        lo, hi = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2)
        out[:, c] = x[:, c] / (k + alpha * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** beta
    return out


@pytest.mark.parametrize("size", [5, 4])
def test_lrn_kernels(size):
    rng = np.random.default_rng(size)
    x = rng.standard_normal((2, 7, 3, 2)).astype(np.float32)
    alpha, beta, k = 0.1, 0.75, 2.0
    y, scale = gpu.lrn_forward(to_gpu(x), size, alpha, beta, k)
    np.testing.assert_allclose(cp.asnumpy(y), lrn_reference(x, size, alpha, beta, k),
                               rtol=1e-5, atol=1e-6)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    gx = cp.asnumpy(gpu.lrn_backward(to_gpu(x), scale, to_gpu(gy), size, alpha, beta))
    want, x64, eps = np.zeros(x.shape), x.astype(np.float64), 1e-6
    for idx in np.ndindex(x.shape):
        xp_, xm = x64.copy(), x64.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        want[idx] = ((lrn_reference(xp_, size, alpha, beta, k)
                      - lrn_reference(xm, size, alpha, beta, k)) * gy).sum() / (2 * eps)
    np.testing.assert_allclose(gx, want, rtol=1e-4, atol=1e-5)


# --- dispatch: F.conv2d / max_pool2d / local_response_norm reach the kernels ------------------
@pytest.mark.parametrize("impl", ["cupy", "numba", "im2col"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_dispatch_matches_cpu(impl, stride, monkeypatch):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    calls = []
    real = gpu.conv2d_forward
    monkeypatch.setattr(gpu, "conv2d_forward",
                        lambda *a, **k: calls.append(1) or real(*a, **k))

    def run(device):
        xs = [minigrad.Tensor(a, requires_grad=True, device=device) for a in (x, w, b)]
        y = F.conv2d(*xs, stride=stride, padding=1)
        (y * y).sum().backward()
        return [y.numpy()] + [t.grad.numpy() for t in xs]

    want = run("cpu")
    with gpu.conv_kernel(impl):
        got = run("cuda")
    assert bool(calls) == (impl != "im2col"), "the 3x3 kernels were (not) used"
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-3)


def test_pool_and_lrn_dispatch_match_cpu():
    rng = np.random.default_rng(3)
    x = shuffled((2, 6, 8, 8), rng)
    for fn in (lambda t: F.max_pool2d(t, 2), lambda t: F.max_pool2d(t, 3, 2, 1),
               lambda t: F.local_response_norm(t, 5, 1e-2, 0.75, 2.0)):
        res = []
        for device in ("cpu", "cuda"):
            t = minigrad.Tensor(x, requires_grad=True, device=device)
            y = fn(t)
            (y * y).sum().backward()
            res.append((y.numpy(), t.grad.numpy()))
        np.testing.assert_allclose(res[1][0], res[0][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res[1][1], res[0][1], rtol=1e-4, atol=1e-5)


# --- every op on CuPy, float64: same values as NumPy, and gradcheck ------------------------------
def _ops():
    g = lambda: np.random.default_rng(5)   # noqa: E731  (a fresh, fixed dropout mask per call)
    return {
        "add": (lambda a, b: a + b, [(2, 3), (3,)]),
        "mul_div": (lambda a, b: a * b / (b * b + 1), [(2, 3), (2, 3)]),
        "exp_log_sqrt": (lambda a: (a.exp() + 1).log() + (a * a + 1).sqrt(), [(2, 3)]),
        "tanh_sigmoid_pow": (lambda a: a.tanh() * a.sigmoid() + (a * a + 1) ** 1.5, [(2, 3)]),
        "matmul": (lambda a, b: a @ b, [(2, 3), (3, 4)]),
        "sum_mean_max": (lambda a: a.sum(1) + a.mean(0).sum() + a.max(1), [(3, 4)]),
        "shape": (lambda a: minigrad.cat([a.reshape(4, 3).permute(1, 0)[:, 1:3],
                                          minigrad.stack([a[0, :3], a[1, 3:]], 1)], 1), [(2, 6)]),
        "getitem_fancy": (lambda a: a[np.array([0, 2, 0])], [(3, 2)]),
        "pad": (lambda a: F.pad(a, (1, 2, 0, 1)), [(1, 2, 2, 3)]),
        "relu": (lambda a: F.relu(a), [(2, 5)]),
        "softmax": (lambda a: F.softmax(a, 1) * F.log_softmax(a, 1), [(2, 4)]),
        "dropout": (lambda a: F.dropout(a, 0.4, generator=g()), [(3, 4)]),
        "linear": (lambda a, w, b: F.linear(a, w, b), [(2, 3), (4, 3), (4,)]),
        "conv3x3_s1": (lambda a, w, b: F.conv2d(a, w, b, 1, 1), [(2, 2, 4, 5), (3, 2, 3, 3), (3,)]),
        "conv3x3_s2": (lambda a, w: F.conv2d(a, w, stride=2, padding=1), [(1, 2, 5, 5), (2, 2, 3, 3)]),
        "conv1x1_s2": (lambda a, w: F.conv2d(a, w, stride=2), [(1, 3, 4, 4), (2, 3, 1, 1)]),
        "max_pool": (lambda a: F.max_pool2d(a, 3, 2, 1), [(1, 2, 5, 5)]),
        "avg_pool": (lambda a: F.avg_pool2d(a, 2), [(1, 2, 4, 4)]),
        "adaptive_avg_pool": (lambda a: F.adaptive_avg_pool2d(a, 1), [(2, 2, 3, 3)]),
        "lrn": (lambda a: F.local_response_norm(a, 3, 0.1, 0.75, 2.0), [(1, 5, 2, 2)]),
        "batch_norm_train": (lambda a, w, b: F.batch_norm(a, None, None, w, b, training=True),
                             [(3, 2, 2, 2), (2,), (2,)]),
        "cross_entropy": (lambda a: F.cross_entropy(a, np.array([1, 0, 3])), [(3, 4)]),
    }


@pytest.mark.parametrize("name", sorted(_ops()) if backend.cuda_available() else [])
def test_op_on_gpu_float64(name):
    fn, shapes = _ops()[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    if name in ("max_pool",):
        arrays = [shuffled(s, rng).astype(np.float64) for s in shapes]
    else:
        arrays = [rng.standard_normal(s) + (0.05 if name == "relu" else 0.0) for s in shapes]
    cpu = [minigrad.Tensor(a, requires_grad=True) for a in arrays]
    dev = [minigrad.Tensor(a, requires_grad=True, device="cuda") for a in arrays]
    np.testing.assert_allclose(fn(*dev).numpy(), fn(*cpu).numpy(), rtol=1e-10, atol=1e-12)
    assert fn(*dev).device == "cuda"
    assert minigrad.gradcheck(fn, dev)


# --- training ---------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["cupy", "numba"])
def test_resnet20_trains_on_gpu(impl):
    from minigrad import models, optim
    minigrad.manual_seed(0)
    model = models.create("resnet20").to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    x = minigrad.Tensor(rng.standard_normal((32, 3, 32, 32)).astype(np.float32), device="cuda")
    t = rng.integers(0, 10, 32)
    losses = []
    with gpu.conv_kernel(impl):
        for _ in range(12):
            loss = F.cross_entropy(model(x), t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert min(losses[-3:]) < 0.7 * losses[0], losses


# --- large shapes: the hand-written kernels against im2col + cuBLAS -----------------------------
def rel_err(a, b):
    """||a - b|| / ||b|| (float32 arithmetic lands far below 1e-4 here)."""
    a, b = cp.asarray(a, cp.float64), cp.asarray(b, cp.float64)
    return float(cp.linalg.norm(a - b) / cp.linalg.norm(b))


# (N, C, K, H, W, stride): CIFAR ResNet stages at batch 256 and 128, VGG's first layers at
# 224 x 224 (C = 3 fills part of a channel chunk), stride 2 at 224 x 224
LARGE_SHAPES = [(256, 16, 16, 32, 32, 1), (256, 16, 32, 32, 32, 2), (128, 64, 64, 8, 8, 1),
                (8, 3, 64, 224, 224, 1), (8, 64, 128, 224, 224, 2), (4, 128, 128, 56, 56, 1)]


@pytest.mark.parametrize("impl", ["cupy", "numba"])
@pytest.mark.parametrize("N,C,K,H,W,s", LARGE_SHAPES)
def test_conv3x3_large_shapes_match_im2col_cublas(impl, N, C, K, H, W, s):
    rng = cp.random.default_rng(N + C + K + H + s)
    x = rng.standard_normal((N, C, H, W), dtype=cp.float32)
    w = rng.standard_normal((K, C, 3, 3), dtype=cp.float32)
    ho, wo = (H - 1) // s + 1, (W - 1) // s + 1
    gy = rng.standard_normal((N, K, ho, wo), dtype=cp.float32)
    if (N, H) == (256, 32):     # the weight gradient is cut into several slices here
        assert gpu.conv3x3_weight_launch(N, C, K, ho, wo)[3] > 1
    want = [gpu.conv2d_forward(x, w, s, 1, impl="im2col"),
            gpu.conv2d_backward_input(gy, w, x.shape, s, 1, impl="im2col"),
            gpu.conv2d_backward_weight(x, gy, s, 1, impl="im2col")]
    got = [gpu.conv2d_forward(x, w, s, 1, impl=impl),
           gpu.conv2d_backward_input(gy, w, x.shape, s, 1, impl=impl),
           gpu.conv2d_backward_weight(x, gy, s, 1, impl=impl)]
    for what, g, e in zip(("y", "dx", "dw"), got, want):
        assert g.shape == e.shape and bool(cp.isfinite(g).all()), what
        assert rel_err(g, e) < 1e-4, (what, rel_err(g, e))


def test_conv3x3_reference_path_is_right_at_a_large_shape():
    """The im2col + cuBLAS reference itself, against float64 at one large stride-2 shape."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((16, 8, 64, 64)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
    y, gx, gw = conv_reference(x, w, gy, 2, 1)
    assert rel_err(gpu.conv2d_forward(to_gpu(x), to_gpu(w), 2, 1, impl="im2col"), y) < 1e-5
    assert rel_err(gpu.conv2d_backward_input(to_gpu(gy), to_gpu(w), x.shape, 2, 1,
                                             impl="im2col"), gx) < 1e-5
    assert rel_err(gpu.conv2d_backward_weight(to_gpu(x), to_gpu(gy), 2, 1, impl="im2col"),
                   gw) < 1e-5


@pytest.mark.parametrize("impl", ["cupy", "numba", "im2col"])
def test_conv2d_non_contiguous_inputs(impl):
    """A transposed (NHWC-stored) input and a strided weight give the contiguous result."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 10, 12, 6)).astype(np.float32)      # N, H, W, C
    w = rng.standard_normal((5, 12, 3, 3)).astype(np.float32)       # every other channel
    xs, ws = to_gpu(x).transpose(0, 3, 1, 2), to_gpu(w)[:, ::2]
    assert not xs.flags.c_contiguous and not ws.flags.c_contiguous
    with gpu.conv_kernel(impl):
        outs = []
        for a, b in ((xs, ws), (cp.ascontiguousarray(xs), cp.ascontiguousarray(ws))):
            tx, tw = minigrad.Tensor(a, requires_grad=True), minigrad.Tensor(b, requires_grad=True)
            y = F.conv2d(tx, tw, stride=2, padding=1)
            (y * y).sum().backward()
            outs.append([y.numpy(), tx.grad.numpy(), tw.grad.numpy()])
    for g, e in zip(*outs):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_numba_kernels_follow_cupys_current_stream():
    """On a non-default CuPy stream the Numba kernels see the inputs CuPy just wrote and
    CuPy sees their outputs, with no synchronisation in between."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    want = gpu.conv2d_forward(to_gpu(x), to_gpu(w), 1, 1, impl="im2col")
    with cp.cuda.Stream(non_blocking=True) as stream:
        xs = to_gpu(x) * 2                      # queued on the stream
        y = gpu.conv2d_forward(xs, to_gpu(w), 1, 1, impl="numba") * 0.5
        stream.synchronize()
    assert rel_err(y, want) < 1e-5


# --- dropout and SGD on the device ------------------------------------------------------------
def test_dropout_on_the_gpu():
    x = cp.asarray(np.random.default_rng(14).standard_normal((64, 500)).astype(np.float32))
    results = []
    for _ in range(2):
        minigrad.manual_seed(7)
        t = minigrad.Tensor(x, requires_grad=True)
        y = F.dropout(t, 0.25)
        y.backward(cp.ones_like(x))
        results.append((cp.asnumpy(y.data), cp.asnumpy(t.grad.data)))
    (y, g), (y2, g2) = results
    np.testing.assert_array_equal(y, y2)            # manual_seed repeats the mask
    mask = g                                        # the gradient of sum(y) is the mask
    assert set(np.unique(mask)) == {0.0, np.float32(1 / 0.75)}
    assert abs((mask > 0).mean() - 0.75) < 0.01
    np.testing.assert_allclose(y, cp.asnumpy(x) * mask, rtol=1e-6)


def test_sgd_on_the_gpu_matches_the_cpu():
    from minigrad import optim
    rng = np.random.default_rng(15)
    start = [rng.standard_normal(s).astype(np.float32) for s in [(16, 8, 3, 3), (16,)]]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in start] for _ in range(4)]

    def train(device):
        params = [minigrad.nn.Parameter(minigrad.Tensor(a, device=device).data) for a in start]
        opt = optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = minigrad.Tensor(g, device=device)
            opt.step()
        return [p.numpy() for p in params]

    for g, e in zip(train("cuda"), train("cpu")):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


# --- checkpoints, dense evaluation and the training script on the GPU ---------------------------
def test_checkpoint_round_trip_on_gpu(tmp_path):
    """Save a model and its optimizer trained on the GPU, load them into fresh ones on
    the GPU: the next step gives the same loss and the same weights."""
    from minigrad import models, optim
    rng = np.random.default_rng(16)
    x = minigrad.Tensor(rng.standard_normal((16, 3, 32, 32)).astype(np.float32), device="cuda")
    t = rng.integers(0, 10, 16)

    def make():
        minigrad.manual_seed(1)
        m = models.create("resnet20").to("cuda")
        return m, optim.SGD(m.parameters(), lr=0.05, momentum=0.9)

    def step(m, o):
        loss = F.cross_entropy(m(x), t)
        o.zero_grad()
        loss.backward()
        o.step()
        return loss.item()

    model, opt = make()
    for _ in range(2):
        step(model, opt)
    minigrad.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "c.npz")
    model2, opt2 = make()
    saved = minigrad.load(tmp_path / "c.npz")
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["optim"])
    assert all(p.device == "cuda" for p in model2.parameters())
    assert step(model2, opt2) == step(model, opt)
    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_dense_evaluation_on_gpu():
    """dense_predict of a small VGG at 224 x 256 on the GPU, fed a CuPy batch, equals the CPU."""
    from minigrad import models
    from minigrad.models import dense_predict
    minigrad.manual_seed(0)
    vgg = models.VGG("A", 10, width=8, hidden=64).eval()
    x = np.random.default_rng(17).standard_normal((2, 3, 224, 256)).astype(np.float32)
    want = dense_predict(vgg, x).numpy()
    vgg.to("cuda")
    got = dense_predict(vgg, cp.asarray(x))          # a CuPy batch, not a Tensor
    assert got.device == "cuda"
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_training_script_on_gpu(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "train_cifar_resnet.py"
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(script), "--device", "cuda", "--dataset",
                           "synthetic", "--synthetic-size", "256", "--blocks-per-stage", "1",
                           "--iterations", "6", "--batch-size", "64", "--out", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (out / "iterations.csv").read_text().strip().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert len(losses) == 6 and all(np.isfinite(losses))
