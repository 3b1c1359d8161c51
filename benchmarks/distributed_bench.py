"""Data-parallel training on one machine, measured; and the scaling estimate.

    python benchmarks/distributed_bench.py                    # ResNet-20 and ResNet-56
    python benchmarks/distributed_bench.py --models resnet20 --rounds 5
    python benchmarks/distributed_bench.py --estimate-only    # no timing, only the estimate

For a global batch of 128 CIFAR-sized images it times one training step
(forward, backward, SGD with momentum) of

* one process with two threads on the 128 images, and
* two processes with one thread each on 64 images each, wrapped in
  DistributedDataParallel: without averaging (``no_sync()``: the compute
  alone), with buckets of several sizes, and with SyncBatchNorm;

and reports the time each step waits at the end of backward for the
averaging (what did not overlap with backward; it includes waiting for the
slower rank), the averaging's share of the step (against ``no_sync``), the
time SyncBatchNorm spends in its collectives, and one all-reduce of the whole
gradient alone.

Everything runs in one ``mpiexec -n 2`` job, and the configurations take
turns, one step each per round, so a change of the machine's load hits them
all alike: for the one-process configuration rank 0 steps alone with two
threads while rank 1 sleeps.  The job is repeated ``--repeats`` times; the
tables give the median of the jobs' medians and their range, with the load
average before and after (the machine may be shared).  Then the estimate of
a ring all-reduce of the gradients of ResNet-20, ResNet-56 and VGG-16 over N
machines.  Everything is printed as Markdown tables.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GLOBAL_BATCH = 128
BUCKETS_MB = (25, 1, 0.25, 0.05)
LINKS_GBIT = (10, 25, 100)
MACHINES = (2, 4, 8, 16, 64)
LATENCY_S = 25e-6        # assumed time per message step on a LAN (TCP: 10-50 µs)
ESTIMATE_BUCKET_MB = 25
SOLO = "1 process × 2 threads, 128 images"
NO_SYNC = "2 processes × 1 thread, 64 images each, no averaging (`no_sync`)"


# ---------------------------------------------------------------------------
# The worker: every rank of the mpiexec job; rank 0 prints one JSON line
# ---------------------------------------------------------------------------
def _model(name):
    import minigrad
    minigrad.manual_seed(0)
    return minigrad.models.create(name)


def _sgd(model):
    import minigrad
    return minigrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def _step(model, opt, x, y, sync=True):
    import minigrad.nn.functional as F
    with (contextlib.nullcontext() if sync else model.no_sync()):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
    opt.step()


def _time_sync_batchnorm_collectives():
    """Make SyncBatchNorm's collectives note their seconds in the returned list."""
    import minigrad.distributed as dist
    from minigrad.nn import sync_batchnorm
    seconds = []

    class Timed:
        def __getattr__(self, name):
            return getattr(dist, name)

        def all_gather_into_tensor(self, *args):
            t0 = time.perf_counter()
            dist.all_gather_into_tensor(*args)
            seconds.append(time.perf_counter() - t0)

        def all_reduce(self, *args, **kwargs):
            t0 = time.perf_counter()
            dist.all_reduce(*args, **kwargs)
            seconds.append(time.perf_counter() - t0)

    sync_batchnorm.dist = Timed()
    return seconds


def _sleeping_barrier():
    """A barrier that sleeps while it waits (so a rank waiting for rank 0's
    solo step leaves both cores to it)."""
    import numpy as np
    import minigrad.distributed as dist
    work = dist.all_reduce(np.zeros(1), async_op=True)
    while not work.is_completed():
        time.sleep(0.0005)


