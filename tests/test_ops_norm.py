"""batch_norm and local_response_norm: naive oracles, running statistics, gradcheck."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor
from minigrad.nn import functional as F


def _t(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


# ---------------------------------------------------------------------------
# local response normalisation
# ---------------------------------------------------------------------------
def naive_lrn(x, size, alpha, beta, k):
    """b_c = a_c / (k + alpha * sum of a_c'^2 over the channel window)^beta, with
    the window c - size//2 .. c + (size-1)//2 clipped to the channels."""
    out = np.zeros(x.shape, np.float64)
    c = x.shape[1]
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c - 1, ch + (size - 1) // 2)
        s = np.zeros(x[:, 0].shape, np.float64)
        for j in range(lo, hi + 1):
            s += x[:, j].astype(np.float64) ** 2
        out[:, ch] = x[:, ch] / (k + alpha * s) ** beta
    return out


@pytest.mark.parametrize("size,alpha,beta,k,shape", [
    (5, 1e-4, 0.75, 2.0, (2, 7, 3, 4)),     # the paper's constants
    (5, 0.5, 0.75, 2.0, (2, 7, 3, 4)),      # large alpha so the window matters
    (3, 0.3, 0.6, 1.0, (1, 4, 2, 3)),
    (4, 0.2, 0.75, 2.0, (2, 6, 2, 2)),      # even size
    (9, 0.1, 0.75, 2.0, (1, 3, 2, 2)),      # window wider than the channels
])
def test_lrn_forward_matches_naive(rng, size, alpha, beta, k, shape):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = F.local_response_norm(Tensor(x), size, alpha, beta, k)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), naive_lrn(x, size, alpha, beta, k), rtol=1e-5)


def test_lrn_alpha_multiplies_the_sum_not_the_mean():
    """One channel of value a, size 5: the window sum is a², so the output is
    a / (k + alpha·a²)^beta (PyTorch's convention would give alpha·a²/5)."""
    x = np.zeros((1, 5, 1, 1))
    x[0, 2] = 2.0
    y = F.local_response_norm(Tensor(x), 5, alpha=0.1, beta=0.75, k=2.0).numpy()
    assert y[0, 2, 0, 0] == pytest.approx(2.0 / (2.0 + 0.1 * 4.0) ** 0.75)


@pytest.mark.parametrize("size,shape", [(5, (2, 7, 2, 3)), (3, (1, 4, 3, 2)), (4, (1, 6, 2, 2)),
                                        (2, (2, 3, 5))])
def test_lrn_gradcheck(rng, size, shape):
    x = _t(rng.standard_normal(shape) * 2)
    assert mg.gradcheck(lambda a: F.local_response_norm(a, size, 0.5, 0.75, 2.0), [x])


def test_lrn_matches_torch_with_alpha_times_size(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 8, 3, 3)) * 3
    g = rng.standard_normal(x.shape)
    for size, alpha, beta, k in [(5, 1e-4, 0.75, 2.0), (5, 0.3, 0.75, 2.0), (4, 0.2, 0.6, 1.0)]:
        xm = _t(x)
        ym = F.local_response_norm(xm, size, alpha, beta, k)
        ym.backward(g)
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.nn.functional.local_response_norm(xt, size, alpha * size, beta, k)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-10)
        np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_lrn_rejects_2d_input():
    with pytest.raises(ValueError, match=r"local_response_norm: .*at least 3 dims.*\(4, 5\)"):
        F.local_response_norm(Tensor(np.zeros((4, 5), np.float32)))


