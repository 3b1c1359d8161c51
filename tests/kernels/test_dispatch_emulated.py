"""The GPU path of the ops, end to end, without a GPU.

``F.conv2d``, ``F.max_pool2d`` and ``F.local_response_norm`` on float32 arrays that
claim to be on "cuda" must reach minigrad.cuda's wrappers, which must launch the
kernels with the right arguments, grids and output shapes.  Here NumPy stands in
for CuPy and the CPU emulation of kernels/*.cu (cuda_emulation.h) for the GPU, so
everything but CuPy itself runs: the dispatch in minigrad/ops, the wrappers'
argument packing and launch configurations, the weight-gradient slices, the
saved state between forward and backward.  Results must equal the CPU path.
"""
import numpy as np
import pytest

import minigrad
import minigrad.nn.functional as F
from _emulation import launch
from minigrad import backend
from minigrad import cuda as gpu


@pytest.fixture
def fake_gpu(lib, monkeypatch):
    """Inside: every array counts as a "cuda" array, CuPy is NumPy, and
    get_kernel(file, name) launches the emulated kernel.  Records kernel names."""
    launched = []

    def get_kernel(filename, name):
        def kernel(grid, block, args):
            launched.append(name)
            launch(lib, name, grid, block, *args)
        return kernel

    def enter():
        monkeypatch.setattr(backend, "device_of", lambda a: "cuda")
        monkeypatch.setattr(gpu, "_xp", lambda: np)
        monkeypatch.setattr(gpu, "get_kernel", get_kernel)
    return enter, launched


def run(fn, arrays):
    """fn's output and the gradients of sum(output * r) for a fixed r."""
    ts = [minigrad.Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    r = np.random.default_rng(0).standard_normal(y.shape).astype(np.float32)
    y.backward(r)
    return [y.numpy()] + [t.grad.numpy() for t in ts]


def compare(fn, arrays, fake_gpu, rtol=1e-4, atol=1e-4):
    want = run(fn, arrays)
    enter, launched = fake_gpu
    enter()
    got = run(fn, arrays)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return launched


def numba_usable():
    """The simulator, or a real GPU (which copies these NumPy arrays to the device)."""
    from numba import cuda
    from numba.core import config
    return bool(config.ENABLE_CUDASIM) or cuda.is_available()


# the Numba simulator is slow: one Numba case
@pytest.mark.parametrize("impl,stride", [("cupy", 1), ("cupy", 2), ("im2col", 1), ("im2col", 2),
                                         ("numba", 2)])
def test_conv2d_3x3_reaches_the_kernels(fake_gpu, impl, stride):
    if impl == "numba" and not numba_usable():
        pytest.skip("numba.cuda was imported without the simulator in this process, "
                    "and there is no GPU")
    rng = np.random.default_rng(stride)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 7, 6), (5, 3, 3, 3), (5,)]]
    with gpu.conv_kernel(impl):
        launched = compare(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=1),
                           arrays, fake_gpu)
    expected = {"cupy": {"conv3x3_forward", "conv3x3_backward_input", "conv3x3_backward_weight"},
                "numba": set(),                       # the Numba kernels launch themselves
                "im2col": {"im2col", "col2im"}}[impl]
    assert set(launched) == expected


def test_other_convs_use_im2col_kernels(fake_gpu):
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(2, 3, 6, 5), (4, 3, 1, 1)]]
    launched = compare(lambda x, w: F.conv2d(x, w, stride=2), arrays, fake_gpu)
    assert set(launched) == {"im2col", "col2im"}


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
def test_max_pool2d_reaches_the_kernels(fake_gpu, k, s, p):
    rng = np.random.default_rng(k)
    x = (rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0).astype(np.float32)
    launched = compare(lambda t: F.max_pool2d(t, k, s, p), [x], fake_gpu, rtol=1e-6, atol=1e-6)
    assert launched == ["maxpool2d_forward", "maxpool2d_backward"]


def test_local_response_norm_reaches_the_kernels(fake_gpu):
    x = np.random.default_rng(5).standard_normal((2, 7, 3, 2)).astype(np.float32)
    launched = compare(lambda t: F.local_response_norm(t, 5, 0.1, 0.75, 2.0), [x], fake_gpu,
                       rtol=1e-4, atol=1e-5)
    assert launched == ["lrn_forward", "lrn_backward"]