def worker(name, rounds, buckets_mb, sync_bn):
    import numpy as np
    import minigrad
    import minigrad.distributed as dist
    from minigrad import config
    from minigrad.nn.parallel import DistributedDataParallel
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    config.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((GLOBAL_BATCH, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, GLOBAL_BATCH)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    x, y = minigrad.Tensor(images[share]), labels[share]
    in_bn = _time_sync_batchnorm_collectives()

    configs = {}          # label -> a function doing one step; waits at the end of backward
    waits = {}
    solo = _model(name)
    solo_opt = _sgd(solo)

    def solo_step():
        if rank == 0:
            config.set_num_threads(2)
            _step(solo, solo_opt, minigrad.Tensor(images), labels)
            config.set_num_threads(1)
    configs[SOLO] = solo_step

    def add(label, cap, sync=True, sync_bn_layers=False):
        net = _model(name)
        if sync_bn_layers:
            net = minigrad.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp = DistributedDataParallel(net, bucket_cap_mb=cap)
        opt = _sgd(ddp)
        waits[label] = []
        finish = ddp._finish

        def timed_finish():                         # the wait at the end of backward
            t0 = time.perf_counter()
            finish()
            waits[label].append(time.perf_counter() - t0)
        ddp._finish = timed_finish
        configs[label] = lambda: _step(ddp, opt, x, y, sync)
        return ddp

    add(NO_SYNC, 25, sync=False)
    buckets = {f"2 × 1, DDP, bucket {cap:g} MB": len(add(f"2 × 1, DDP, bucket {cap:g} MB",
                                                          cap)._buckets)
               for cap in buckets_mb}
    if sync_bn:
        label = "2 × 1, DDP, SyncBatchNorm, bucket 25 MB"
        buckets[label] = len(add(label, 25, sync_bn_layers=True)._buckets)

    times = {label: [] for label in configs}
    bn_seconds = {label: [] for label in configs}
    bn_calls = 0
    for i in range(rounds + 2):                     # two warm-up rounds
        for label, step in configs.items():
            _sleeping_barrier()
            in_bn.clear()
            t0 = time.perf_counter()
            step()
            if i >= 2:
                times[label].append(time.perf_counter() - t0)
                bn_seconds[label].append(sum(in_bn))
            elif waits.get(label):
                waits[label].pop()
            bn_calls = max(bn_calls, len(in_bn))

    grad = np.zeros(solo.num_parameters(), np.float32)
    alone = []                                      # the whole gradient, nothing around it
    for i in range(rounds + 2):
        _sleeping_barrier()
        t0 = time.perf_counter()
        dist.all_reduce(grad, dist.ReduceOp.AVG)
        if i >= 2:
            alone.append(time.perf_counter() - t0)

    def ms(values):
        return 1e3 * float(np.median(values)) if values else None
    result = {"params": solo.num_parameters(), "allreduce_ms": ms(alone),
              "bn_collectives": bn_calls if sync_bn else 0,
              "configs": {label: {"step_ms": ms(times[label]), "wait_ms": ms(waits.get(label)),
                                  "bn_ms": ms(bn_seconds[label]),
                                  "buckets": buckets.get(label)}
                          for label in configs}}
    if rank == 0:               # the ranks wait for each other every step: rank 0's times
        print(json.dumps(result))
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------
def measure(name, rounds, repeats, buckets, sync_bn):
    """``repeats`` mpiexec jobs; their results and the load average around them."""
    import minigrad.distributed as dist
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="2")
    cmd = dist.mpiexec_command(2, [Path(__file__).resolve(), "--worker", "--models", name,
                                   "--rounds", rounds, "--buckets", buckets]
                               + (["--sync-bn"] if sync_bn else []))
    load_before, jobs = os.getloadavg()[0], []
    for _ in range(repeats):
        out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
        jobs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"model": name, "jobs": jobs, "load": [load_before, os.getloadavg()[0]]}


def _spread(values, fmt="{:.0f}"):
    """'median (min–max)' of the jobs' values."""
    import numpy as np
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt.format(float(np.median(values))) + " (" + fmt.format(min(values)) + "–"
            + fmt.format(max(values)) + ")")


def report_measured(result):
    import numpy as np
    jobs = result["jobs"]
    params = jobs[0]["params"]
    lines = [f"**{result['model']}** ({params:,} parameters, {params * 4 / 2 ** 20:.2f} MiB of "
             f"float32 gradients; load average {result['load'][0]:.2f} before, "
             f"{result['load'][1]:.2f} after)", "",
             "| configuration | buckets | step (ms) | waiting at the end of backward (ms) "
             "| averaging's share of the step |",
             "|---|---|---|---|---|"]
    for label, c in jobs[0]["configs"].items():
        steps = [j["configs"][label]["step_ms"] for j in jobs]
        if label in (SOLO, NO_SYNC):
            share = wait = "–"
        else:
            share = _spread([100 * (j["configs"][label]["step_ms"]
                                    - j["configs"][NO_SYNC]["step_ms"])
                             / j["configs"][label]["step_ms"] for j in jobs], "{:.1f}%")
            wait = _spread([j["configs"][label]["wait_ms"] for j in jobs], "{:.1f}")
        lines.append(f"| {label} | {c['buckets'] or '–'} | {_spread(steps)} | {wait} | "
                     f"{share} |")
    alone = float(np.median([j["allreduce_ms"] for j in jobs]))
    lines += ["", f"One all-reduce (mean) of the whole gradient alone: {alone:.2f} ms."]
    for label in jobs[0]["configs"]:
        if "SyncBatchNorm" in label:
            spent = _spread([j["configs"][label]["bn_ms"] for j in jobs])
            lines.append(f"SyncBatchNorm's {jobs[0]['bn_collectives']} collectives per step took "
                         f"{spent} ms of its step (waiting for the other rank included).")
    return "\n".join(lines + [""])