# ---------------------------------------------------------------------------
# batch normalisation
# ---------------------------------------------------------------------------
def naive_bn_train(x, gamma, beta, eps):
    """Per channel: biased batch statistics, normalise, scale, shift; also the
    unbiased variance that the running estimate uses."""
    c = x.shape[1]
    out = np.zeros(x.shape, np.float64)
    means, unbiased = np.zeros(c), np.zeros(c)
    for ch in range(c):
        v = x[:, ch].astype(np.float64)
        mu = v.sum() / v.size
        var = ((v - mu) ** 2).sum() / v.size
        out[:, ch] = gamma[ch] * (v - mu) / np.sqrt(var + eps) + beta[ch]
        means[ch], unbiased[ch] = mu, ((v - mu) ** 2).sum() / (v.size - 1)
    return out, means, unbiased


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 3, 5)])
def test_batch_norm_train_forward_and_running_stats(rng, shape):
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1.5).astype(np.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    rm0 = rng.standard_normal(c).astype(np.float32)
    rv0 = rng.uniform(0.5, 2, c).astype(np.float32)
    rm, rv = Tensor(rm0.copy()), Tensor(rv0.copy())           # Tensors, like module buffers
    rm_array = rm.data
    y = F.batch_norm(Tensor(x), rm, rv, Tensor(gamma), Tensor(beta), training=True,
                     momentum=0.2, eps=1e-5)
    ref, mean, unbiased = naive_bn_train(x, gamma, beta, 1e-5)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    assert rm.data is rm_array                                # updated in place
    np.testing.assert_allclose(rm.numpy(), 0.8 * rm0 + 0.2 * mean, rtol=1e-5)
    np.testing.assert_allclose(rv.numpy(), 0.8 * rv0 + 0.2 * unbiased, rtol=1e-5)


def test_batch_norm_updates_plain_arrays_in_place(rng):
    x = rng.standard_normal((5, 3))
    rm, rv = np.zeros(3), np.ones(3)
    F.batch_norm(Tensor(x), rm, rv, training=True)
    np.testing.assert_allclose(rm, 0.1 * x.mean(0))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(0, ddof=1))


@pytest.mark.parametrize("shape", [(6, 4), (2, 4, 3, 2)])
def test_batch_norm_eval_uses_running_stats(rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    rm = rng.standard_normal(c).astype(np.float32)
    rv = rng.uniform(0.5, 2, c).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    before = (rm.copy(), rv.copy())
    y = F.batch_norm(Tensor(x), rm, rv, Tensor(gamma.astype(np.float32)),
                     Tensor(beta.astype(np.float32)), training=False)
    ref = np.zeros(shape)
    for ch in range(c):
        ref[:, ch] = gamma[ch] * (x[:, ch] - rm[ch]) / np.sqrt(rv[ch] + 1e-5) + beta[ch]
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(rm, before[0])               # eval leaves them alone
    np.testing.assert_array_equal(rv, before[1])


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradcheck(rng, shape, training, affine):
    c = shape[1]
    x = _t(rng.standard_normal(shape) * 2 + 0.5)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    if affine:
        params = [_t(rng.uniform(0.5, 1.5, c)), _t(rng.standard_normal(c))]
        fn = lambda a, g, b: F.batch_norm(a, rm, rv, g, b, training=training)  # noqa: E731
    else:
        params = []
        fn = lambda a: F.batch_norm(a, rm, rv, training=training)  # noqa: E731
    assert mg.gradcheck(fn, [x, *params])


def test_batch_norm_without_running_stats_in_training(rng):
    x = rng.standard_normal((4, 2))
    y = F.batch_norm(Tensor(x), None, None, training=True).numpy()
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5))


def test_batch_norm_errors():
    x = Tensor(np.zeros((4, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"batch_norm: input has 3 channels \(shape "
                                         r"\(4, 3, 2, 2\)\) but running_mean has shape \(5,\)"):
        F.batch_norm(x, np.zeros(5, np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match=r"batch_norm: input has 3 channels .* weight"):
        F.batch_norm(x, np.zeros(3), np.ones(3), weight=Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"batch_norm: training needs more than 1 value"):
        F.batch_norm(Tensor(np.zeros((1, 3), np.float32)), np.zeros(3), np.ones(3),
                     training=True)
    with pytest.raises(ValueError, match=r"batch_norm: evaluation .* needs running_mean"):
        F.batch_norm(x, None, None, training=False)
