"""Checks that need several real ranks; tests/test_distributed.py starts them:

    mpiexec -n 2 python tests/_distributed_checks.py all 2
    mpiexec -n 3 python tests/_distributed_checks.py buckets 3
    mpiexec -n 2 python tests/_distributed_checks.py raise 2

Every rank runs every check (each check's oracle is a single process on the
whole batch, computed on every rank); a failing check raises, which aborts
all ranks, so mpiexec exits non-zero.  Rank 0 prints ``ok <check>`` per check.
"""
import sys
import time

import numpy as np

import minigrad as mg
import minigrad.distributed as dist
import minigrad.nn as nn
import minigrad.nn.functional as F
from minigrad.data import DataLoader, DistributedSampler
from minigrad.nn.parallel import DistributedDataParallel

STEPS = 4


class SmallNet(nn.Module):
    """conv-BN-ReLU twice, global pool, linear: every kind of parameter and a buffer."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)
        self.probe = None           # a function run on conv1's output (the overlap check)

    def forward(self, x):
        h = self.conv1(x)
        if self.probe is not None:
            h = self.probe(h)
        h = F.relu(self.bn1(h))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.fc(self.pool(h).flatten(1))


def make_net(seed, classes=5):
    mg.manual_seed(seed)
    return SmallNet(classes).double()


def data(n, seed=7):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 8, 8)), rng.integers(0, 5, n)


def sgd(params):
    return mg.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def gather(obj):
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def per_rank_batch():
    return 32 if dist.get_world_size() == 2 else 16


def train_ddp(sync_bn, bucket_cap_mb, seed_base=100):
    """STEPS SGD steps of DistributedDataParallel from differently seeded
    ranks; returns (ddp, the global batches' indices of each step)."""
    net = make_net(seed_base + dist.get_rank())
    if sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ddp = DistributedDataParallel(net, bucket_cap_mb=bucket_cap_mb)
    start = ddp.state_dict()
    b, world = per_rank_batch(), dist.get_world_size()
    images, labels = data(STEPS * b * world)
    sampler = DistributedSampler((images, labels), shuffle=True, seed=3)
    mine = list(sampler)
    opt = sgd(ddp.parameters())
    steps = []
    for t in range(STEPS):
        idx = mine[t * b:(t + 1) * b]
        steps.append([i for share in gather(idx) for i in share])
        loss = F.cross_entropy(ddp(mg.Tensor(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ddp, start, steps


def train_reference(start, steps):
    """One process, plain batch norm, the whole global batch per step."""
    ref = make_net(0)
    ref.load_state_dict(start)
    images, labels = data(STEPS * per_rank_batch() * dist.get_world_size())
    opt = sgd(ref.parameters())
    for idx in steps:
        loss = F.cross_entropy(ref(mg.Tensor(images[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ref.state_dict()


def same_on_every_rank(state):
    for other in gather(state):
        for k in state:
            np.testing.assert_array_equal(other[k], state[k], err_msg=k)


# ---- the checks --------------------------------------------------------------------
def check_collectives():
    rank, world = dist.get_rank(), dist.get_world_size()
    xs = [np.random.default_rng(r).standard_normal(1001) for r in range(world)]
    t = mg.Tensor(xs[rank].copy())
    dist.all_reduce(t)                               # rank-ordered: ((x0 + x1) + x2) ...
    expected = xs[0].copy()
    for x in xs[1:]:
        expected += x
    np.testing.assert_array_equal(t.numpy(), expected)
    t = mg.Tensor(xs[rank].astype(np.float32))
    work = dist.all_reduce(t, dist.ReduceOp.AVG, async_op=True)
    work.wait()
    assert work.is_completed()
    np.testing.assert_allclose(t.numpy(), sum(xs) / world, rtol=1e-5, atol=1e-6)
    ints = mg.Tensor(np.array([rank, -rank, 7], np.int64))
    dist.all_reduce(ints, dist.ReduceOp.MAX)
    assert ints.tolist() == [world - 1, 0, 7]
    ints = mg.Tensor(np.array([rank, -rank], np.int64))
    dist.all_reduce(ints, dist.ReduceOp.MIN)
    assert ints.tolist() == [0, -(world - 1)]
    grid = np.full((4, 6), float(rank))
    view = grid[:, ::2]                              # not contiguous: staged and copied back
    dist.broadcast(view, src=world - 1)
    assert (grid[:, ::2] == world - 1).all() and (grid[:, 1::2] == rank).all()
    out = mg.Tensor(np.zeros((world, 2)))
    dist.all_gather_into_tensor(out, mg.Tensor(np.array([rank, 10.0 * rank])))
    np.testing.assert_array_equal(out.numpy(), [[r, 10.0 * r] for r in range(world)])
    assert gather({"rank": rank}) == [{"rank": r} for r in range(world)]
    objs = [rank, f"from {rank}"]
    dist.broadcast_object_list(objs, src=world - 1)
    assert objs == [world - 1, f"from {world - 1}"]
    dist.barrier()


def check_ddp_matches_one_process():
    ddp, start, steps = train_ddp(sync_bn=True, bucket_cap_mb=25)
    same_on_every_rank(start)                       # differently seeded ranks start as rank 0
    assert all(np.array_equal(a, b) for a, b in zip(start.values(),
                                                    make_net(100).state_dict().values()))
    state = ddp.state_dict()
    same_on_every_rank(state)
    ref = train_reference(start, steps)
    assert list(state) == list(ref)
    for k in ref:                                    # weights, running statistics, counters
        np.testing.assert_allclose(state[k], ref[k], rtol=1e-10, atol=0, err_msg=k)
    return state, start, steps, ref


def check_plain_bn_differs(synced, start, steps, ref):
    ddp, start_plain, _ = train_ddp(sync_bn=False, bucket_cap_mb=25)
    plain = ddp.state_dict()
    for k in start:
        np.testing.assert_array_equal(start_plain[k], start[k])
    assert not np.allclose(plain["bn1.running_mean"], ref["bn1.running_mean"], rtol=1e-6)
    assert not np.allclose(plain["conv1.weight"], ref["conv1.weight"], rtol=1e-6)
    assert not np.allclose(plain["conv1.weight"], synced["conv1.weight"], rtol=1e-6)


def check_bucket_sizes_bit_identical(reference_state=None):
    states = []
    for cap in (25, 0.002, 1e-5):                  # one bucket, a few, one per parameter
        ddp, _, _ = train_ddp(sync_bn=True, bucket_cap_mb=cap)
        states.append(ddp.state_dict())
        if cap == 1e-5:
            assert len(ddp._buckets) == len(list(ddp.parameters()))
    if reference_state is not None:
        states.append(reference_state)
    for other in states[1:]:
        for k in states[0]:
            np.testing.assert_array_equal(other[k], states[0][k], err_msg=k)


def check_overlap():
    """With small buckets, some all-reduces are started before backward has
    reached the first layer."""
    net = nn.SyncBatchNorm.convert_sync_batchnorm(make_net(1))
    ddp = DistributedDataParallel(net, bucket_cap_mb=1e-5)
    seen = []

    class Probe(mg.Function):
        def forward(self, x):
            return x

        def backward(self, g):
            seen.append(ddp._next)                  # buckets started so far
            return g

    net.probe = Probe()
    images, labels = data(8)
    F.cross_entropy(ddp(mg.Tensor(images)), labels).backward()
    assert seen and seen[0] >= 4, seen               # fc (2), bn2 (2), conv2, bn1 (2) are done
    assert not ddp._ready                            # finished: every bucket waited for


def check_mismatched_models():
    classes = 5 if dist.get_rank() == 0 else 4
    try:
        DistributedDataParallel(make_net(0, classes))
    except ValueError as exc:
        msg = str(exc)
    else:
        raise AssertionError("a model of another shape on rank 1 was accepted")
    assert "'fc.weight' has shape (5, 6) on rank 0 but (4, 6) on rank 1" in msg, msg
    assert "differs between ranks" in msg, msg


def check_no_sync_and_unused_parameter():
    rank, world = dist.get_rank(), dist.get_world_size()
    mg.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    ddp = DistributedDataParallel(lin)
    batches = [[np.random.default_rng([r, k]).standard_normal((4, 3)) for k in range(2)]
               for r in range(world)]
    with ddp.no_sync():
        (ddp(mg.Tensor(batches[rank][0])) ** 2).sum().backward()
    mine_after_first = lin.weight.grad.numpy().copy()
    (ddp(mg.Tensor(batches[rank][1])) ** 2).sum().backward()
    # oracle: the rank's own first gradient, then the mean over ranks of both summed
    w, b = lin.weight.numpy(), lin.bias.numpy()

    def grad_w(x):
        return 2 * (x @ w.T + b).T @ x
    np.testing.assert_allclose(mine_after_first, grad_w(batches[rank][0]), rtol=1e-12)
    expected = sum(grad_w(x0) + grad_w(x1) for x0, x1 in batches) / world
    np.testing.assert_allclose(lin.weight.grad.numpy(), expected, rtol=1e-12)

    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.spare = nn.Linear(3, 2)         # never used: its gradient never comes

        def forward(self, x):
            return self.used(x)
    model = WithSpare()
    ddp = DistributedDataParallel(model)
    ddp(mg.Tensor(np.ones((2, 3), np.float32))).sum().backward()
    try:
        ddp(mg.Tensor(np.ones((2, 3), np.float32)))
    except RuntimeError as exc:
        assert "'spare.weight'" in str(exc) and "without a gradient" in str(exc), str(exc)
    else:
        raise AssertionError("a parameter without a gradient went unnoticed")


def check_sampler_shares_and_uneven_data():
    rank, world = dist.get_rank(), dist.get_world_size()
    for n, drop_last in ((48, False), (37, False), (37, True)):
        shares = gather(list(DistributedSampler(list(range(n)), seed=5, drop_last=drop_last)))
        lengths = {len(s) for s in shares}
        assert len(lengths) == 1, shares                       # same length on every rank
        union = [i for s in shares for i in s]
        if drop_last:
            assert len(set(union)) == len(union) == (n // world) * world
        else:
            assert set(union) == set(range(n)) and len(union) == -(-n // world) * world
    # an uneven dataset: every rank takes the same number of DDP steps, none hangs
    images, labels = data(37)
    loader = DataLoader((images.astype(np.float32), labels), batch_size=8, prefetch=0,
                        sampler=DistributedSampler((images, labels), seed=1))
    model = DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(SmallNet()))
    opt = sgd(model.parameters())
    steps = 0
    for x, y in loader:
        loss = F.cross_entropy(model(mg.Tensor(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    per_rank = -(-37 // world)
    assert gather(steps) == [len(loader)] * world == [-(-per_rank // 8)] * world


def main():
    mode, expected_world = sys.argv[1], int(sys.argv[2])
    dist.init_process_group()
    assert dist.get_backend() == "mpi", dist.get_backend()
    assert dist.get_world_size() == expected_world, (
        f"{dist.get_world_size()} rank(s), expected {expected_world}: is this mpiexec from "
        "the MPI that mpi4py uses?")
    rank = dist.get_rank()

    def run(check, *args):
        t0 = time.perf_counter()
        result = check(*args)
        dist.barrier()
        if rank == 0:
            print(f"ok {check.__name__} ({time.perf_counter() - t0:.2f} s)", flush=True)
        return result

    if mode == "raise":
        if rank == 1:
            raise ValueError("rank 1 fails on purpose")
        dist.all_reduce(mg.Tensor(np.ones(3)))       # would wait for rank 1 forever
        return
    if mode == "all":
        run(check_collectives)
        synced, start, steps, ref = run(check_ddp_matches_one_process)
        run(check_plain_bn_differs, synced, start, steps, ref)
        run(check_bucket_sizes_bit_identical, synced)
        run(check_overlap)
        run(check_mismatched_models)
        run(check_no_sync_and_unused_parameter)
        run(check_sampler_shares_and_uneven_data)
    elif mode == "buckets":
        run(check_collectives)
        run(check_bucket_sizes_bit_identical)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
