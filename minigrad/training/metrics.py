"""What a run records: ``metrics.csv`` (one row per epoch), ``iterations.csv``
(one row per training batch) and ``curves.png`` (training and test error per
epoch, like Fig. 6 of the ResNet paper).  Every file is written atomically."""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from ..serialization import atomic_write

__all__ = ["METRICS", "ITERATIONS", "CURVES", "COLUMNS", "ITER_COLUMNS", "write_metrics_csv",
           "write_iterations_csv", "read_metrics_csv", "plot_curves"]

METRICS = "metrics.csv"
ITERATIONS = "iterations.csv"
CURVES = "curves.png"
COLUMNS = ["epoch", "iteration", "train_loss", "train_err", "val_err", "test_loss", "test_err",
           "test_top5_err", "lr", "seconds"]
ITER_COLUMNS = ["iteration", "epoch", "loss", "err", "lr"]


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_metrics_csv(rows, path) -> None:
    """Write the per-epoch rows (dicts) to ``path`` atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in COLUMNS])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def write_iterations_csv(rows, path) -> None:
    """Write the per-iteration training loss / error / lr to ``path`` atomically."""
    buf = io.StringIO()
    buf.write(",".join(ITER_COLUMNS) + "\n")
    for it, ep, loss, err, lr in rows:
        buf.write(f"{int(it)},{int(ep)},{loss:.6g},{err:.6g},{lr:.6g}\n")
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_metrics_csv(path) -> list:
    """Rows of a metrics.csv as dicts of floats (None for empty cells)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def plot_curves(rows, path, title="") -> None:
    """Training (dashed) and test (bold) error per epoch, like ResNet Fig. 6;
    beside it the losses and the learning rate."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    ep = [r["epoch"] for r in rows]

    def col(name, scale=100):
        return [np.nan if r.get(name) is None else scale * r[name] for r in rows]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot(ep, col("train_err"), "--", marker=".", label="train error")
    ax.plot(ep, col("test_err"), "-", lw=2, marker="o", ms=3, label="test error")
    if any(r.get("val_err") is not None for r in rows):
        ax.plot(ep, col("val_err"), ":", marker=".", label="val error")
    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
    ax.set_ylabel("error (%)")
    ax.legend()
    ax.set_title(title)
    ax2.plot(ep, col("train_loss", 1), marker=".", label="train loss")
    ax2.plot(ep, col("test_loss", 1), marker=".", label="test loss")
    ax2.set_ylabel("cross-entropy")
    ax3 = ax2.twinx()
    ax3.plot(ep, [r["lr"] for r in rows], color="gray", alpha=0.5, lw=1, marker=".")
    ax3.set_yscale("log")
    ax3.set_ylabel("learning rate (gray)")
    ax2.legend(loc="upper right")
    fig.subplots_adjust(left=0.07, right=0.92, bottom=0.13, top=0.92, wspace=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
