"""The networks of the VGG and ResNet papers (``minigrad.models``).

    import minigrad.models as models
    models.list_models()                  # every registered name
    net = models.create("resnet20")       # CIFAR-10 ResNet-20 (option A shortcuts)
    print(models.summary(net, (3, 32, 32)))

* :mod:`~minigrad.models.vgg`: VGG A, A-LRN, B, C, D, E for ImageNet
  (``vgg11`` ... ``vgg19``) and CIFAR-10 (``vgg11_cifar`` ...), and
  :func:`init_from` (start a deeper VGG from net A, Sec 3.1);
* :mod:`~minigrad.models.resnet`: ResNet-18/34/50/101/152 and plain-18/34
  (ImageNet), ResNet-20/32/44/56/110/1202 and plain-20...110 (CIFAR-10),
  shortcut options A, B, C;
* :mod:`~minigrad.models.dense`: dense (fully convolutional) evaluation of a
  VGG (Sec 3.2);
* :mod:`~minigrad.models.summary`: per-layer table of shapes, parameters,
  multiply-adds and receptive fields;
* :mod:`~minigrad.models.initialization`: the ``init=`` schemes;
* :mod:`~minigrad.models.registry`: ``create``, ``list_models``, ``register``.
"""
from .registry import ModelInfo, create, list_models, model_info, register
from .initialization import init_weights
from .vgg import (VGG, CONFIGS, init_from, vgg11, vgg11_lrn, vgg13, vgg16, vgg16_1x1, vgg19,
                  vgg11_cifar, vgg13_cifar, vgg16_cifar, vgg19_cifar)
from .resnet import (ResNet, BasicBlock, Bottleneck, ZeroPadShortcut, resnet18, resnet34,
                     resnet50, resnet101, resnet152, plain18, plain34, resnet20, resnet32,
                     resnet44, resnet56, resnet110, resnet1202, plain20, plain32, plain44,
                     plain56, plain110)
from .dense import DenseVGG, dense_predict, to_fully_convolutional
from .summary import LayerRow, ModelSummary, summary

__all__ = [
    "create", "list_models", "model_info", "register", "ModelInfo", "init_weights",
    "VGG", "CONFIGS", "init_from", "vgg11", "vgg11_lrn", "vgg13", "vgg16_1x1", "vgg16", "vgg19",
    "vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar",
    "ResNet", "BasicBlock", "Bottleneck", "ZeroPadShortcut",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34",
    "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
    "plain20", "plain32", "plain44", "plain56", "plain110",
    "DenseVGG", "to_fully_convolutional", "dense_predict",
    "summary", "ModelSummary", "LayerRow",
]
