"""Neural-network layers (``minigrad.nn``), with PyTorch's names.

* :mod:`minigrad.nn.module`: ``Parameter`` and ``Module`` (registration of
  parameters, buffers and sub-modules; ``state_dict``; ``train``/``eval``; hooks)
* :mod:`minigrad.nn.container`: ``Sequential``, ``ModuleList``
* :mod:`minigrad.nn.layers`: ``Conv2d``, ``Linear``, ``BatchNorm1d/2d``,
  ``LocalResponseNorm``, pooling, ``ReLU``, ``Dropout``, ``Flatten``,
  ``Identity``, ``CrossEntropyLoss``; ``bn_relu`` (a batch norm and the ReLU
  after it, with a residual added in between, as one fused op where no hook
  watches them)
* :mod:`minigrad.nn.sync_batchnorm`: ``SyncBatchNorm`` (batch statistics over all ranks)
* :mod:`minigrad.nn.parallel`: ``DistributedDataParallel`` (gradients averaged over ranks)
* :mod:`minigrad.nn.functional`: the same operations as functions (``F.conv2d``...)
* :mod:`minigrad.nn.init`: weight initialisation (He, Glorot, ...)
"""
from . import functional, init
from .container import ModuleList, Sequential
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
                     CrossEntropyLoss, Dropout, Flatten, Identity, Linear, LocalResponseNorm,
                     MaxPool2d, ReLU, bn_relu)
from .module import Module, Parameter, RemovableHandle
from .sync_batchnorm import SyncBatchNorm
from . import parallel

__all__ = [
    "functional", "init", "Module", "Parameter", "RemovableHandle", "Sequential", "ModuleList",
    "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "LocalResponseNorm", "MaxPool2d",
    "AvgPool2d", "AdaptiveAvgPool2d", "ReLU", "Dropout", "Flatten", "Identity",
    "CrossEntropyLoss", "SyncBatchNorm", "parallel", "bn_relu",
]
