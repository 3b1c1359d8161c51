"""minigrad.distributed, DistributedDataParallel, SyncBatchNorm, DistributedSampler.

The checks that need several ranks live in tests/_distributed_checks.py and
run here under ``mpiexec`` in a subprocess with a timeout (a dead rank cannot
hang the suite); they skip where mpi4py or mpiexec is missing.  The rest runs
in this process, in a group of one.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigrad as mg
import minigrad.distributed as dist
import minigrad.nn as nn
import minigrad.nn.functional as F
from minigrad import backend
from minigrad.data import DataLoader, DistributedSampler
from minigrad.distributed.process_group import _LAUNCHER_VARIABLES
from minigrad.nn.parallel import DistributedDataParallel
from minigrad.nn.sync_batchnorm import SyncBatchNormFunction

from _mpi_launch import launch

REPO = Path(__file__).resolve().parents[1]
CHECKS = REPO / "tests" / "_distributed_checks.py"


@pytest.fixture
def group_of_one(monkeypatch):
    """An initialized group of this one process (no launcher in the environment)."""
    for name in _LAUNCHER_VARIABLES + ("MINIGRAD_DIST_BACKEND",):
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group()
    yield
    dist.destroy_process_group()


# ---- the group of one process ----------------------------------------------------------
def test_group_of_one_needs_no_mpi_and_leaves_values_alone(monkeypatch):
    for name in _LAUNCHER_VARIABLES + ("MINIGRAD_DIST_BACKEND",):
        monkeypatch.delenv(name, raising=False)
    had_mpi4py = "mpi4py" in sys.modules
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="init_process_group"):
        dist.get_rank()
    dist.init_process_group()
    try:
        if not had_mpi4py:
            assert "mpi4py" not in sys.modules                 # a group of one needs no MPI
        assert (dist.get_backend(), dist.get_rank(), dist.get_world_size(),
                dist.get_local_rank()) == ("single", 0, 1, 0)
        with pytest.raises(RuntimeError, match="already initialized"):
            dist.init_process_group()
        t = mg.Tensor(np.array([1.5, -2.0]))
        for op in dist.ReduceOp:
            dist.all_reduce(t, op)
        assert dist.all_reduce(t, async_op=True).is_completed()
        dist.broadcast(t, src=0)
        np.testing.assert_array_equal(t.numpy(), [1.5, -2.0])
        out = mg.Tensor(np.zeros((1, 2)))
        dist.all_gather_into_tensor(out, t)
        square = np.arange(4.0).reshape(2, 2)
        strided = np.zeros((2, 4))[:, :2]                   # a view that cannot be flattened
        dist.all_gather_into_tensor(strided, square)
        np.testing.assert_array_equal(strided, square)
        parts = [mg.Tensor(np.zeros(2))]
        dist.all_gather(parts, t)
        objs = [None]
        dist.all_gather_object(objs, {"a": 1})
        listed = [1, "two"]
        dist.broadcast_object_list(listed, src=0)
        dist.barrier()
        np.testing.assert_array_equal(out.numpy(), [[1.5, -2.0]])
        np.testing.assert_array_equal(parts[0].numpy(), [1.5, -2.0])
        assert objs == [{"a": 1}] and listed == [1, "two"]
        with pytest.raises(SystemExit) as stopped:
            dist.abort(3)
        assert stopped.value.code == 3
    finally:
        dist.destroy_process_group()
    assert not dist.is_initialized()


def test_bad_arguments_give_clear_errors(group_of_one):
    with pytest.raises(TypeError, match="AVG needs a floating-point"):
        dist.all_reduce(mg.Tensor(np.array([1, 2])), dist.ReduceOp.AVG)
    with pytest.raises(TypeError, match="ReduceOp"):
        dist.all_reduce(mg.Tensor(np.ones(2)), "sum")
    with pytest.raises(TypeError, match="expected a Tensor"):
        dist.all_reduce([1.0, 2.0])
    with pytest.raises(ValueError, match="src must be a rank in 0..0"):
        dist.broadcast(mg.Tensor(np.ones(2)), src=1)
    with pytest.raises(ValueError, match="output must hold 1 x 2"):
        dist.all_gather_into_tensor(mg.Tensor(np.zeros(3)), mg.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match="one entry per rank"):
        dist.all_gather_object([None, None], 1)
    with pytest.raises(ValueError, match="src must be a rank in 0..0"):
        dist.broadcast_object_list([None], src=1)


def test_under_mpiexec_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)          # import mpi4py fails
    monkeypatch.setenv("PMI_SIZE", "2")                       # as if started by mpiexec
    with pytest.raises(RuntimeError, match=r"pip install \"minigrad\[distributed\]\""):
        dist.init_process_group()
    assert not dist.is_initialized()


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group("gloo")
    assert not dist.is_initialized()


def test_find_mpiexec_prefers_the_one_beside_python(tmp_path, monkeypatch):
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert dist.find_mpiexec() == str(fake)
    assert dist.mpiexec_command(3, ["x.py", 1]) == [str(fake), "-n", "3",
                                                     str(tmp_path / "python"), "x.py", "1"]


# ---- DistributedSampler ------------------------------------------------------------------
def pytorch_rule(order, replicas, rank, drop_last):
    """PyTorch's DistributedSampler on a given order: pad by repeating the
    order's beginning (or drop the tail), then take every replicas-th index."""
    n = len(order)
    if drop_last:
        total = n // replicas * replicas
        order = order[:total]
    else:
        total = -(-n // replicas) * replicas
        while len(order) < total:
            order = order + order[:total - len(order)]
    return order[rank:total:replicas]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), replicas=st.integers(1, 5), drop_last=st.booleans(),
       shuffle=st.booleans())
