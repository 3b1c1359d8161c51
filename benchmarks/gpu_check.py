"""The training and dense-evaluation stages of benchmarks/gpu_check.sh.

    python benchmarks/gpu_check.py train RUNS_DIR   # --device cuda: loss falls, resume is exact
    python benchmarks/gpu_check.py dense RUNS_DIR   # VGG dense evaluation, GPU against CPU

``train`` runs examples/train_cifar_resnet.py three times on synthetic CIFAR-shaped data:
a run of 3 epochs stopped after 2 (``--stop-after 2``), its ``--resume``, and the same 3
epochs without a stop, each in a fresh folder under RUNS_DIR.  It checks that the training
loss of the last epoch is below the first's, that the resumed run logged the very same
loss at every iteration as the uninterrupted one, and that both end with bit-identical
weights and optimizer state (every numeric array of the two checkpoints).

``dense`` trains a VGG-11 (CIFAR variant) for a few iterations on the GPU, then evaluates
its checkpoint with dense evaluation (the fully connected layers as convolutions, with
flips) on the GPU and on the CPU; the two errors must agree.

Each prints one line starting with ``RESULT train:`` or ``RESULT dense:`` for the
summary and exits non-zero when a check fails.
"""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "examples" / "train_cifar_resnet.py")]
RESNET_ARGS = ["--device", "cuda", "--dataset", "synthetic", "--synthetic-size", "2560",
               "--model", "resnet20", "--epochs", "3", "--batch-size", "128", "--quiet"]


def run(args):
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=REPO)


def check_training(runs: Path) -> str:
    resumed, straight = runs / "resumed", runs / "straight"
    run(TRAIN + RESNET_ARGS + ["--out", str(resumed), "--stop-after", "2"])
    run(TRAIN + ["--resume", str(resumed), "--quiet"])
    run(TRAIN + RESNET_ARGS + ["--out", str(straight)])
    with open(straight / "metrics.csv", newline="") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f)]
    print("train loss per epoch:", losses)
    assert len(losses) == 3 and losses[-1] < losses[0], "the training loss did not fall"
    its = [(d / "iterations.csv").read_text() for d in (resumed, straight)]
    if its[0] != its[1]:
        rows = [np.loadtxt(d / "iterations.csv", delimiter=",", skiprows=1, ndmin=2)
                for d in (resumed, straight)]
        first = next(i for i, (p, q) in enumerate(zip(*rows)) if not np.array_equal(p, q))
        worst = np.abs(rows[0][:, 2] - rows[1][:, 2]).max()
        raise AssertionError(f"the resumed run logged other losses than the uninterrupted one, "
                             f"from iteration {first + 1} on (largest loss difference {worst:.3g})")
    a, b = (np.load(d / "checkpoint.npz", allow_pickle=True) for d in (resumed, straight))
    arrays = [k for k in a.files if a[k].dtype.kind in "fiu"]
    differ = [k for k in arrays if not np.array_equal(a[k], b[k])]
    assert not differ, f"the resumed run ended with other arrays than the uninterrupted one: {differ[:5]}"
    return (f"loss {losses[0]:.4f} -> {losses[-1]:.4f} over 3 epochs; stopped after 2 and "
            f"resumed: the same loss at all {its[0].count(chr(10)) - 1} iterations, "
            f"all {len(arrays)} checkpoint arrays identical")


def check_dense(runs: Path) -> str:
    out = runs / "vgg"
    run(TRAIN + ["--device", "cuda", "--dataset", "synthetic", "--synthetic-size", "640",
                 "--model", "vgg11_cifar", "--iterations", "4", "--batch-size", "64",
                 "--out", str(out), "--quiet"])
    sys.path.insert(0, str(REPO))
    from minigrad.training import evaluate_checkpoint
    quiet = lambda *a, **k: None  # noqa: E731
    gpu = evaluate_checkpoint(out, dense=True, device="cuda", log=quiet)
    cpu = evaluate_checkpoint(out, dense=True, device="cpu", log=quiet)
    print("GPU:", gpu)
    print("CPU:", cpu)
    assert abs(gpu["top1_err"] - cpu["top1_err"]) <= 1 / gpu["n"] + 1e-9, \
        "dense evaluation gives another error on the GPU than on the CPU"
    return (f"VGG-11 dense evaluation of {gpu['n']} images: top-1 error {gpu['top1_err']:.4f} "
            f"on the GPU, {cpu['top1_err']:.4f} on the CPU")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("train", "dense"):
        print("usage: gpu_check.py {train,dense} RUNS_DIR", file=sys.stderr)
        return 2
    check = check_training if argv[0] == "train" else check_dense
    print(f"RESULT {argv[0]}:", check(Path(argv[1])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