def test_float64_keeps_the_generic_path(fake_gpu):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(s) for s in [(1, 2, 5, 5), (3, 2, 3, 3)]]
    launched = compare(lambda x, w: F.max_pool2d(F.conv2d(x, w, padding=1), 2), arrays, fake_gpu)
    assert launched == []


@pytest.mark.parametrize("impl", ["cupy", "im2col"])
def test_conv_wrappers_called_directly(fake_gpu, impl):
    """minigrad.cuda.conv2d_* with an explicit impl, against the NumPy reference."""
    import _numba_conv_checks as ref
    enter, launched = fake_gpu
    enter()
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 6, 7)).astype(np.float32)
    w = rng.standard_normal((3, 5, 3, 3)).astype(np.float32)
    for s in (1, 2):
        y = gpu.conv2d_forward(x, w, s, 1, impl=impl)
        gy = rng.standard_normal(y.shape).astype(np.float32)
        gx = gpu.conv2d_backward_input(gy, w, x.shape, s, 1, impl=impl)
        gw = gpu.conv2d_backward_weight(x, gy, s, 1, impl=impl)
        want_gx, want_gw = ref.reference_backward(x, w, gy, s, 1)
        np.testing.assert_allclose(y, ref.reference_forward(x, w, s, 1), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gx, want_gx, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gw, want_gw, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stride 1 or 2"):
        gpu.conv2d_forward(x, w, 3, 1, impl=impl)
    with pytest.raises(ValueError, match="grad_out has shape"):
        gpu.conv2d_backward_input(gy[:1], w, x.shape, 2, 1, impl=impl)


def test_dropout_mask_is_drawn_on_the_device(fake_gpu):
    """F.dropout on a float32 GPU array: one kernel (kernels/dropout.cu) draws the mask
    and applies it; nothing is drawn on the host.  Seeded runs repeat exactly."""
    enter, launched = fake_gpu
    enter()
    x = np.random.default_rng(8).standard_normal((4, 50)).astype(np.float32)
    outs = []
    for _ in range(2):
        minigrad.manual_seed(3)
        t = minigrad.Tensor(x, requires_grad=True)
        y = F.dropout(t, 0.3)
        g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        y.backward(g)
        outs.append((y.numpy(), t.grad.numpy()))
    assert launched == ["dropout_forward", "dropout_forward"]
    y, gx = outs[0]
    mask = np.where(y != 0, y / x, 0)
    kept = mask != 0
    np.testing.assert_allclose(mask[kept], 1 / 0.7, rtol=1e-6)
    assert 0.5 < kept.mean() < 0.9
    np.testing.assert_allclose(gx, g * mask, rtol=1e-6)          # the same mask backward
    np.testing.assert_array_equal(outs[1][0], y)                  # manual_seed repeats it
    np.testing.assert_array_equal(outs[1][1], gx)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-4),
                                                  (0.9, True, 5e-4)])
def test_sgd_step_is_one_kernel_per_parameter(fake_gpu, momentum, nesterov, wd):
    """optim.SGD on float32 GPU parameters updates each with one sgd_update launch and
    lands where the CPU update lands, step after step (the momentum buffer too)."""
    from minigrad import optim
    rng = np.random.default_rng(9)
    shapes = [(3, 4), (5,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]

    def train():
        params = [minigrad.nn.Parameter(a.copy()) for a in start]
        opt = optim.SGD(params, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = minigrad.Tensor(g)
            opt.step()
        return [p.numpy() for p in params]

    want = train()
    enter, launched = fake_gpu
    enter()
    got = train()
    assert launched == ["sgd_update"] * (len(shapes) * len(grads))
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_large_arrays_take_the_64_bit_index_kernels(fake_gpu, monkeypatch):
    """Above INT32_ELEMENTS the wrappers launch the _i64 kernels of im2col.cu and
    maxpool.cu (here the limit is lowered, so small arrays count as large)."""
    monkeypatch.setattr(gpu, "INT32_ELEMENTS", 16)
    rng = np.random.default_rng(10)
    x = (rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6) / 10.0).astype(np.float32)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    launched = compare(lambda t, w: F.conv2d(F.max_pool2d(t, 2), w, stride=2), [x, w], fake_gpu)
    assert launched == ["maxpool2d_forward_i64", "im2col_i64", "col2im_i64",
                        "maxpool2d_backward_i64"]
