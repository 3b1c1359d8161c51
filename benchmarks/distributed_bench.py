"""Data-parallel training on one machine, measured; and the scaling estimate.

    python benchmarks/distributed_bench.py                    # ResNet-20 and ResNet-56
    python benchmarks/distributed_bench.py --models resnet20 --rounds 5
    python benchmarks/distributed_bench.py --estimate-only    # no timing, only the estimate

For a global batch of 128 CIFAR-sized images it times one training step
(forward, backward, SGD with momentum) of

* one process with two threads on the 128 images, and
* two processes (``mpiexec -n 2``) with one thread each on 64 images each,
  wrapped in DistributedDataParallel: without averaging (``no_sync()``, the
  compute alone), with buckets of several sizes, and with SyncBatchNorm;

the time each step waits at the end of backward for the averaging to finish
(what did not overlap with backward), the averaging's share of the step, and
one all-reduce of the whole gradient alone.  The configurations take turns,
one step each per round, and the one-process and two-process runs take turns
``--repeats`` times; the tables give the median over the repeats of each
run's median (and the range).  The machine may be shared: the load average
before and after is printed.  Then the estimate of a ring all-reduce of the
gradients of ResNet-20, ResNet-56 and VGG-16 over N machines.  Everything is
printed as Markdown tables.
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


# ---------------------------------------------------------------------------
# Workers: run in their own processes, print one JSON line
# ---------------------------------------------------------------------------
def _batch(n, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32), rng.integers(0, 10, n)


def _model(name, seed=0):
    import minigrad
    minigrad.manual_seed(seed)
    return minigrad.models.create(name)


def _step(model, opt, x, y, sync=True):
    import minigrad.nn.functional as F
    with (contextlib.nullcontext() if sync else model.no_sync()):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
    opt.step()


def _sgd(model):
    import minigrad
    return minigrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)


def worker_one(name, rounds):
    """One process, all its threads, the whole batch."""
    import numpy as np
    import minigrad
    model = _model(name)
    opt = _sgd(model)
    x, y = _batch(GLOBAL_BATCH)
    x = minigrad.Tensor(x)
    times = []
    for i in range(rounds + 2):
        t0 = time.perf_counter()
        _step(model, opt, x, y)
        if i >= 2:                                  # two warm-up steps
            times.append(time.perf_counter() - t0)
    print(json.dumps({"step_ms": 1e3 * float(np.median(times)),
                      "params": model.num_parameters()}))


def worker_ddp(name, rounds, buckets_mb, sync_bn):
    """Two ranks (or more), one thread each, the batch split between them."""
    import numpy as np
    import minigrad
    import minigrad.distributed as dist
    from minigrad.nn.parallel import DistributedDataParallel
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = _batch(GLOBAL_BATCH)
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    x, y = minigrad.Tensor(x[share]), y[share]

    configs = {}          # label -> (model, optimizer, sync?, seconds waited per step)

    def add(label, cap, sync=True, sync_bn_layers=False):
        net = _model(name)
        if sync_bn_layers:
            net = minigrad.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ddp = DistributedDataParallel(net, bucket_cap_mb=cap)
        waits = []
        finish = ddp._finish

        def timed_finish():                         # the wait at the end of backward
            t0 = time.perf_counter()
            finish()
            waits.append(time.perf_counter() - t0)
        ddp._finish = timed_finish
        configs[label] = (ddp, _sgd(ddp), sync, waits, len(ddp._buckets))

    add("no_sync", 25, sync=False)
    for cap in buckets_mb:
        add(f"bucket {cap:g} MB", cap)
    if sync_bn:
        add("SyncBatchNorm, bucket 25 MB", 25, sync_bn_layers=True)

    times = {label: [] for label in configs}
    for i in range(rounds + 2):
        for label, (ddp, opt, sync, waits, _) in configs.items():
            dist.barrier()
            t0 = time.perf_counter()
            _step(ddp, opt, x, y, sync)
            if i >= 2:
                times[label].append(time.perf_counter() - t0)
            elif waits:
                waits.pop()                         # warm-up steps do not count

    # one all-reduce of the whole gradient, alone (no computation around it)
    grad = np.zeros(configs["no_sync"][0].module.num_parameters(), np.float32)
    alone = []
    for i in range(rounds + 2):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(grad, dist.ReduceOp.AVG)
        if i >= 2:
            alone.append(time.perf_counter() - t0)

    result = {"allreduce_ms": 1e3 * float(np.median(alone)), "world": world, "configs": {}}
    for label, (ddp, opt, sync, waits, buckets) in configs.items():
        result["configs"][label] = {
            "step_ms": 1e3 * float(np.median(times[label])),
            "wait_ms": 1e3 * float(np.median(waits)) if waits else 0.0,
            "buckets": buckets}
    if rank == 0:               # the ranks wait for each other every step: rank 0's times
        print(json.dumps(result))
    dist.destroy_process_group()


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------
def _run(cmd, threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name, rounds, repeats, buckets, sync_bn):
    """``repeats`` turns of (one process, two processes); their results."""
    import minigrad.distributed as dist
    here = Path(__file__).resolve()
    load_before = os.getloadavg()[0]
    ones, ddps = [], []
    for _ in range(repeats):
        ones.append(_run([sys.executable, here, "--worker", "one", "--models", name,
                          "--rounds", str(rounds)], threads=2))
        ddps.append(_run(dist.mpiexec_command(2, [here, "--worker", "ddp", "--models", name,
                                                  "--rounds", rounds, "--buckets", buckets]
                                              + (["--sync-bn"] if sync_bn else [])),
                         threads=1))
    return {"model": name, "one": ones, "ddp": ddps, "load": [load_before, os.getloadavg()[0]]}


def _spread(values, fmt="{:.0f}"):
    """'median (min–max)' of the repeats' values."""
    import numpy as np
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt.format(float(np.median(values))) + " (" + fmt.format(min(values)) + "–"
            + fmt.format(max(values)) + ")")


