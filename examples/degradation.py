#!/usr/bin/env python
"""The degradation problem (ResNet paper, Fig. 6 and Fig. 7) with minigrad.

Trains plain and residual nets of two depths with one recipe on the same
data, then draws

* ``training_error.png`` (Fig. 6): training error (dashed) and test error
  (bold) per epoch, plain nets on the left, ResNets on the right; deeper
  plain nets train WORSE, deeper ResNets better;
* ``layer_std.png`` (Fig. 7): the standard deviation of each block's
  residual response (the output of its last BN, before the addition), on a
  fixed batch of test images in evaluation mode, in layer order (top) and
  sorted in descending order (bottom); ResNets' responses are smaller;

and writes the numbers to ``degradation.csv`` and ``layer_std.csv``.  Each
model's run lives in OUT/<model> (metrics.csv, checkpoint.npz); running the
script again resumes unfinished runs and skips finished ones.

    python examples/degradation.py --epochs 10
    python examples/degradation.py --models plain20,plain32,resnet20,resnet32 --subset 5000
"""
import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from minigrad.training import (CHECKPOINT, TrainingInterrupted, build_parser, format_summary,
                               layer_response_stds, load_checkpoint, load_data,
                               model_from_checkpoint, train)
from minigrad.training.cli import (momentum_float, nonnegative_float, nonnegative_int,
                                   positive_float, positive_int, report_error)

RECIPE = ("epochs", "batch_size", "lr", "schedule", "momentum", "weight_decay", "dataset",
          "data_dir", "subset", "seed", "width", "blocks_per_stage", "prefetch", "quiet",
          "synthetic_size", "no_download", "eval_every")


def parse(argv):
    p = argparse.ArgumentParser(description="ResNet Fig. 6 / Fig. 7: plain vs residual nets.")
    p.add_argument("--models", default="plain20,plain56,resnet20,resnet56",
                   help="comma-separated CIFAR models, trained one after the other")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=0.1)
    p.add_argument("--schedule", choices=("paper", "step", "cosine"), default="step")
    p.add_argument("--momentum", type=momentum_float, default=0.9)
    p.add_argument("--weight-decay", type=nonnegative_float, default=1e-4)
    p.add_argument("--dataset", choices=("auto", "cifar10", "synthetic"), default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--synthetic-size", type=positive_int, default=5000)
    p.add_argument("--subset", type=positive_int, default=None)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--width", type=positive_int, default=None)
    p.add_argument("--blocks-per-stage", type=positive_int, default=None)
    p.add_argument("--prefetch", type=nonnegative_int, default=2)
    p.add_argument("--eval-every", type=positive_int, default=1)
    p.add_argument("--std-batch", type=positive_int, default=256,
                   help="test images in the fixed batch for Fig. 7")
    p.add_argument("--std-layers", choices=("last_bn", "all"), default="last_bn",
                   help="last_bn: each block's last BN (before the addition); all: every BN "
                        "after a 3x3 conv, as in the paper's caption")
    p.add_argument("--out", default=None)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def run_one(opts, model, out):
    """Train (or resume, or skip) one model; returns its run folder."""
    run = out / model
    if (run / CHECKPOINT).exists():
        ckpt = load_checkpoint(run)
        if ckpt["iteration"] >= ckpt["total_iterations"]:
            print(f"{model}: already trained in {run}, skipping")
            return run
        args = build_parser().parse_args(["--resume", str(run)])
        args.quiet = opts.quiet
    else:
        args = build_parser().parse_args(["--model", model, "--out", str(run)])
        for k in RECIPE:
            setattr(args, k, getattr(opts, k))
    print(format_summary(train(args)))
    return run


def plot_training_error(curves, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    families = [("plain", [m for m in curves if m.startswith("plain")]),
                ("ResNet", [m for m in curves if not m.startswith("plain")])]
    families = [(t, ms) for t, ms in families if ms]
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), squeeze=False)
    for ax, (title, models) in zip(axes[0], families):
        for i, m in enumerate(models):
            rows = curves[m]
            c = f"C{i}"
            ep = [r["epoch"] for r in rows]
            ax.plot(ep, [100 * r["train_err"] for r in rows], "--", color=c, label=f"{m} train")
            test = [(r["epoch"], 100 * r["test_err"]) for r in rows if r["test_err"] is not None]
            if test:
                ax.plot(*zip(*test), "-", lw=2, color=c, label=f"{m} test")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{title} nets")
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training (dashed) and test (bold) error, cf. ResNet Fig. 6")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layer_std(stds, path, which):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5))
    for m, values in stds.items():
        s = [v for _, v in values]
        style = "--" if m.startswith("plain") else "-"
        top.plot(range(1, len(s) + 1), s, style, marker=".", label=m)
        bottom.plot(range(1, len(s) + 1), sorted(s, reverse=True), style, marker=".", label=m)
    what = "each block's last BN" if which == "last_bn" else "each 3x3 layer after BN"
    top.set_title(f"std of responses ({what}), cf. ResNet Fig. 7")
    top.set_xlabel("layer index (original order)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    opts = parse(argv)
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    out = Path(opts.out or Path("runs") / f"degradation-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        runs = {m: run_one(opts, m, out) for m in models}
        curves, stds, synthetic = {}, {}, False
        batch = None
        for m, run in runs.items():
            ckpt = load_checkpoint(run)
            curves[m] = [dict(r, test_err=r.get("test_err")) for r in ckpt["history"]]
            model, args = model_from_checkpoint(ckpt)
            if batch is None:
                args.no_download = True
                data = load_data(args, log=lambda *a: None)
                synthetic = data.synthetic
                images = data.test[0][:opts.std_batch]
                mean = np.asarray(ckpt["mean_image"], dtype=np.float32)
                batch = images.astype(np.float32) / 255 - mean
            stds[m] = layer_response_stds(model, batch, opts.std_layers)
    except TrainingInterrupted as exc:
        print(f"{exc}\n(or simply run this command again: finished models are skipped)",
              file=sys.stderr)
        return 130
    except Exception as exc:              # one error line for what a user can fix
        code = report_error(exc)
        if code is None:
            raise
        return code

    with open(out / "degradation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "epoch", "train_loss", "train_err", "test_err"])
        for m, rows in curves.items():
            for r in rows:
                w.writerow([m, r["epoch"], f"{r['train_loss']:.6g}", f"{r['train_err']:.6g}",
                            "" if r["test_err"] is None else f"{r['test_err']:.6g}"])
    with open(out / "layer_std.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "layer_index", "layer", "std", "rank"])
        for m, values in stds.items():
            order = np.argsort([-v for _, v in values], kind="stable")
            rank = np.empty(len(values), dtype=int)
            rank[order] = np.arange(1, len(values) + 1)
            for i, (name, v) in enumerate(values):
                w.writerow([m, i + 1, name, f"{v:.6g}", rank[i]])
    plot_training_error(curves, out / "training_error.png")
    plot_layer_std(stds, out / "layer_std.png", opts.std_layers)

    print(f"\n{'model':<12}{'final train err':>16}{'final test err':>16}{'mean response std':>20}")
    for m in models:
        last = curves[m][-1]
        test = "n/a" if last["test_err"] is None else f"{last['test_err']:.2%}"
        print(f"{m:<12}{last['train_err']:>16.2%}{test:>16}"
              f"{np.mean([v for _, v in stds[m]]):>20.3f}")
    if synthetic:
        print("NOTE: trained on the SYNTHETIC dataset, not CIFAR-10.")
    print(f"figures and CSVs in {out}: training_error.png, layer_std.png, degradation.csv, "
          "layer_std.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
