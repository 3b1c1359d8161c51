"""minigrad's CPU benchmark suite, side by side with PyTorch.

    python -m benchmarks                 # everything; writes docs/benchmarks.md
    python -m benchmarks --quick         # 3 timed runs each, no file written
    python -m benchmarks --only conv     # items whose name contains "conv"
    python benchmarks/run.py --threads 2 --runs 10 --op-runs 30

Every item is timed in this one process, minigrad then PyTorch, with the same
number of threads for both (NumPy's BLAS, Numba and PyTorch): a few warm-up
calls, then ``--op-runs`` timed calls of each op (conv, pool, batch norm)
and ``--runs`` of each training step; the table gives the median and the
minimum.  Peak memory is the peak resident set of a separate process that runs
a few ResNet-20 training steps at batch 128 (so nothing else in this process
counts).  PyTorch's column is left out when torch is not installed.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _early_threads(argv):
    """The thread count must be in the environment before NumPy loads its BLAS."""
    n = "2"
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            n = argv[i + 1]
        elif a.startswith("--threads="):
            n = a.split("=", 1)[1]
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = n
    return int(n)


if __name__ in ("__main__", "benchmarks.run"):
    _early_threads(sys.argv)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import minigrad  # noqa: E402
import minigrad.nn.functional as F  # noqa: E402
from minigrad import config  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:          # the PyTorch column is skipped
    torch = None

BATCH = 128
CONV_SHAPES = [(128, 16, 32), (128, 32, 16), (128, 64, 8), (64, 64, 32)]   # (N, C, H=W)
MODELS = ["resnet20", "resnet56", "vgg16_cifar"]


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------
def timeit(fn, runs, warmup=2):
    """(median ms, min ms) of ``runs`` calls of fn after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), float(np.min(times))


# Untimed pause before each call of an alternating pair: an OpenMP pool
# (PyTorch's) keeps its threads spinning for a moment after its work, which
# would otherwise take the cores from the call that follows.
PAUSE_S = 0.05
# Then untimed calls of the same function for at least this long, so the timed
# call runs as an op or a step of a training loop does, with the cores busy
# just before.  On the virtual machines measured, a call started after 10 ms or
# more of idle cores took up to 2-3x its time, both libraries alike (a 3x3
# conv forward of 4-5 ms: 10.5 ms for minigrad, 6-13 ms for PyTorch), and
# ran at full speed again only after about 25 ms of work.
REWARM_S = 0.03


def timeit_both(fa, fb, runs):
    """Time minigrad's fa, and PyTorch's fb where there is one (fb None: no
    PyTorch), calls alternating.  Returns (minigrad times, PyTorch times or None)."""
    if fb is None:
        return timeit(fa, runs), None
    return timeit_pair(fa, fb, runs)


def _rewarm(f):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < REWARM_S:
        f()


