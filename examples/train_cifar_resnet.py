#!/usr/bin/env python
"""Train a CIFAR-10 ResNet (or plain net, or CIFAR VGG) with minigrad.

    python examples/train_cifar_resnet.py                       # ResNet-20, 10 epochs
    python examples/train_cifar_resnet.py --model resnet56 --schedule paper
    python examples/train_cifar_resnet.py --data-dir ~/data/cifar-10-batches-py --epochs 30
    python examples/train_cifar_resnet.py --resume runs/resnet20-20260101-120000
    mpiexec -n 2 python examples/train_cifar_resnet.py    # 2 processes, each half of a batch

Progress bars, one evaluation per epoch (top-1 / top-5 error), metrics.csv,
curves.png and checkpoint.npz in the run folder; Ctrl-C saves a checkpoint
that --resume continues exactly.  All the logic is in minigrad/training/
(the loop itself: minigrad/training/loop.py); docs/training.md explains
every option and file, docs/distributed.md the run on several processes.
"""
import sys

from minigrad.training import main

if __name__ == "__main__":
    sys.exit(main())