def test_sampler_follows_pytorchs_rule_and_shares_cover_the_data(n, replicas, drop_last, shuffle):
    samplers = [DistributedSampler(list(range(n)), replicas, r, shuffle=shuffle, seed=4,
                                   drop_last=drop_last) for r in range(replicas)]
    shares = [list(s) for s in samplers]
    order = (np.random.default_rng([4, 0]).permutation(n).tolist() if shuffle
             else list(range(n)))
    for r, share in enumerate(shares):
        assert share == pytorch_rule(order, replicas, r, drop_last)
        assert len(share) == len(samplers[r])
    assert len({len(s) for s in shares}) == 1                     # same number on every rank
    union = [i for s in shares for i in s]
    if drop_last:
        assert len(set(union)) == len(union)                       # disjoint
    else:
        assert set(union) == set(range(n))                         # covers everything


def test_sampler_matches_pytorch_without_shuffling():
    torch_data = pytest.importorskip("torch.utils.data")
    for n, replicas, drop_last in ((10, 3, False), (10, 3, True), (2, 5, False), (12, 4, True)):
        for r in range(replicas):
            theirs = torch_data.DistributedSampler(range(n), num_replicas=replicas, rank=r,
                                                   shuffle=False, drop_last=drop_last)
            ours = DistributedSampler(list(range(n)), replicas, r, shuffle=False,
                                      drop_last=drop_last)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


def test_sampler_set_epoch_reorders_the_same_way_on_every_rank():
    a0, a1 = (DistributedSampler(list(range(50)), 2, r, seed=9) for r in range(2))
    first = list(a0), list(a1)
    a0.set_epoch(1)
    a1.set_epoch(1)
    second = list(a0), list(a1)
    assert first != second and sorted(first[0] + first[1]) == sorted(second[0] + second[1])
    b0 = DistributedSampler(list(range(50)), 2, 0, seed=9)
    b0.set_epoch(1)
    assert list(b0) == second[0]                     # a function of (seed, epoch) alone


def test_sampler_arguments_are_checked(group_of_one):
    s = DistributedSampler((np.zeros((7, 1, 2, 2)), np.zeros(7)))   # a pair: 7 samples
    assert (s.num_replicas, s.rank, s.dataset_size, len(s)) == (1, 0, 7, 7)
    with pytest.raises(ValueError, match=r"rank must be in 0..1"):
        DistributedSampler(list(range(4)), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas"):
        DistributedSampler(list(range(4)), num_replicas=0, rank=0)


def test_sampler_needs_the_group_or_explicit_ranks():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(list(range(4)))


def test_data_loader_takes_its_order_from_the_sampler():
    images = np.arange(11, dtype=np.float32).reshape(11, 1, 1, 1)
    labels = np.arange(11)
    sampler = DistributedSampler((images, labels), num_replicas=2, rank=1, seed=2)
    loader = DataLoader((images, labels), batch_size=4, sampler=sampler, prefetch=0, seed=0)
    assert len(loader) == 2 and loader.num_samples == 6
    for epoch in range(2):
        sampler.set_epoch(epoch)
        expected = list(sampler)
        got = [int(i) for _, y in loader for i in y]
        assert got == expected                      # the loader set the sampler's epoch
    assert loader.epoch == 2
    resumed = DataLoader((images, labels), batch_size=4, prefetch=1, seed=0,
                         sampler=DistributedSampler((images, labels), 2, 1, seed=2))
    resumed.load_state_dict({"seed": 0, "epoch": 1, "batch": 1})
    assert [int(i) for _, y in resumed for i in y] == expected[4:]
    with pytest.raises(ValueError, match="not both"):
        DataLoader((images, labels), shuffle=True, sampler=sampler)


# ---- DistributedDataParallel in a group of one -------------------------------------------
def test_ddp_needs_the_process_group():
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedDataParallel(nn.Linear(2, 2))


def test_ddp_with_one_rank_only_wraps(group_of_one):
    mg.manual_seed(0)
    net = mg.models.create("resnet20").double()
    plain = mg.models.create("resnet20").double()
    plain.load_state_dict(net.state_dict())
    ddp = DistributedDataParallel(net, bucket_cap_mb=0.01)
    assert ddp.module is net and list(ddp.state_dict()) == list(net.state_dict())
    x = mg.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)))
    for model in (ddp, plain):
        F.cross_entropy(model(x), np.array([1, 7])).backward()
    for (name, p), q in zip(net.named_parameters(), plain.parameters()):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=name)
    ddp.load_state_dict(plain.state_dict())
    with pytest.raises(TypeError, match="minigrad Module"):
        DistributedDataParallel(lambda x: x)
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        DistributedDataParallel(net, bucket_cap_mb=0)