def timeit_pair(fa, fb, runs, warmup=2):
    """Like :func:`timeit` for two functions, their calls alternating, so a
    change in the machine's load during the run hits both alike: before each
    timed call a pause (PAUSE_S), then the same function untimed for REWARM_S."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(runs):
        for f, ts in ((fa, ta), (fb, tb)):
            time.sleep(PAUSE_S)
            _rewarm(f)
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) * 1e3)
    return (float(np.median(ta)), float(np.min(ta))), (float(np.median(tb)), float(np.min(tb)))


class Row:
    def __init__(self, name, mg, pt=None, flops=None, images=None):
        self.name, self.mg, self.pt, self.flops, self.images = name, mg, pt, flops, images

    def cells(self, with_torch):
        med, mn = self.mg
        c = [self.name, f"{med:.1f}", f"{mn:.1f}"]
        c.append(f"{self.flops / med / 1e6:.1f}" if self.flops else "")
        c.append(f"{self.images / med * 1e3:.0f}" if self.images else "")
        if with_torch:
            if self.pt is None:
                c += ["", ""]
            else:
                c += [f"{self.pt[0]:.1f}", f"{med / self.pt[0]:.2f}x"]
        return c


# ---------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------
def conv_items(runs, rng):
    rows = []
    for n, c, h in CONV_SHAPES:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = (rng.standard_normal((c, c, 3, 3)) * 0.1).astype(np.float32)
        g = rng.standard_normal((n, c, h, h)).astype(np.float32)
        flops = 2 * n * c * c * 9 * h * h
        xt, wt = minigrad.Tensor(x, requires_grad=True), minigrad.Tensor(w, requires_grad=True)

        def mg_fwd():
            with minigrad.no_grad():
                F.conv2d(xt, wt, padding=1)

        def mg_fb():
            xt.grad = wt.grad = None
            F.conv2d(xt, wt, padding=1).backward(g)

        pt_fwd = pt_fb = None
        if torch is not None:
            xq = torch.from_numpy(x).requires_grad_()
            wq = torch.from_numpy(w).requires_grad_()
            gq = torch.from_numpy(g)

            def pt_fwd():
                with torch.no_grad():
                    torch.nn.functional.conv2d(xq, wq, padding=1)

            def pt_fb():
                xq.grad = wq.grad = None
                torch.nn.functional.conv2d(xq, wq, padding=1).backward(gq)
        tag = f"N{n} C{c} {h}x{h}"
        rows.append(Row(f"conv 3x3 fwd, {tag}", *timeit_both(mg_fwd, pt_fwd, runs), flops))
        rows.append(Row(f"conv 3x3 fwd+bwd, {tag}", *timeit_both(mg_fb, pt_fb, runs), 3 * flops))
        print(rows[-2].cells(torch is not None), rows[-1].cells(torch is not None), flush=True)
    return rows


def pool_bn_items(runs, rng):
    rows = []
    x = rng.permutation(np.linspace(-2, 2, 128 * 64 * 32 * 32, dtype=np.float32)).reshape(
        128, 64, 32, 32)
    g = rng.standard_normal((128, 64, 16, 16)).astype(np.float32)
    xt = minigrad.Tensor(x, requires_grad=True)

    def mg_pool():
        xt.grad = None
        F.max_pool2d(xt, 2, 2).backward(g)
    pt_pool = None
    if torch is not None:
        xq, gq = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)

        def pt_pool():
            xq.grad = None
            torch.nn.functional.max_pool2d(xq, 2, 2).backward(gq)
    rows.append(Row("max-pool 2x2 fwd+bwd, N128 C64 32x32",
                    *timeit_both(mg_pool, pt_pool, runs)))

    x = rng.standard_normal((128, 16, 32, 32)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    xt = minigrad.Tensor(x, requires_grad=True)
    gt, bt = minigrad.Tensor(gamma, requires_grad=True), minigrad.Tensor(beta, requires_grad=True)
    rm, rv = np.zeros(16, np.float32), np.ones(16, np.float32)

    def mg_bn():
        xt.grad = gt.grad = bt.grad = None
        F.batch_norm(xt, rm, rv, gt, bt, training=True).backward(g)
    pt_bn = None
    if torch is not None:
        xq, gq = torch.from_numpy(x).requires_grad_(), torch.from_numpy(g)
        wq, bq = torch.ones(16, requires_grad=True), torch.zeros(16, requires_grad=True)
        rmq, rvq = torch.zeros(16), torch.ones(16)

        def pt_bn():
            xq.grad = wq.grad = bq.grad = None
            torch.nn.functional.batch_norm(xq, rmq, rvq, wq, bq, training=True).backward(gq)
    rows.append(Row("batch norm fwd+bwd (train), N128 C16 32x32",
                    *timeit_both(mg_bn, pt_bn, runs)))
    for r in rows:
        print(r.cells(torch is not None), flush=True)
    return rows


def model_flops(model):
    """Multiply-adds x 2 of one forward pass of a batch (conv and linear layers)."""
    total = [0]

    def hook(mod, inputs, out):
        w = mod.weight.shape
        total[0] += 2 * out.size * int(np.prod(w[1:]))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (minigrad.nn.Conv2d, minigrad.nn.Linear))]
    with minigrad.no_grad():
        model(minigrad.Tensor(np.zeros((BATCH, 3, 32, 32), np.float32)))
    for h in handles:
        h.remove()
    return total[0]


def minigrad_step(name, rng):
    model = minigrad.models.create(name)
    model.train()
    wd = 5e-4 if name.startswith("vgg") else 1e-4
    opt = minigrad.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
    x = minigrad.Tensor(rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32))
    y = rng.integers(0, 10, BATCH)

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return model, step


def torch_step(name, rng):
    from benchmarks.torch_models import MODELS as TM
    model = TM[name]()
    model.train()
    wd = 5e-4 if name.startswith("vgg") else 1e-4
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
    x = torch.from_numpy(rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 10, BATCH))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def model_items(runs, rng, names):
    rows = []
    for name in names:
        model, step = minigrad_step(name, rng)
        flops = 3 * model_flops(model)     # forward + the two backward products
        mg, pt = timeit_both(step, torch_step(name, rng) if torch is not None else None, runs)
        rows.append(Row(f"{name} training step, batch {BATCH}", mg, pt, flops, BATCH))
        print(rows[-1].cells(torch is not None), flush=True)
        del model, step
    return rows


# ---------------------------------------------------------------------------
# Peak memory: a clean child process
# ---------------------------------------------------------------------------
def peak_rss_child(which, steps):
    """Run ``steps`` ResNet-20 training steps at batch 128; print peak RSS in MiB."""
    rng = np.random.default_rng(0)
    if which == "torch":
        step = torch_step("resnet20", rng)
    else:
        _, step = minigrad_step("resnet20", rng)
    for _ in range(steps):
        step()
    print(peak_rss_mib())


def peak_rss_mib():
    """This process's peak resident set in MiB: VmHWM from /proc (ru_maxrss
    would also count the parent's peak, which survives fork and exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(which, threads, steps=5):
    cmd = [sys.executable, "-m", "benchmarks.run", "--threads", str(threads),
           "--peak-rss-child", which, "--runs", str(steps)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return None
    return float(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def _first_cpu():
    """The fields of the first processor's block of /proc/cpuinfo ("model
    name", "cpu family", "flags"...), {} where it cannot be read."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                if fields:
                    break
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model():
    """The CPU's model name with its family and model numbers (from
    /proc/cpuinfo), e.g. "Intel(R) Xeon(R) Processor (family 6, model 167)",
    or "unknown".  Virtual machines of different CPU generations may show the
    same generic name; the numbers tell them apart, and so their tables."""
    fields = _first_cpu()
    name = fields.get("model name", "unknown")
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def caches():
    """The first core's data caches from sysfs, e.g. "L1d 48K, L2 2048K, L3
    491520K" (each per core or shared, as the kernel reports), or "unknown"."""
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    found = []
    try:
        for index in sorted(root.glob("index*")):
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            level = (index / "level").read_text().strip()
            size = (index / "size").read_text().strip()
            found.append(f"L{level}{'d' if kind == 'Data' else ''} {size}")
    except OSError:
        pass
    return ", ".join(found) or "unknown"


def vector_extensions():
    """The widest x86 vector extension the CPU reports (AVX-512, AVX2...)."""
    fields = _first_cpu()
    if "flags" not in fields:
        return "unknown"
    flags = set(fields["flags"].split())
    for name, flag in (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx")):
        if flag in flags:
            return name
    return "none of AVX, AVX2, AVX-512"


def machine(threads):
    import numba
    blas = "unknown"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:
        pass
    from minigrad.kernels import cpu_numba
    core = cpu_numba.blas_core()[1]
    if core:        # the kernels BLAS runs here: which convolution routes pay off depends on it
        blas += f", {core} kernels, {cpu_numba.blas_vector_bytes() * 8}-bit vectors"
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores visible, "
        f"{vector_extensions()}; caches of a core: {caches()}",
        f"- threads: {threads} (NumPy's BLAS, Numba and PyTorch alike)",
        f"- Python {platform.python_version()}, NumPy {np.__version__} ({blas}), "
        f"Numba {numba.__version__} (kernels on minigrad's own thread pool)",
        f"- PyTorch: {torch.__version__ if torch is not None else 'not installed'}",
        f"- load average when the run ended: {os.getloadavg()[0]:.2f} (1 min)",
    ]
    return "\n".join(lines)


def table(rows):
    with_torch = torch is not None
    head = ["item", "minigrad median ms", "min ms", "GFLOP/s", "images/s"]
    if with_torch:
        head += ["PyTorch median ms", "minigrad / PyTorch"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r.cells(with_torch)) + " |" for r in rows]
    return "\n".join(out)