def ring_allreduce_seconds(nbytes, machines, link_gbit, bucket_mb=ESTIMATE_BUCKET_MB,
                           latency_s=LATENCY_S):
    """Time of a ring all-reduce of ``nbytes`` over ``machines`` on links of
    ``link_gbit`` Gb/s, in buckets of ``bucket_mb`` MiB:

        2(N−1)/N · bytes / bandwidth  +  buckets · 2(N−1) · latency

    (each of the 2(N−1) steps of a bucket's ring sends 1/N of it to the next
    machine: N−1 steps of reduce-scatter, N−1 of all-gather)."""
    n = machines
    buckets = -(-nbytes // int(bucket_mb * 2 ** 20))
    bandwidth = link_gbit * 1e9 / 8                        # bytes per second
    return 2 * (n - 1) / n * nbytes / bandwidth + buckets * 2 * (n - 1) * latency_s


def report_estimate(compute_ms=None):
    """The estimate for the gradients of ResNet-20, ResNet-56 and VGG-16."""
    import minigrad
    compute_ms = compute_ms or {}
    lines = [f"Ring all-reduce of the float32 gradients, {ESTIMATE_BUCKET_MB} MiB buckets, "
             f"latency {LATENCY_S * 1e6:.0f} µs per message step (assumed): "
             "2(N−1)/N · bytes / bandwidth + buckets · 2(N−1) · latency, in ms per step.", "",
             "| model | parameters | gradient | buckets | link | "
             + " | ".join(f"N = {n}" for n in MACHINES) + " |",
             "|---|---|---|---|---|" + "---|" * len(MACHINES)]
    for name, label in (("resnet20", "ResNet-20"), ("resnet56", "ResNet-56"),
                        ("vgg16", "VGG-16 (ImageNet)")):
        params = minigrad.models.create(name).num_parameters()
        nbytes = 4 * params
        buckets = -(-nbytes // (ESTIMATE_BUCKET_MB * 2 ** 20))
        for link in LINKS_GBIT:
            cells = [1e3 * ring_allreduce_seconds(nbytes, n, link) for n in MACHINES]
            lines.append(f"| {label} | {params:,} | {nbytes / 2 ** 20:.1f} MiB | {buckets} | "
                         f"{link} Gb/s | " + " | ".join(f"{c:.2f}" if c < 10 else f"{c:.0f}"
                                                       for c in cells) + " |")
    if compute_ms:
        lines += ["", "Measured here for comparison, one process × 2 threads, batch 128: "
                  + ", ".join(f"{k} {v:.0f} ms per step" for k, v in compute_ms.items()) + "."]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet20,resnet56",
                   help="comma-separated model names (default: resnet20,resnet56)")
    p.add_argument("--rounds", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--repeats", type=int, default=3, help="mpiexec jobs per model (default 3)")
    p.add_argument("--buckets", default=",".join(f"{b:g}" for b in BUCKETS_MB),
                   help="bucket sizes in MiB (default: 25,1,0.25,0.05)")
    p.add_argument("--no-sync-bn", action="store_true", help="leave out the SyncBatchNorm row")
    p.add_argument("--estimate-only", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if args.worker:
        return worker(models[0], args.rounds, [float(b) for b in args.buckets.split(",")],
                      args.sync_bn)
    if args.estimate_only:
        print(report_estimate())
        return None
    import minigrad.distributed as dist
    if dist.find_mpiexec() is None:
        sys.exit("error: no mpiexec found; pip install -e \".[distributed]\"")
    results = []
    for name in models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results.append(measure(name, args.rounds, args.repeats, args.buckets,
                               sync_bn=not args.no_sync_bn))
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"{os.cpu_count()} cores ({cpu}); {args.rounds} timed steps per configuration "
          f"and job, {args.repeats} jobs: median of the jobs' medians (range).\n")
    for r in results:
        print(report_measured(r))
    import numpy as np
    print(report_estimate({r["model"]: float(np.median([j["configs"][SOLO]["step_ms"]
                                                         for j in r["jobs"]]))
                           for r in results}))
    return None


if __name__ == "__main__":
    main()
