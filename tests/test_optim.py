"""SGD against hand-written NumPy updates (and torch.optim when available);
learning-rate schedules against hand-computed values; resuming from state_dict."""
import math

import numpy as np
import pytest

from minigrad import Tensor
from minigrad.optim import SGD, lr_scheduler as S
from minigrad.serialization import load_npz, save_npz

try:
    import torch
except Exception:  # torch is optional
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch not importable")


def _grads(steps, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _run_minigrad(init, grads, **kw):
    params = [Tensor(a.copy(), requires_grad=True) for a in init]
    opt = SGD(params, **kw)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = Tensor(g.copy())
        opt.step()
    return [p.numpy() for p in params]


def _run_numpy(init, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """PyTorch's documented SGD algorithm, written out."""
    params = [a.copy() for a in init]
    bufs = [None] * len(params)
    for step in grads:
        for i, g in enumerate(step):
            d = g + weight_decay * params[i]
            if momentum:
                if bufs[i] is None:
                    bufs[i] = d.copy()
                else:
                    bufs[i] = momentum * bufs[i] + (1 - dampening) * d
                d = d + momentum * bufs[i] if nesterov else bufs[i]
            params[i] = params[i] - lr * d
    return params


CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=1e-2),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_numpy_reference(cfg):
    shapes = [(3, 4), (4,)]
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(6, shapes)
    got = _run_minigrad(init, grads, **cfg)
    want = _run_numpy(init, grads, **cfg)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_torch(cfg):
    shapes = [(3, 4), (4,)]
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(6, shapes, seed=3)
    got = _run_minigrad(init, grads, **cfg)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    topt = torch.optim.SGD(tparams, **cfg)
    for step in grads:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g)
        topt.step()
    for g, t in zip(got, tparams):
        np.testing.assert_allclose(g, t.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_sgd_never_modifies_gradients_and_keeps_param_arrays():
    shared = np.ones(3)
    a, b = Tensor(np.zeros(3), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
    a_array = a.data
    a.grad = b.grad = Tensor(shared)              # one gradient array for two parameters
    opt = SGD([a, b], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()
    opt.step()
    np.testing.assert_array_equal(shared, np.ones(3))
    assert a.data is a_array                      # updated in place
    np.testing.assert_allclose(a.numpy(), b.numpy())
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_sgd_param_groups_and_errors():
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = b.grad = Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(a.numpy(), [0.9, 0.9])
    np.testing.assert_allclose(b.numpy(), [0.0, 0.0])
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        SGD([a], lr=-1)
    with pytest.raises(ValueError, match="more than one group"):
        SGD([a, a], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        SGD([a])


def test_sgd_state_dict_resume_gives_identical_updates(tmp_path):
    shapes = [(2, 3), (3,)]
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(8, shapes, seed=5)
    cfg = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    full = _run_minigrad(init, grads, **cfg)

    params = [Tensor(a.copy(), requires_grad=True) for a in init]
    opt = SGD(params, **cfg)
    sched = S.StepLR(opt, step_size=3, gamma=0.5)
    for step in grads[:4]:
        for p, g in zip(params, step):
            p.grad = Tensor(g.copy())
        opt.step()
    save_npz({"params": [p.numpy() for p in params], "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict()}, tmp_path / "ckpt.npz")

    ckpt = load_npz(tmp_path / "ckpt.npz")
    params2 = [Tensor(np.array(a), requires_grad=True) for a in ckpt["params"]]
    opt2 = SGD(params2, lr=123.0)
    sched2 = S.StepLR(opt2, step_size=3, gamma=0.5)
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    assert opt2.param_groups[0]["momentum"] == 0.9 and opt2.param_groups[0]["lr"] == 0.1
    for step in grads[4:]:
        for p, g in zip(params2, step):
            p.grad = Tensor(g.copy())
        opt2.step()
    for got, want in zip(params2, full):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-13)
    assert sched2.last_epoch == sched.last_epoch and sched2.base_lrs == sched.base_lrs


def test_optimizer_load_state_dict_refuses_mismatch():
    a = Tensor(np.ones(2), requires_grad=True)
    opt = SGD([a], lr=0.1, momentum=0.9)
    a.grad = Tensor(np.ones(2))
    opt.step()
    sd = opt.state_dict()
    b = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="shape"):
        SGD([b], lr=0.1, momentum=0.9).load_state_dict(sd)
    with pytest.raises(ValueError, match="parameters"):
        SGD([a, b], lr=0.1).load_state_dict(sd)


# ---- learning-rate schedules -----------------------------------------------------------
def _opt(lr=1.0, groups=1):
    ps = [Tensor(np.zeros(1), requires_grad=True) for _ in range(groups)]
    return SGD([{"params": [p]} for p in ps], lr=lr)


def _lrs(sched, n, metrics=None):
    """lr in effect at steps 0..n-1 (read before each step)."""
    out = []
    for i in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
    return out


def _torch_lrs(make, n, lr=1.0, metrics=None):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(torch.optim.lr_scheduler, opt)
    out = []
    for i in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[i])
    return out


PLATEAU_METRICS = [0.5, 0.6, 0.6, 0.6, 0.6, 0.61, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]

SCHEDULES = {
    "StepLR": (lambda m, o: m.StepLR(o, step_size=3, gamma=0.1),
               [1, 1, 1, .1, .1, .1, .01, .01, .01, .001], None),
    "MultiStepLR": (lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 7], gamma=0.5),
                    [1, 1, .5, .5, .5, .125, .125, .0625, .0625, .0625], None),
    "ConstantLR": (lambda m, o: m.ConstantLR(o, factor=0.25, total_iters=3),
                   [.25, .25, .25, 1, 1, 1], None),
    "LinearLR": (lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=4),
                 [.2, .4, .6, .8, 1, 1, 1], None),
    "CosineAnnealingLR": (lambda m, o: m.CosineAnnealingLR(o, T_max=6, eta_min=0.1),
                          [0.1 + 0.9 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(7)],
                          None),
    "LambdaLR": (lambda m, o: m.LambdaLR(o, lambda e: 0.9 ** e),
                 [0.9 ** e for e in range(6)], None),
    "SequentialLR": (lambda m, o: m.SequentialLR(o, [m.LinearLR(o, start_factor=0.5, total_iters=2),
                                                     m.StepLR(o, step_size=2, gamma=0.1)],
                                                 milestones=[3]),
                     [.5, .75, 1, 1, 1, .1, .1, .01], None),
    "ReduceLROnPlateau": (lambda m, o: m.ReduceLROnPlateau(o, mode="max", factor=0.1, patience=2,
                                                           cooldown=1),
                          # best 0.6 at step 1; bad steps 2, 3, 4 -> reduce after step 4;
                          # 0.61 > 0.6·(1 + 1e-4) improves at step 5 (cooldown step); bad
                          # steps 6, 7, 8 -> reduce; 0.7 improves at 10; bad 11-13 -> reduce
                          [1, 1, 1, 1, 1, .1, .1, .1, .1, .01, .01, .01, .01, .01, .001, .001],
                          PLATEAU_METRICS),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_hand_computed(name):
    make, want, metrics = SCHEDULES[name]
    sched = make(S, _opt())
    got = _lrs(sched, len(want), metrics)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@needs_torch
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_matches_torch(name):
    make, want, metrics = SCHEDULES[name]
    n = len(want) + 5
    if metrics is not None:
        metrics = metrics + [0.5] * 5
    got = _lrs(make(S, _opt()), n, metrics)
    ref = _torch_lrs(make, n, metrics=metrics)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


def _resnet110_expected(it):
    if it < 400:
        return 0.01
    if it < 32000:
        return 0.1
    if it < 48000:
        return 0.01
    return 0.001


@pytest.mark.parametrize("form", ["chained", "sequential"])
def test_resnet110_warmup_schedule(form):
    opt = _opt(lr=0.1)
    if form == "chained":
        sched = S.ChainedScheduler([S.ConstantLR(opt, factor=0.1, total_iters=400),
                                    S.MultiStepLR(opt, milestones=[32000, 48000], gamma=0.1)])
    else:
        sched = S.SequentialLR(opt, [S.ConstantLR(opt, factor=0.1, total_iters=400),
                                     S.MultiStepLR(opt, milestones=[31600, 47600], gamma=0.1)],
                               milestones=[400])
    checkpoints = {0, 1, 399, 400, 401, 31999, 32000, 32001, 47999, 48000, 48001, 63999}
    for it in range(64000):
        if it in checkpoints:
            assert opt.param_groups[0]["lr"] == pytest.approx(_resnet110_expected(it), rel=1e-9), it
        sched.step()


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_scheduler_state_dict_resume(name, tmp_path):
    make, want, metrics = SCHEDULES[name]
    n, k = len(want), len(want) // 2
    opt = _opt(lr=1.0, groups=2)
    sched = make(S, opt)
    _lrs(sched, k, metrics)
    save_npz({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp_path / "s.npz")
    rest = _lrs(sched, n - k, None if metrics is None else metrics[k:])

    ckpt = load_npz(tmp_path / "s.npz")
    opt2 = _opt(lr=1.0, groups=2)
    sched2 = make(S, opt2)
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    rest2 = _lrs(sched2, n - k, None if metrics is None else metrics[k:])
    assert rest2 == rest
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
