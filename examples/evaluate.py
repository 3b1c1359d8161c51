#!/usr/bin/env python
"""Evaluate a run saved by train_cifar_resnet.py: top-1 and top-5 error.

    python examples/evaluate.py runs/resnet20-20260101-120000          # single view
    python examples/evaluate.py runs/.../checkpoint.npz --flip         # image + mirror
    python examples/evaluate.py runs/... --ten-crop                    # 10 views
    python examples/evaluate.py runs/vgg11 --dense --dense-scale 48    # VGG dense eval

The model is rebuilt from the arguments stored in the checkpoint; the data
from the same place (or --data-dir).  --ten-crop pads the 32x32 image by 4
pixels and averages the soft-max over its 4 corner crops, the centre crop
(the image itself) and the mirror images of all five.
"""
import argparse
import sys

from minigrad.training import evaluate_checkpoint
from minigrad.training.cli import positive_int, report_error


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="run folder or checkpoint.npz")
    p.add_argument("--split", choices=("test", "val", "train"), default="test")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--flip", action="store_true", help="average with the mirror image")
    g.add_argument("--ten-crop", action="store_true", help="average over 10 crops")
    g.add_argument("--dense", action="store_true", help="VGG dense evaluation (with flips)")
    p.add_argument("--dense-scale", type=positive_int, default=None,
                   help="--dense: rescale the images to this size first (VGG's Q)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = p.parse_args(argv)
    try:
        r = evaluate_checkpoint(args.checkpoint, args.split, args.flip, args.ten_crop, args.dense,
                                args.dense_scale, args.data_dir, args.batch_size, args.device)
    except Exception as exc:              # one error line for what a user can fix
        code = report_error(exc)
        if code is None:
            raise
        return code
    note = "  [SYNTHETIC data, not CIFAR-10]" if r["synthetic"] else ""
    print(f"{r['model']} after {r['epochs']} epochs, {r['dataset']} {r['split']} "
          f"({r['n']} images), {r['method']}: top-1 error {r['top1_err']:.2%}, "
          f"top-5 error {r['top5_err']:.2%}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
