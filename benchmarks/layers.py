"""Where a training step's convolution time goes, layer by layer, beside PyTorch.

    python -m benchmarks.layers                          # ResNet-20, batch 128, 2 threads
    python -m benchmarks.layers --model vgg16_cifar --runs 20
    python -m benchmarks.layers --model resnet56 --out layers.md

Each distinct convolution of the model (its input shape, output channels and
stride; how many layers of the network have it) is timed alone at the batch
size, on random data: the forward, the backward as a training step runs it
(dx, dW and db in one call, no dx for the first layer) and, apart, dx alone
and dW (+ db) alone.  minigrad's CPU kernels are called as the autograd
function calls them, and the table names the kernels each part takes
(``conv2d_routes``); PyTorch's side is ``torch.nn.functional.conv2d`` and
``torch.ops.aten.convolution_backward`` with the same parts asked for.  The
calls alternate as in ``python -m benchmarks`` (a pause, then untimed calls
of the same function, then the timed one), float32, NCHW; medians in ms.  The
last rows add the layers up, each times the number of layers that have it.

This is a tool for reading, not a result: ``python -m benchmarks`` times the
whole training steps whose ratios docs/benchmarks.md reports.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.run import REPO, _early_threads

if __name__ in ("__main__", "benchmarks.layers"):
    _early_threads(sys.argv)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

import minigrad  # noqa: E402
from benchmarks.run import BATCH, cpu_model, timeit, timeit_pair  # noqa: E402
from minigrad import config  # noqa: E402
from minigrad.kernels import cpu_numba as K  # noqa: E402

try:
    import torch  # noqa: E402
except ImportError:          # the PyTorch columns are left out
    torch = None


def conv_layers(name, batch=BATCH):
    """The distinct convolutions of model ``name`` in the order a forward pass
    meets them: dicts of the input shape, weight shape, stride, padding,
    whether there is a bias and a dx to compute, and how many layers have it."""
    model = minigrad.models.create(name)
    seen = {}

    def hook(mod, inputs, out):
        x = inputs[0]
        key = (tuple(x.shape), tuple(mod.weight.shape), tuple(mod.stride), tuple(mod.padding),
               mod.bias is not None, bool(x.requires_grad))
        seen[key] = seen.get(key, 0) + 1
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, minigrad.nn.Conv2d)]
    # requires_grad on the parameters only: the image needs no gradient, as in training
    model(minigrad.Tensor(np.zeros((batch, 3, 32, 32), np.float32)))
    for h in handles:
        h.remove()
    return [dict(x=k[0], w=k[1], stride=k[2], padding=k[3], bias=k[4], need_x=k[5], count=n)
            for k, n in seen.items()]


def _parts(layer, rng):
    """{part: (minigrad function, PyTorch function or None)} for one layer."""
    x = rng.standard_normal(layer["x"]).astype(np.float32)
    w = (rng.standard_normal(layer["w"]) / np.sqrt(np.prod(layer["w"][1:]))).astype(np.float32)
    b = rng.standard_normal(layer["w"][0]).astype(np.float32) if layer["bias"] else None
    s, p, need_x = layer["stride"], layer["padding"], layer["need_x"]
    y = K.conv2d_forward(x, w, b, s, p)
    g = rng.standard_normal(y.shape).astype(np.float32)
    need_b = b is not None
    mg = {
        "fwd": lambda: K.conv2d_forward(x, w, b, s, p),
        "bwd": lambda: K.conv2d_backward(x, w, g, s, p, need_x, True, need_b),
        "dx": lambda: K.conv2d_backward(x, w, g, s, p, True, False, False),
        "dW": lambda: K.conv2d_backward(x, w, g, s, p, False, True, need_b),
    }
    if torch is None:
        return {k: (f, None) for k, f in mg.items()}
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
    tb = torch.from_numpy(b) if need_b else None
    bias_sizes = [w.shape[0]] if need_b else None

    def t_bwd(mask):
        return lambda: torch.ops.aten.convolution_backward(
            tg, tx, tw, bias_sizes, list(s), list(p), [1, 1], False, [0, 0], 1, mask)
    pt = {
        "fwd": lambda: torch.nn.functional.conv2d(tx, tw, tb, s, p),
        "bwd": t_bwd([need_x, True, need_b]),
        "dx": t_bwd([True, False, False]),
        "dW": t_bwd([False, True, need_b]),
    }
    return {k: (mg[k], pt[k]) for k in mg}


PARTS = ("fwd", "bwd", "dx", "dW")


def measure(name, runs, rng):
    """[(layer, {part: (minigrad median ms, PyTorch median ms or None)})]."""
    out = []
    for layer in conv_layers(name):
        times = {}
        for part, (fa, fb) in _parts(layer, rng).items():
            if part == "dx" and not layer["need_x"]:
                continue
            if fb is None:
                times[part] = (timeit(fa, runs)[0], None)
            else:
                a, b = timeit_pair(fa, fb, runs)
                times[part] = (a[0], b[0])
        out.append((layer, times))
        print(_row(layer, times), flush=True)
    return out


def _shape(layer):
    n, c, h, w = layer["x"]
    k = layer["w"][0]
    kh, kw = layer["w"][2:]
    stride = f", stride {layer['stride'][0]}" if layer["stride"] != (1, 1) else ""
    size = "" if (kh, kw) == (3, 3) else f" {kh}x{kw}"
    return f"{c} -> {k}{size} on {h}x{w}{stride}"


def _cell(t):
    mg, pt = t
    return f"{mg:.2f}" if pt is None else f"{mg:.2f} / {pt:.2f} ({mg / pt:.2f}x)"


def _row(layer, times):
    x = np.empty(layer["x"], np.float32)
    w = np.empty(layer["w"], np.float32)
    fwd, dx, dw = K.conv2d_routes(x, w, layer["stride"], layer["padding"], layer["need_x"])
    routes = fwd if dx in (fwd, None) and dw == fwd else f"{fwd}; dx {dx or '-'}; dW {dw}"
    cells = [_shape(layer), str(layer["count"]), routes]
    cells += [_cell(times[p]) if p in times else "-" for p in PARTS]
    return "| " + " | ".join(cells) + " |"


def table(name, results, threads):
    with_torch = torch is not None
    unit = "minigrad / PyTorch ms (ratio)" if with_torch else "minigrad ms"
    lines = [f"{name}, batch {BATCH}, {threads} threads, {cpu_model()}; medians, {unit}", "",
             "| layer | layers | kernels | forward | backward (as trained) | dx alone | "
             "dW + db alone |", "|---|---|---|---|---|---|---|"]
    lines += [_row(layer, times) for layer, times in results]
    tot = {}
    for layer, times in results:
        for p, (mg, pt) in times.items():
            a, b = tot.get(p, (0.0, 0.0))
            tot[p] = (a + layer["count"] * mg, None if pt is None else b + layer["count"] * pt)
    total = sum(layer["count"] for layer, _ in results)
    cells = ["all, times their number", str(total), ""]
    cells += [_cell(tot[p]) if p in tot else "-" for p in PARTS]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20", choices=minigrad.models.list_models(),
                   metavar="NAME", help="a model of minigrad.models.list_models() "
                   "(default resnet20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30, help="timed calls of each part")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if torch is not None:
        torch.set_num_threads(args.threads)
    config.set_num_threads(min(args.threads, config.get_num_threads()))
    results = measure(args.model, args.runs, np.random.default_rng(0))
    text = table(args.model, results, args.threads)
    print()
    print(text)
    if args.out:                        # written whole or not at all
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