# ---- SyncBatchNorm in a group of one -----------------------------------------------------
def test_sync_batchnorm_function_gradients(group_of_one):
    rng = np.random.default_rng(1)
    x = mg.Tensor(rng.standard_normal((3, 2, 2, 3)), requires_grad=True)
    w = mg.Tensor(rng.uniform(0.5, 1.5, 2), requires_grad=True)
    b = mg.Tensor(rng.standard_normal(2), requires_grad=True)
    mean, var = np.zeros(2), np.ones(2)
    mg.gradcheck(lambda x, w, b: SyncBatchNormFunction(None, None, 0.1, 1e-5, True, True)(
        x, w, b), (x, w, b))
    y = SyncBatchNormFunction(mean, var, 0.25, 1e-5, True, True)(x, w, b)
    ref = F.batch_norm(x, np.zeros(2), np.ones(2), w, b, training=True, momentum=0.25)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    a = x.numpy()
    np.testing.assert_allclose(mean, 0.25 * a.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(var, 0.75 + 0.25 * a.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)


def test_convert_sync_batchnorm_shares_parameters_and_keeps_state(group_of_one):
    net = mg.models.create("resnet20")
    net.eval()
    before = net.state_dict()
    bn_params = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d)
                 for p in m.parameters()}
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert converted is net
    kinds = {type(m).__name__ for m in net.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert {id(p) for m in net.modules() if isinstance(m, nn.SyncBatchNorm)
            for p in m.parameters()} == bn_params
    assert all(not m.training for m in net.modules())
    after = net.state_dict()
    assert list(after) == list(before)
    assert all(np.array_equal(after[k], before[k]) for k in before)
    single = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(3, momentum=None))
    assert isinstance(single, nn.SyncBatchNorm) and single.momentum is None


def test_sync_batchnorm_alone_is_batchnorm(group_of_one):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 5, 5))
    bn, sync = nn.BatchNorm2d(3).double(), nn.SyncBatchNorm(3).double()
    for _ in range(2):
        ys = [m(mg.Tensor(x)) for m in (bn, sync)]
        np.testing.assert_array_equal(ys[0].numpy(), ys[1].numpy())
    np.testing.assert_array_equal(bn.running_var.numpy(), sync.running_var.numpy())
    with pytest.raises(ValueError, match=r"SyncBatchNorm.*expected input \(N, 3, ...\)"):
        sync(mg.Tensor(np.zeros((2, 4, 3))))


# ---- several ranks, under mpiexec -------------------------------------------------------------
def run_ranks(n, mode, timeout, **extra_env):
    """Run tests/_distributed_checks.py as ``n`` ranks; (returncode, output, seconds)."""
    return launch(n, [CHECKS, mode, n], timeout, **extra_env)


def test_two_ranks_train_like_one_process_on_the_whole_batch():
    """2 ranks × 32 images = 1 process × 64 images after 4 SGD steps with
    momentum and weight decay (float64, rtol 1e-10, SyncBatchNorm, running
    statistics too); plain BN differs; bucket sizes give identical bits;
    differently seeded ranks are identical after construction; the sampler's
    shares; an uneven dataset; mismatched models; no_sync; an unused parameter;
    buckets start before backward is over."""
    rc, out, _ = run_ranks(2, "all", timeout=240)
    assert rc == 0, out
    for check in ("collectives", "ddp_matches_one_process", "plain_bn_differs",
                  "bucket_sizes_bit_identical", "overlap", "mismatched_models",
                  "no_sync_and_unused_parameter", "sampler_shares_and_uneven_data"):
        assert f"ok check_{check}" in out, out


