"""Residual networks and their plain twins (He, Zhang, Ren & Sun 2016).

A residual block computes ``y = relu(F(x) + shortcut(x))`` where ``F`` is a
small stack of conv → BN (→ ReLU) layers.  A *plain* block is the same stack
without the addition: ``y = relu(F(x))``.  Everything else is shared, so a
plain net and its ResNet have the same layers and the same parameter count
(with parameter-free shortcuts).

Shortcut options (Sec 3.3), chosen with ``shortcut=``:

* ``"A"``: identity; where the block changes the shape, take every
  ``stride``-th pixel and append zero channels (:class:`ZeroPadShortcut`).
  No parameters anywhere.  The CIFAR nets' default.
* ``"B"``: identity, and a projection (1×1 conv with the block's stride, then
  BN) only where the shape changes.  The ImageNet nets' default.
* ``"C"``: a projection on every block.

Building blocks:

* :class:`BasicBlock`: 3×3 conv, BN, ReLU, 3×3 conv, BN (ResNet-18/34, CIFAR);
* :class:`Bottleneck`: 1×1 conv (C), 3×3 conv (C), 1×1 conv (4C), each with
  BN; the stride-2 subsampling sits in the FIRST 1×1 conv, as in the paper
  (PyTorch's torchvision moved it to the 3×3 conv).

**Reading the residual response (Fig. 7).**  The last BN of a block's
residual branch is ``block.bn2`` (BasicBlock) or ``block.bn3`` (Bottleneck),
also reachable as ``block.last_bn``; its output is the response "after BN,
before the addition".  A forward hook on it records it::

    stds = []
    for block in net.blocks():
        block.last_bn.register_forward_hook(lambda m, inp, out: stds.append(out.numpy().std()))

Layer names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``fc``), except that the shortcut is called ``shortcut`` and the two ReLUs
of a block ``relu1`` (inside F) and ``relu2`` (after the addition).
"""
from __future__ import annotations

from .. import nn
from ..nn import functional as F
from .initialization import check_scheme, init_weights, skip_layer_init
from .registry import register

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "ZeroPadShortcut", "resnet18", "resnet34",
           "resnet50", "resnet101", "resnet152", "plain18", "plain34", "resnet20", "resnet32",
           "resnet44", "resnet56", "resnet110", "resnet1202", "plain20", "plain32", "plain44",
           "plain56", "plain110"]

SHORTCUTS = ("A", "B", "C")


class ZeroPadShortcut(nn.Module):
    """Option A: the parameter-free shortcut for a block that changes shape.

    Takes every ``stride``-th pixel (x[:, :, ::s, ::s]) and appends
    ``out_channels − in_channels`` channels of zeros, so the first
    ``in_channels`` channels of the block's output carry x unchanged.
    """

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut: cannot shrink {in_channels} channels to "
                             f"{out_channels} without parameters")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"

    def forward(self, x):
        if self.stride == 1 and self.out_channels == self.in_channels:
            return x
        return F.subsample_pad(x, self.stride, self.out_channels - self.in_channels)


def _conv(cin, cout, k, stride=1):
    """Conv without bias (the BN after it has a shift), "same" padding."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


def _make_shortcut(kind, cin, cout, stride):
    """The shortcut module of one block, or None for a plain block."""
    if kind is None:
        return None
    changes_shape = stride != 1 or cin != cout
    if kind == "C" or (kind == "B" and changes_shape):
        return nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
    if kind == "A" and changes_shape:
        return ZeroPadShortcut(cin, cout, stride)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3×3 convs: ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))``.

    ``shortcut``: ``"A"``, ``"B"``, ``"C"`` or ``None`` (plain block).
    """

    expansion = 1

    def __init__(self, in_channels, channels, stride=1, shortcut="B"):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 3, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv(channels, out, 3)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = _make_shortcut(shortcut, in_channels, out, stride)
        self.relu2 = nn.ReLU()

    @property
    def last_bn(self):
        """The BN whose output is the residual response F(x) (Fig. 7)."""
        return self.bn2

    def forward(self, x):
        # relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x)); nn.bn_relu runs
        # each BN with the ReLU (and the addition) after it as one op where no
        # hook watches them
        h = self.conv2(nn.bn_relu(self.bn1, self.relu1, self.conv1(x)))
        s = self.shortcut(x) if self.shortcut is not None else None
        return nn.bn_relu(self.bn2, self.relu2, h, s)