def report_measured(results):
    import numpy as np
    lines = []
    for r in results:
        ones, ddps = r["one"], r["ddp"]
        params = ones[0]["params"]
        lines += [f"**{r['model']}** ({params:,} parameters, {params * 4 / 2 ** 20:.2f} MiB of "
                  f"float32 gradients; load average {r['load'][0]:.2f} before, "
                  f"{r['load'][1]:.2f} after)", "",
                  "| configuration | buckets | step (ms) | waiting at the end of backward (ms) "
                  "| averaging's share of the step |",
                  "|---|---|---|---|---|",
                  f"| 1 process × 2 threads, 128 images | – | "
                  f"{_spread([o['step_ms'] for o in ones])} | – | – |"]
        for label, c in ddps[0]["configs"].items():
            steps = [d["configs"][label]["step_ms"] for d in ddps]
            name = ("2 processes × 1 thread, 64 images each, no averaging (`no_sync`)"
                    if label == "no_sync" else f"2 × 1, DDP, {label}")
            if label == "no_sync":
                share = wait = "–"
            else:
                share = _spread([100 * (d["configs"][label]["step_ms"]
                                        - d["configs"]["no_sync"]["step_ms"])
                                 / d["configs"][label]["step_ms"] for d in ddps], "{:.1f}%")
                wait = _spread([d["configs"][label]["wait_ms"] for d in ddps], "{:.1f}")
            lines.append(f"| {name} | {c['buckets']} | {_spread(steps)} | {wait} | {share} |")
        alone = float(np.median([d["allreduce_ms"] for d in ddps]))
        lines += ["", f"One all-reduce (mean) of the whole gradient alone: {alone:.2f} ms.", ""]
    return "\n".join(lines)


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
    p.add_argument("--repeats", type=int, default=3,
                   help="turns of the one-process and the two-process run (default 3)")
    p.add_argument("--buckets", default=",".join(f"{b:g}" for b in BUCKETS_MB),
                   help="bucket sizes in MiB (default: 25,1,0.25,0.05)")
    p.add_argument("--no-sync-bn", action="store_true", help="leave out the SyncBatchNorm row")
    p.add_argument("--estimate-only", action="store_true")
    p.add_argument("--worker", choices=["one", "ddp"], help=argparse.SUPPRESS)
    p.add_argument("--sync-bn", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    buckets = [float(b) for b in args.buckets.split(",") if b]
    if args.worker == "one":
        return worker_one(models[0], args.rounds)
    if args.worker == "ddp":
        return worker_ddp(models[0], args.rounds, buckets, args.sync_bn)
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
          f"and run, {args.repeats} runs each: median of the runs' medians (range).\n")
    print(report_measured(results))
    import numpy as np
    print(report_estimate({r["model"]: float(np.median([o["step_ms"] for o in r["one"]]))
                           for r in results}))
    return None


if __name__ == "__main__":
    main()