HEADER = """# How fast is minigrad?

minigrad runs its hot operations (convolution, pooling, batch norm, ReLU, the
SGD update) through parallel Numba kernels on the CPU by default, and leaves
the matrix products to NumPy's BLAS.  The plain NumPy code in
`minigrad/ops` stays the reference: `minigrad.set_fast(False)` or
`with minigrad.reference_mode():` switches back to it, and the tests check
that both give the same numbers.

The tables below, one per machine (its CPU model and the date of the run in
the heading), are produced by `python -m benchmarks` (medians of {op_runs}
runs of each op and {runs} of each training step after warm-up, minigrad and
PyTorch timed in the same process with the same number of threads, their calls
alternating with an untimed 50 ms pause before each, so neither starts while
the other's threads are still busy, and then 30 ms of untimed calls of the
same function, so the timed call starts with the cores busy, as in a training
loop; float32, NCHW; tables dated before 2026-12-02 had no such calls and 10
runs of each op). A run replaces the table of its own CPU and keeps the
others. The last column is minigrad's median time divided by PyTorch's: 1.00x
is parity, 2.00x is half PyTorch's speed. GFLOP/s counts the multiply-adds of
the convolutions and linear layers (x2), three products per layer for a
training step. On a shared machine, check the load average under "Machine" and
rerun: a busy machine slows both sides, but not equally. Where a step's
convolution time goes, layer by layer (forward, dx and dW apart, the kernels
each takes, beside PyTorch's): `python -m benchmarks.layers --model resnet20`.
"""