class Bottleneck(nn.Module):
    """1×1 (reduce, with the stride), 3×3, 1×1 (expand ×4), each followed by BN:
    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``."""

    expansion = 4

    def __init__(self, in_channels, channels, stride=1, shortcut="B"):
        super().__init__()
        out = channels * self.expansion
        self.conv1 = _conv(in_channels, channels, 1, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv(channels, channels, 3)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = _conv(channels, out, 1)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = _make_shortcut(shortcut, in_channels, out, stride)
        self.relu3 = nn.ReLU()

    @property
    def last_bn(self):
        """The BN whose output is the residual response F(x) (Fig. 7)."""
        return self.bn3

    def forward(self, x):
        # the docstring's formula, each BN + ReLU (+ addition) one op (nn.bn_relu)
        h = self.conv2(nn.bn_relu(self.bn1, self.relu1, self.conv1(x)))
        h = self.conv3(nn.bn_relu(self.bn2, self.relu2, h))
        s = self.shortcut(x) if self.shortcut is not None else None
        return nn.bn_relu(self.bn3, self.relu3, h, s)


class ResNet(nn.Module):
    """``ResNet(block, blocks_per_stage, num_classes, ...)``.

    * ``block``: :class:`BasicBlock` or :class:`Bottleneck`;
    * ``blocks_per_stage``: e.g. (2, 2, 2, 2) for ResNet-18, (3, 3, 3) for
      ResNet-20;
    * ``widths``: channels of each stage, e.g. (64, 128, 256, 512) or
      (16, 32, 64); the first block of every stage but the first has stride 2;
    * ``stem``: ``"imagenet"`` (7×7/2 conv with 64 channels, BN, ReLU,
      3×3/2 max-pool) or ``"cifar"`` (3×3 conv with ``widths[0]`` channels,
      BN, ReLU);
    * ``shortcut``: ``"A"``, ``"B"``, ``"C"``, or ``None`` for the plain net;
    * ``init``: ``"he"`` (default: He normal with fan_in for every conv and
      the FC layer, biases 0, BN γ=1 β=0) or another scheme of
      :mod:`minigrad.models.initialization`.

    Then global average pooling and ``fc``, a Linear to ``num_classes``.
    """

    def __init__(self, block, blocks_per_stage, num_classes=1000, *, widths=(64, 128, 256, 512),
                 stem="imagenet", shortcut="B", init="he", name=None):
        super().__init__()
        scheme = check_scheme(init, "ResNet")
        if shortcut not in SHORTCUTS + (None,):
            raise ValueError(f"ResNet: shortcut must be 'A', 'B', 'C' or None (plain), "
                             f"got {shortcut!r}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet: stem must be 'imagenet' or 'cifar', got {stem!r}")
        blocks_per_stage, widths = tuple(blocks_per_stage), tuple(widths)
        if len(blocks_per_stage) != len(widths) or not all(
                isinstance(n, int) and n > 0 for n in blocks_per_stage + widths):
            raise ValueError(f"ResNet: blocks_per_stage {blocks_per_stage} and widths {widths} "
                             "must be positive integers, one of each per stage")
        self.name = name or "ResNet"
        self.shortcut_type = shortcut
        with skip_layer_init():
            if stem == "imagenet":
                channels = 64
                self.conv1 = nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False)
                self.bn1 = nn.BatchNorm2d(channels)
                self.relu = nn.ReLU()
                self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            else:
                channels = widths[0]
                self.conv1 = _conv(3, channels, 3)
                self.bn1 = nn.BatchNorm2d(channels)
                self.relu = nn.ReLU()
            self.stages = []                 # names of the stage Sequentials
            for s, (n, width) in enumerate(zip(blocks_per_stage, widths), start=1):
                stride = 1 if s == 1 else 2
                blocks = []
                for b in range(n):
                    blocks.append(block(channels, width, stride if b == 0 else 1, shortcut))
                    channels = width * block.expansion
                setattr(self, f"layer{s}", nn.Sequential(*blocks))
                self.stages.append(f"layer{s}")
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten(1)
            self.fc = nn.Linear(channels, num_classes)
        init_weights(self, scheme)

    def blocks(self):
        """Every residual (or plain) block, in order."""
        return [b for name in self.stages for b in getattr(self, name)]

    def forward(self, x):
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected images (N, 3, H, W), got shape {shape}")
        x = nn.bn_relu(self.bn1, self.relu, self.conv1(x))     # relu(bn1(conv1(x)))
        if "maxpool" in self._modules:
            x = self.maxpool(x)
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc(self.flatten(self.avgpool(x)))

    def extra_repr(self):
        return f"shortcut={self.shortcut_type!r}"


