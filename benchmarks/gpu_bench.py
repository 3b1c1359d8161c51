"""GPU benchmark: minigrad's 3x3 convolution kernels against im2col + cuBLAS and cuDNN,
and a ResNet-20 CIFAR-10 training epoch.

    python benchmarks/gpu_bench.py                       # everything, prints a table
    python benchmarks/gpu_bench.py --write-docs          # ... and updates docs/gpu.md
    python benchmarks/gpu_bench.py --no-epoch --repeats 50
    python benchmarks/gpu_bench.py --out results.md      # ... and writes the report there

Convolutions: the CIFAR ResNet shapes at batch 128 -- 16 channels at 32x32, 32 at
16x16, 64 at 8x8 (stride 1), and the two stride-2 transitions (16->32 at 32x32,
32->64 at 16x16) -- for each implementation:

* ``cupy``   the CUDA C kernels of kernels/conv3x3.cu (cupy.RawModule)
* ``numba``  the Numba CUDA kernels of kernels/numba_cuda.py
* ``im2col`` im2col RawKernel + cuBLAS GEMM (col2im for the input gradient)
* ``cudnn``  PyTorch's conv2d (cuDNN, ``cudnn.benchmark=True``), when PyTorch with
             CUDA is installed

"fwd" times the forward pass; "fwd+bwd" the forward, the input gradient and the
weight gradient.  Each figure is the median and the minimum over ``--repeats`` runs
(default 20) after ``--warmup`` runs, timed with CUDA events.

Epoch: one epoch of ResNet-20 training (forward, backward, SGD with momentum) over
50,000 images in batches of 128 (390 full batches + one of 80).  The data are
SYNTHETIC (random normal images, generated on the GPU, and random labels, kept on the
host as the training loop keeps them; 8 batches, cycled), so the time measures the
engine, not a data pipeline.  Wall-clock,
with a device synchronisation at the end; one warm-up step first.

``--write-docs`` replaces the part of docs/gpu.md between the lines
``<!-- gpu-bench:start -->`` and ``<!-- gpu-bench:end -->`` (everything else in
the file is kept; without both markers nothing is written), the way
``python -m benchmarks`` rewrites only its own part of docs/benchmarks.md.

Needs CuPy and an NVIDIA GPU; without them the script prints why and exits with 1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import minigrad  # noqa: E402
from minigrad import backend  # noqa: E402

# (label, N, C_in, C_out, H, W, stride)
SHAPES = [
    ("C16 32x32", 128, 16, 16, 32, 32, 1),
    ("C32 16x16", 128, 32, 32, 16, 16, 1),
    ("C64 8x8", 128, 64, 64, 8, 8, 1),
    ("C16->32 32x32 s2", 128, 16, 32, 32, 32, 2),
    ("C32->64 16x16 s2", 128, 32, 64, 16, 16, 2),
]
IMPLS = ("cupy", "numba", "im2col", "cudnn")
# --write-docs rewrites only the lines between these two markers of docs/gpu.md
MARK_START = "<!-- gpu-bench:start -->"
MARK_END = "<!-- gpu-bench:end -->"
DOC = REPO / "docs" / "gpu.md"


def cuda_time(cp, fn, repeats, warmup):
    """(median ms, min ms) of ``fn()`` over ``repeats`` runs, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    times = []
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return statistics.median(times), min(times)


def torch_cuda():
    """PyTorch when it is installed with CUDA, else None."""
    try:
        import torch
    except Exception:
        return None
    return torch if torch.cuda.is_available() else None


def conv_functions(impl, cp, gpu, x, w, gy, stride):
    """(forward, forward+backward) closures of one implementation."""
    if impl == "cudnn":
        torch = torch_cuda()
        torch.backends.cudnn.benchmark = True
        tx = torch.as_tensor(x, device="cuda").requires_grad_(True)
        tw = torch.as_tensor(w, device="cuda").requires_grad_(True)
        tg = torch.as_tensor(gy, device="cuda")
        conv = torch.nn.functional.conv2d

        def fwd():
            with torch.no_grad():
                conv(tx, tw, stride=stride, padding=1)

        def fwd_bwd():
            y = conv(tx, tw, stride=stride, padding=1)
            torch.autograd.grad(y, (tx, tw), tg)
        return fwd, fwd_bwd

    def fwd():
        gpu.conv2d_forward(x, w, stride, 1, impl=impl)

    def fwd_bwd():
        gpu.conv2d_forward(x, w, stride, 1, impl=impl)
        gpu.conv2d_backward_input(gy, w, x.shape, stride, 1, impl=impl)
        gpu.conv2d_backward_weight(x, gy, stride, 1, impl=impl)
    return fwd, fwd_bwd