def test_three_ranks_sum_in_rank_order_whatever_the_bucket_size():
    """With three ranks a sum's bits depend on the order of the additions.  MPICH
    is told to use its ring all-reduce, which adds in an order that depends on
    the message size (a plain all-reduce then fails both checks); minigrad's
    sums must still come out in rank order, whatever the buckets."""
    rc, out, _ = run_ranks(3, "buckets", timeout=240, MPIR_CVAR_DEVICE_COLLECTIVES="none",
                           MPIR_CVAR_IALLREDUCE_INTRA_ALGORITHM="tsp_ring")
    assert rc == 0, out
    assert "ok check_collectives" in out and "ok check_bucket_sizes_bit_identical" in out, out


def test_a_rank_that_raises_ends_every_rank():
    rc, out, seconds = run_ranks(2, "raise", timeout=60)
    assert rc != 0, out
    assert seconds < 30, f"took {seconds:.1f} s"
    assert "rank 1 fails on purpose" in out and "aborting all ranks" in out, out


# ---- NCCL, on a GPU ---------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not backend.cuda_available(), reason="needs CuPy and a CUDA GPU")
def test_nccl_backend_on_one_gpu(monkeypatch):
    nccl = pytest.importorskip("cupy.cuda.nccl", reason="CuPy without NCCL")
    if not getattr(nccl, "available", True):
        pytest.skip("CuPy was built without NCCL")
    import cupy as cp
    for name in _LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    dist.init_process_group("nccl")
    try:
        assert (dist.get_backend(), dist.get_world_size(), dist.get_rank()) == ("nccl", 1, 0)
        a = cp.arange(6, dtype=cp.float32).reshape(2, 3)
        for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX):
            dist.all_reduce(mg.Tensor(a), op)
        work = dist.all_reduce(mg.Tensor(a[:, ::2]), async_op=True)   # not contiguous
        work.wait()
        assert work.is_completed()
        np.testing.assert_array_equal(cp.asnumpy(a), np.arange(6).reshape(2, 3))
        dist.broadcast(mg.Tensor(a), src=0)
        out = cp.zeros((1, 2, 3), cp.float32)
        dist.all_gather_into_tensor(out, a)
        np.testing.assert_array_equal(cp.asnumpy(out[0]), cp.asnumpy(a))
        host = mg.Tensor(np.ones(3))                   # NumPy arrays take the host group
        dist.all_reduce(host)
        np.testing.assert_array_equal(host.numpy(), 1.0)
        dist.barrier()
        # the synchronized batch norm on the GPU, through NCCL
        rng = np.random.default_rng(0)
        x = mg.Tensor(rng.standard_normal((4, 3, 5, 5)), requires_grad=True).to("cuda")
        w = mg.Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
        b = mg.Tensor(rng.standard_normal(3), requires_grad=True)
        wg, bg = w.to("cuda"), b.to("cuda")
        y = SyncBatchNormFunction(None, None, 0.1, 1e-5, True, True)(x, wg, bg)
        ref = F.batch_norm(x.detach(), None, None, wg.detach(), bg.detach(), training=True)
        np.testing.assert_allclose(cp.asnumpy(y.data), cp.asnumpy(ref.data), rtol=1e-10)
        (y * y).sum().backward()
        assert w.grad is not None and b.grad is not None
    finally:
        dist.destroy_process_group()


def test_ring_allreduce_estimate_of_the_docs():
    from benchmarks.distributed_bench import ring_allreduce_seconds
    # 2 machines, 1 GB at 8 Gb/s: each sends and receives half of it twice: 1 s
    assert ring_allreduce_seconds(10 ** 9, 2, 8, bucket_mb=1024, latency_s=0) == pytest.approx(1.0)
    # 3 machines, 1 MiB in one bucket: 4/3 MiB over 100 Gb/s plus 4 steps of 1 ms
    assert ring_allreduce_seconds(2 ** 20, 3, 100, latency_s=1e-3) == pytest.approx(
        4 / 3 * 2 ** 20 / 12.5e9 + 4e-3)
    # 60 MiB in 25 MiB buckets: 3 buckets of latency
    assert ring_allreduce_seconds(60 * 2 ** 20, 2, 1e9, latency_s=1.0) == pytest.approx(6.0, 1e-3)


def test_share_cores_gives_each_rank_its_share_of_threads():
    from threadpoolctl import threadpool_info
    from minigrad import config
    before = config.get_num_threads()
    limiter = dist.share_cores(10 ** 6)            # more ranks than cores: one thread each
    try:
        assert config.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info()
                   if pool["user_api"] == "blas")
    finally:
        limiter.restore_original_limits()
        config.set_num_threads(before)