# ---------------------------------------------------------------------------
# ImageNet (Table 1): 224×224 images, four stages of 64..512 channels
# ---------------------------------------------------------------------------
_IMAGENET = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
             50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
             152: (Bottleneck, (3, 8, 36, 3))}


def _imagenet(depth, name, num_classes, shortcut, init, width=64, blocks_per_stage=None):
    block, layers = _IMAGENET[depth]
    return ResNet(block, blocks_per_stage or layers, num_classes,
                  widths=tuple(width * 2 ** i for i in range(4)), stem="imagenet",
                  shortcut=shortcut, init=init, name=name)


def _make_imagenet(depth, plain=False):
    name = f"{'plain' if plain else 'resnet'}{depth}"
    block = _IMAGENET[depth][0].__name__

    def builder(num_classes=1000, shortcut="B", init="he", width=64, blocks_per_stage=None):
        return _imagenet(depth, name, num_classes, None if plain else shortcut, init,
                         width, blocks_per_stage)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{'Plain' if plain else 'Residual'} {depth}-layer ImageNet net "
                       f"({block}s, ResNet Table 1)"
                       + ("; no shortcuts." if plain else "; shortcut option 'B' by default."))
    paper = f"ResNet Table 1, {depth}-layer" + (" plain" if plain else "")
    return register(name, family="plain" if plain else "resnet", dataset="imagenet",
                    paper=paper)(builder)


# ---------------------------------------------------------------------------
# CIFAR-10 (Sec 4.2): 6n+2 layers, three stages of 16, 32, 64 channels
# ---------------------------------------------------------------------------
def _make_cifar(depth, plain=False):
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    name = f"{'plain' if plain else 'resnet'}{depth}"

    def builder(num_classes=10, shortcut="A", init="he", width=16, blocks_per_stage=None):
        per_stage = n if blocks_per_stage is None else blocks_per_stage
        return ResNet(BasicBlock, (per_stage,) * 3, num_classes,
                      widths=(width, 2 * width, 4 * width), stem="cifar",
                      shortcut=None if plain else shortcut, init=init, name=name)
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"{'Plain' if plain else 'Residual'} {depth}-layer CIFAR-10 net "
                       f"(n={n}, ResNet Sec 4.2)"
                       + ("; no shortcuts." if plain else "; shortcut option 'A' by default.")
                       + " ``width``: channels of stage 1 (16; the stages have width, "
                       "2·width, 4·width); ``blocks_per_stage``: overrides n (tiny test nets).")
    paper = f"ResNet Sec 4.2, {depth} layers (n={n})" + (" plain" if plain else "")
    return register(name, family="plain" if plain else "resnet", dataset="cifar",
                    paper=paper)(builder)


resnet18 = _make_imagenet(18)
resnet34 = _make_imagenet(34)
resnet50 = _make_imagenet(50)
resnet101 = _make_imagenet(101)
resnet152 = _make_imagenet(152)
plain18 = _make_imagenet(18, plain=True)
plain34 = _make_imagenet(34, plain=True)

resnet20 = _make_cifar(20)
resnet32 = _make_cifar(32)
resnet44 = _make_cifar(44)
resnet56 = _make_cifar(56)
resnet110 = _make_cifar(110)
resnet1202 = _make_cifar(1202)
plain20 = _make_cifar(20, plain=True)
plain32 = _make_cifar(32, plain=True)
plain44 = _make_cifar(44, plain=True)
plain56 = _make_cifar(56, plain=True)
plain110 = _make_cifar(110, plain=True)