def bench_convs(impls, repeats, warmup):
    cp = backend.require_cupy()
    from minigrad import cuda as gpu
    rows = []
    for label, N, C, K, H, W, s in SHAPES:
        rng = cp.random.default_rng(0)
        x = rng.standard_normal((N, C, H, W), dtype=cp.float32)
        w = rng.standard_normal((K, C, 3, 3), dtype=cp.float32) * 0.1
        gy = rng.standard_normal((N, K, (H - 1) // s + 1, (W - 1) // s + 1), dtype=cp.float32)
        row = {"shape": label}
        for impl in impls:
            fwd, fwd_bwd = conv_functions(impl, cp, gpu, x, w, gy, s)
            row[impl] = (cuda_time(cp, fwd, repeats, warmup), cuda_time(cp, fwd_bwd, repeats, warmup))
            print(f"  {label:<18} {impl:<7} fwd {row[impl][0][0]:8.3f} ms   "
                  f"fwd+bwd {row[impl][1][0]:8.3f} ms (median)", flush=True)
        rows.append(row)
    return rows


def bench_epoch(impl, images=50_000, batch=128):
    """Seconds for one ResNet-20 training epoch on synthetic data (see the docstring)."""
    cp = backend.require_cupy()
    import minigrad.nn.functional as F
    from minigrad import cuda as gpu
    from minigrad import models, optim
    minigrad.manual_seed(0)
    model = models.create("resnet20").to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rng, labels = cp.random.default_rng(0), np.random.default_rng(0)
    # images on the GPU, labels on the host (where the training loop keeps them too)
    batches = [(minigrad.Tensor(rng.standard_normal((batch, 3, 32, 32), dtype=cp.float32)),
                labels.integers(0, 10, batch)) for _ in range(8)]
    sizes = [batch] * (images // batch) + ([images % batch] if images % batch else [])

    def step(x, t):
        loss = F.cross_entropy(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with gpu.conv_kernel(impl):
        step(*batches[0])                                # warm-up: compile the kernels
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for i, n in enumerate(sizes):
            x, t = batches[i % len(batches)]
            step(x[:n] if n != batch else x, t[:n])
        cp.cuda.Device().synchronize()
    return time.perf_counter() - t0


def device_line():
    cp = backend.require_cupy()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    torch = torch_cuda()
    extra = f", PyTorch {torch.__version__} (cuDNN {torch.backends.cudnn.version()})" if torch else ""
    return (f"{name}, CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, "
            f"CuPy {cp.__version__}{extra}")


def markdown(rows, impls, epochs, repeats, device):
    """The report: where and when it was measured, the convolution table, the epochs."""
    lines = [f"Measured with `python benchmarks/gpu_bench.py` on {device}, "
             f"{time.strftime('%Y-%m-%d')}.  3x3 convolution, padding 1, batch 128, float32; "
             f"median (min) milliseconds over {repeats} runs after warm-up, CUDA events.  "
             "fwd+bwd = forward + input gradient + weight gradient.", ""]
    head = "| shape | " + " | ".join(f"{i} fwd | {i} fwd+bwd" for i in impls) + " |"
    lines += [head, "|" + "---|" * (1 + 2 * len(impls))]
    for row in rows:
        cells = []
        for i in impls:
            (fm, fn), (bm, bn) = row[i]
            cells += [f"{fm:.3f} ({fn:.3f})", f"{bm:.3f} ({bn:.3f})"]
        lines.append(f"| {row['shape']} | " + " | ".join(cells) + " |")
    if epochs:
        lines += ["", "ResNet-20, one CIFAR-10-sized training epoch (50,000 SYNTHETIC images, "
                  "batch 128, SGD momentum 0.9), wall-clock seconds:", "",
                  "| conv kernel | epoch (s) | images/s |", "|---|---|---|"]
        lines += [f"| {impl} | {sec:.1f} | {50_000 / sec:,.0f} |" for impl, sec in epochs.items()]
    targets = target_lines(rows, impls, epochs)
    if targets:
        lines += ["", "Against the targets (ratios of medians, fwd+bwd):", "",
                  "| target | measured | met |", "|---|---|---|"] + targets
    return "\n".join(lines) + "\n"


# the GPU targets: CUDA C 3x3 fwd+bwd <= 2x cuDNN, Numba <= 3x CUDA C, epoch <= 15 s
TARGET_VS_CUDNN, TARGET_NUMBA_VS_CUDA_C, TARGET_EPOCH_S = 2.0, 3.0, 15.0


def target_lines(rows, impls, epochs):
    """Table rows comparing the measured medians with the targets above."""
    out = []

    def ratio_rows(num, den, limit, what):
        for row in rows:
            r = row[num][1][0] / row[den][1][0]
            out.append(f"| {what}, {row['shape']} | {r:.2f}x | {'yes' if r <= limit else 'no'} |")

    if "cupy" in impls and "cudnn" in impls:
        ratio_rows("cupy", "cudnn", TARGET_VS_CUDNN, f"CUDA C / cuDNN <= {TARGET_VS_CUDNN:g}x")
    if "numba" in impls and "cupy" in impls:
        ratio_rows("numba", "cupy", TARGET_NUMBA_VS_CUDA_C,
                   f"Numba / CUDA C <= {TARGET_NUMBA_VS_CUDA_C:g}x")
    for impl, sec in epochs.items():
        out.append(f"| ResNet-20 epoch ({impl}) <= {TARGET_EPOCH_S:g} s | {sec:.1f} s | "
                   f"{'yes' if sec <= TARGET_EPOCH_S else 'no'} |")
    return out


def _write_atomically(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_docs(section, path=DOC):
    """Put ``section`` between the markers of ``path`` (docs/gpu.md), keeping the rest
    of the file; atomically.  A file without both markers, in order, is left alone
    (ValueError): the report is never appended to text it might duplicate."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no {MARK_START} ... {MARK_END} section to rewrite; "
                         "add the two lines where the GPU figures belong")
    head, tail = text[:start + len(MARK_START)], text[end:]
    _write_atomically(path, head + "\n" + section.rstrip("\n") + "\n" + tail)
    print(f"updated {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help=f"comma-separated, from {','.join(IMPLS)} (cudnn needs PyTorch+CUDA)")
    ap.add_argument("--repeats", type=int, default=20, help="timed runs per figure (>= 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-epoch", action="store_true", help="skip the ResNet-20 epoch")
    ap.add_argument("--epoch-impls", default="cupy,numba,im2col")
    ap.add_argument("--write-docs", action="store_true",
                    help="write the results between the gpu-bench markers of docs/gpu.md")
    ap.add_argument("--out", help="also write the report (markdown) to this file")
    args = ap.parse_args(argv)
    if args.repeats < 10:
        ap.error("--repeats must be at least 10")
    try:
        device = device_line()
    except RuntimeError as exc:
        print(f"gpu_bench: {exc}", file=sys.stderr)
        return 1
    impls = [i for i in args.impls.split(",") if i]
    for i in impls:
        if i not in IMPLS:
            ap.error(f"unknown implementation {i!r}; choose from {IMPLS}")
    if "cudnn" in impls and torch_cuda() is None:
        print("gpu_bench: PyTorch with CUDA is not installed: skipping cudnn", file=sys.stderr)
        impls.remove("cudnn")
    print(f"device: {device}")
    rows = bench_convs(impls, args.repeats, args.warmup)
    epochs = {}
    if not args.no_epoch:
        for impl in [i for i in args.epoch_impls.split(",") if i]:
            epochs[impl] = bench_epoch(impl)
            print(f"  ResNet-20 epoch ({impl}): {epochs[impl]:.1f} s "
                  f"({50_000 / epochs[impl]:,.0f} images/s)", flush=True)
    section = markdown(rows, impls, epochs, args.repeats, device)
    print()
    print(section)
    if args.out:
        _write_atomically(Path(args.out), section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