# Everything from this line on in docs/benchmarks.md is written by hand (how
# to read the figures, earlier runs) and is kept when the table is rewritten.
NOTES_MARK = "<!-- notes below are kept when python -m benchmarks rewrites this file -->"
# Each machine's table sits between these two lines; a run replaces the table
# of its own CPU and keeps the others.
SECTION_START = "<!-- machine: {} -->"
SECTION_END = "<!-- end of machine -->"


def _old_parts(path):
    """(the tables of other machines by CPU name in file order, the notes) of
    an existing report."""
    try:
        old = path.read_text(encoding="utf-8")
    except OSError:
        return {}, ""
    i = old.find(NOTES_MARK)
    notes = "\n" + old[i:] if i >= 0 else ""
    body = old[:i] if i >= 0 else old
    sections = {}
    start = SECTION_START.split("{}")[0]
    for chunk in body.split(start)[1:]:
        name, _, rest = chunk.partition(" -->")
        sections[name] = start + chunk[:len(name) + 4 + rest.find(SECTION_END) + len(SECTION_END)]
    return sections, notes


def machine_section(rows, rss, threads, done=True):
    """This machine's part of the report: its table, peak memory and details."""
    cpu = cpu_model()
    text = SECTION_START.format(cpu) + "\n"
    text += f"## {cpu}, {os.cpu_count()} logical cores, {time.strftime('%Y-%m-%d')}\n\n"
    text += table(rows) + "\n\n"
    if not done:
        text += "(Run in progress or stopped early: the items above are the ones it finished.)\n\n"
    if rss:
        text += "Peak resident memory of a ResNet-20 training loop at batch 128 "
        text += "(separate process, 5 steps): "
        text += ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items() if v) + ".\n\n"
    text += "Machine:\n\n" + machine(threads) + "\n" + SECTION_END
    return text


def write_report(path, rows, rss, threads, runs, done=True, op_runs=None):
    """Rewrite ``path``: the method (``runs`` timed runs of a training step,
    ``op_runs`` of an op, the same by default), then one table per machine
    (this run's replaces the one of the same CPU), then the hand-written
    notes."""
    others, notes = _old_parts(path)
    others.pop(cpu_model(), None)
    sections = [machine_section(rows, rss, threads, done)] + list(others.values())
    header = HEADER.format(runs=runs, op_runs=runs if op_runs is None else op_runs)
    text = header + "\n" + "\n\n".join(sections) + "\n" + notes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10, help="timed runs of each training step")
    # An op's samples spread more than a step's (a conv fwd+bwd of about 11 ms
    # measured 9-18 ms over 30 samples, PyTorch's 8-16 ms), so the median of
    # an op takes more of them; they are cheap.
    p.add_argument("--op-runs", type=int, default=30,
                   help="timed runs of each op (conv, pool, batch norm)")
    p.add_argument("--quick", action="store_true", help="3 runs each; write no file")
    p.add_argument("--only", default="", help="run the items whose group contains this "
                   "(conv, pool, model, memory, or a model name)")
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--reference", action="store_true", help="time minigrad's reference path")
    p.add_argument("--peak-rss-child", choices=["minigrad", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    threads = args.threads
    if torch is not None:
        torch.set_num_threads(threads)
    config.set_num_threads(min(threads, config.get_num_threads()))
    config.set_fast(not args.reference)
    if args.peak_rss_child:
        peak_rss_child(args.peak_rss_child, args.runs)
        return
    runs = 3 if args.quick else args.runs
    op_runs = 3 if args.quick else args.op_runs
    rng = np.random.default_rng(0)
    only = args.only
    rows, rss = [], {}
    write = not (args.quick or args.no_write)

    def save(done):
        # the report is rewritten after every group, so a long run that is
        # stopped early still leaves the rows it finished
        if write:
            write_report(Path(args.out), rows, rss, threads, runs, done, op_runs)

    if not only or "conv" in only:
        rows += conv_items(op_runs, rng)
        save(False)
    if not only or "pool" in only or "bn" in only:
        rows += pool_bn_items(op_runs, rng)
        save(False)
    names = [m for m in MODELS if not only or only == "model" or only in m]
    for i, name in enumerate(names):
        rows += model_items(runs, rng, [name])
        save(False)
        if i == 0 and (not only or "memory" in only):
            rss["minigrad"] = peak_rss("minigrad", threads)
            if torch is not None:
                rss["PyTorch"] = peak_rss("torch", threads)
            print("peak RSS MiB", rss, flush=True)
            save(False)
    if only == "memory":
        rss["minigrad"] = peak_rss("minigrad", threads)
        if torch is not None:
            rss["PyTorch"] = peak_rss("torch", threads)
    print()
    print(table(rows))
    save(True)
    if write:
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
