"""VGG networks (Simonyan & Zisserman 2015), for ImageNet and CIFAR-10.

A VGG is a stack of 3×3 convolutions (stride 1, padding 1, so the resolution is
kept), each followed by a ReLU, cut into five stages by 2×2/2 max-pools; the
width starts at 64 and doubles after each pool up to 512.  On ImageNet three
fully connected layers follow: FC-4096, FC-4096, FC-1000 (dropout 0.5 after the
first two).  Table 1 of the paper, as written there::

    A      conv3-64 | conv3-128 | conv3-256 ×2 | conv3-512 ×2 | conv3-512 ×2
    A-LRN  like A with LRN after the first conv
    B      two convs in every stage
    C      like B plus a conv1 (1×1) at the end of stages 3, 4, 5
    D      conv3 ×2, ×2, ×3, ×3, ×3                         (VGG-16)
    E      conv3 ×2, ×2, ×4, ×4, ×4                         (VGG-19)

Layer names follow the paper's (and Caffe's) convention, so a state dict reads
like the table: ``features.conv3_2.weight`` is the second conv of stage 3,
``classifier.fc6.weight`` the first fully connected layer.

The ImageNet nets take 224×224 images: five pools leave a 7×7×512 map, which
``fc6`` flattens.  For larger images convert the net with
:func:`minigrad.models.to_fully_convolutional` (dense evaluation, Sec 3.2).

CIFAR-10 variants (32×32 input, five pools leave 1×1×512) keep the conv stack,
add batch normalisation after every conv by default (``batch_norm=True``;
VGG without it is hard to train from scratch on CIFAR) and replace the three
FC layers by one ``Linear(512, num_classes)`` (or 512 → ``hidden`` →
num_classes with ``hidden=``).
"""
from __future__ import annotations

from collections import OrderedDict

from .. import nn
from .initialization import check_scheme, init_weights, skip_layer_init
from .registry import register

__all__ = ["VGG", "CONFIGS", "init_from", "vgg11", "vgg11_lrn", "vgg13", "vgg16_1x1", "vgg16",
           "vgg19", "vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar"]

# Table 1, one list per stage; "conv3-256" = 3×3 conv with 256 channels.
CONFIGS = {
    "A": [["conv3-64"], ["conv3-128"], ["conv3-256"] * 2, ["conv3-512"] * 2, ["conv3-512"] * 2],
    "B": [["conv3-64"] * 2, ["conv3-128"] * 2, ["conv3-256"] * 2, ["conv3-512"] * 2,
          ["conv3-512"] * 2],
    "C": [["conv3-64"] * 2, ["conv3-128"] * 2, ["conv3-256"] * 2 + ["conv1-256"],
          ["conv3-512"] * 2 + ["conv1-512"], ["conv3-512"] * 2 + ["conv1-512"]],
    "D": [["conv3-64"] * 2, ["conv3-128"] * 2, ["conv3-256"] * 3, ["conv3-512"] * 3,
          ["conv3-512"] * 3],
    "E": [["conv3-64"] * 2, ["conv3-128"] * 2, ["conv3-256"] * 4, ["conv3-512"] * 4,
          ["conv3-512"] * 4],
}


def _parse(layer: str):
    """``"conv3-256"`` -> (kernel 3, channels 256)."""
    kind, channels = layer.split("-")
    return int(kind[len("conv"):]), int(channels)


class VGG(nn.Module):
    """``VGG(config, num_classes=1000, ...)``: one configuration of Table 1.

    Arguments (all keyword-only after ``num_classes``):

    * ``config``: ``"A"``, ``"B"``, ``"C"``, ``"D"`` or ``"E"`` (or a list of
      stages like ``CONFIGS`` holds);
    * ``lrn``: add local response normalisation after the first conv's ReLU
      (A-LRN; size 5, alpha 1e-4, beta 0.75, k 2, the paper's form);
    * ``batch_norm``: BatchNorm2d after every conv, before its ReLU (the conv
      then has no bias, BN's β replaces it);
    * ``image_size``: 224 (ImageNet) or 32 (CIFAR); sets the size of the map
      ``fc6`` flattens: image_size / 32;
    * ``hidden``: width of the two hidden FC layers (4096); ``None`` gives a
      single ``Linear`` classifier (the CIFAR variants);
    * ``dropout``: probability on the two hidden FC layers (0.5);
    * ``width``: channels of stage 1 (64); every stage scales with it, so
      ``width=8`` builds an 8× thinner net with the same layout (for tests);
    * ``init``: ``"he"`` (default), ``"glorot"``, ``"paper"``, ``"torch"``,
      ``"zeros"`` or ``None``; see :mod:`minigrad.models.initialization`.
    """

    def __init__(self, config="D", num_classes=1000, *, lrn=False, batch_norm=False,
                 image_size=224, hidden=4096, dropout=0.5, width=64, init="he", name=None):
        super().__init__()
        scheme = check_scheme(init, "VGG")
        stages = CONFIGS[config] if isinstance(config, str) and config in CONFIGS else config
        if not isinstance(stages, (list, tuple)) or not stages:
            raise ValueError(f"VGG: config must be one of {sorted(CONFIGS)} or a list of stages, "
                             f"got {config!r}")
        if image_size % 2 ** len(stages):
            raise ValueError(f"VGG: image_size {image_size} is not divisible by "
                             f"2^{len(stages)} (one 2×2 pool per stage)")
        if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
            raise ValueError(f"VGG: width must be a positive integer, got {width!r}")
        self.config = config if isinstance(config, str) else "custom"
        self.name = name or f"VGG-{self.config}"
        self.image_size = image_size
        self.map_size = image_size // 2 ** len(stages)     # 7 for 224, 1 for 32

        with skip_layer_init():
            layers = OrderedDict()
            channels = 3
            for s, stage in enumerate(stages, start=1):
                for i, layer in enumerate(stage, start=1):
                    k, out = _parse(layer)
                    out = max(1, out * width // 64)
                    tag = f"{s}_{i}"
                    layers[f"conv{tag}"] = nn.Conv2d(channels, out, k, padding=k // 2,
                                                     bias=not batch_norm)
                    if batch_norm:
                        layers[f"bn{tag}"] = nn.BatchNorm2d(out)
                    layers[f"relu{tag}"] = nn.ReLU()
                    if lrn and s == 1 and i == 1:
                        layers["lrn1"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
                    channels = out
                layers[f"pool{s}"] = nn.MaxPool2d(2, 2)
            self.features = nn.Sequential(layers)
            self.feature_channels = channels
            self.flatten = nn.Flatten(1)

            flat = channels * self.map_size ** 2
            if hidden is None:
                head = OrderedDict(fc=nn.Linear(flat, num_classes))
            else:
                head = OrderedDict([
                    ("fc6", nn.Linear(flat, hidden)), ("relu6", nn.ReLU()),
                    ("drop6", nn.Dropout(dropout)),
                    ("fc7", nn.Linear(hidden, hidden)), ("relu7", nn.ReLU()),
                    ("drop7", nn.Dropout(dropout)),
                    ("fc8", nn.Linear(hidden, num_classes)),
                ])
            self.classifier = nn.Sequential(head)
        init_weights(self, scheme)

    def forward(self, x):
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"{self.name}: expected images (N, 3, H, W), got shape {shape}")
        x = self.features(x)
        if tuple(x.shape[2:]) != (self.map_size, self.map_size):
            lo = self.map_size * 32
            raise ValueError(
                f"{self.name}: the classifier needs a {self.map_size}x{self.map_size} feature map, "
                f"i.e. {self.image_size}x{self.image_size} images ({lo} to {lo + 31} pixels a "
                f"side); got {shape[2]}x{shape[3]} images -> a {x.shape[2]}x{x.shape[3]} map. "
                "For larger images use minigrad.models.to_fully_convolutional(model).")
        return self.classifier(self.flatten(x))

    def extra_repr(self):
        return f"config={self.config!r}, image_size={self.image_size}"


# ---------------------------------------------------------------------------
# Initialising a deeper net from net A (Sec 3.1)
# ---------------------------------------------------------------------------
def init_from(deeper: VGG, shallower: VGG, num_conv: int = 4, num_fc: int = 3) -> list:
    """Copy the first ``num_conv`` conv layers and the last ``num_fc`` FC layers
    of a trained ``shallower`` VGG (net A) into ``deeper`` (in place), as VGG
    Sec 3.1 starts B–E; the other layers keep their random initialisation.

    A conv layer goes to the layer with the same position in the deeper net:
    A's first four convs are conv1_1 (3→64), conv2_1 (64→128), conv3_1
    (128→256) and conv3_2 (256→256), and every deeper configuration has those
    four layers with those shapes.  FC layers are matched from the end
    (fc6, fc7, fc8).

    Returns the names of the copied parameters of ``deeper``.  Raises
    ValueError, copying nothing, when a layer is missing or shapes differ.
    """
    for who, net in (("deeper", deeper), ("shallower", shallower)):
        if not isinstance(net, VGG):
            raise TypeError(f"init_from: {who} must be a VGG, got {type(net).__name__}")
    pairs = []          # (name in deeper, source layer, target layer)
    problems = []
    deep_layers = dict(deeper.features.named_children())
    convs = [(n, m) for n, m in shallower.features.named_children() if isinstance(m, nn.Conv2d)]
    if len(convs) < num_conv:
        problems.append(f"{shallower.name} has only {len(convs)} conv layers, {num_conv} asked")
    for name, src in convs[:num_conv]:
        dst = deep_layers.get(name)
        if not isinstance(dst, nn.Conv2d):
            problems.append(f"{deeper.name} has no conv layer {name!r}")
        else:
            pairs.append((f"features.{name}", src, dst))
    deep_fc = [(n, m) for n, m in deeper.classifier.named_children() if isinstance(m, nn.Linear)]
    shallow_fc = [(n, m) for n, m in shallower.classifier.named_children()
                  if isinstance(m, nn.Linear)]
    if min(len(deep_fc), len(shallow_fc)) < num_fc:
        problems.append(f"need {num_fc} FC layers in both nets, got {len(shallow_fc)} in "
                        f"{shallower.name} and {len(deep_fc)} in {deeper.name}")
    else:
        for (name, dst), (_, src) in zip(deep_fc[-num_fc:], shallow_fc[-num_fc:]):
            pairs.append((f"classifier.{name}", src, dst))

    copies = []
    for prefix, src, dst in pairs:
        for pname in ("weight", "bias"):
            s, d = getattr(src, pname), getattr(dst, pname)
            if (s is None) != (d is None):
                problems.append(f"{prefix}.{pname}: present in only one of the two nets")
            elif s is not None and tuple(s.shape) != tuple(d.shape):
                problems.append(f"{prefix}.{pname}: shape {tuple(s.shape)} in {shallower.name} "
                                f"but {tuple(d.shape)} in {deeper.name}")
            elif s is not None:
                copies.append((f"{prefix}.{pname}", s, d))
    if problems:
        raise ValueError("init_from: cannot initialise " + deeper.name + " from "
                         + shallower.name + ":\n  " + "\n  ".join(problems))
    for _, s, d in copies:
        d.data[...] = s.data.astype(d.dtype, copy=False)
    return [name for name, _, _ in copies]


# ---------------------------------------------------------------------------
# Registered builders
# ---------------------------------------------------------------------------
def _imagenet(config, name, num_classes, lrn=False, **kwargs):
    return VGG(config, num_classes, lrn=lrn, image_size=224, name=name, **kwargs)


def _cifar(config, name, num_classes, batch_norm, hidden, **kwargs):
    return VGG(config, num_classes, batch_norm=batch_norm, image_size=32, hidden=hidden,
               name=name, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, A (11 weight layers)")
def vgg11(num_classes=1000, **kwargs):
    """VGG-11, configuration A."""
    return _imagenet("A", "vgg11", num_classes, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, A-LRN (11 weight layers)")
def vgg11_lrn(num_classes=1000, **kwargs):
    """VGG-11 with local response normalisation after the first layer (A-LRN)."""
    return _imagenet("A", "vgg11_lrn", num_classes, lrn=True, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, B (13 weight layers)")
def vgg13(num_classes=1000, **kwargs):
    """VGG-13, configuration B."""
    return _imagenet("B", "vgg13", num_classes, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, C (16 weight layers, 1x1 convs)")
def vgg16_1x1(num_classes=1000, **kwargs):
    """VGG-16 configuration C: the last conv of stages 3-5 is 1×1."""
    return _imagenet("C", "vgg16_1x1", num_classes, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, D (16 weight layers)")
def vgg16(num_classes=1000, **kwargs):
    """VGG-16, configuration D."""
    return _imagenet("D", "vgg16", num_classes, **kwargs)


@register(family="vgg", dataset="imagenet", paper="VGG Table 1, E (19 weight layers)")
def vgg19(num_classes=1000, **kwargs):
    """VGG-19, configuration E."""
    return _imagenet("E", "vgg19", num_classes, **kwargs)


@register(family="vgg", dataset="cifar", paper="VGG A conv stack, 32x32, BN, linear head")
def vgg11_cifar(num_classes=10, batch_norm=True, hidden=None, **kwargs):
    """CIFAR-10 VGG-11: A's convs (+BN), Linear(512, num_classes)."""
    return _cifar("A", "vgg11_cifar", num_classes, batch_norm, hidden, **kwargs)


@register(family="vgg", dataset="cifar", paper="VGG B conv stack, 32x32, BN, linear head")
def vgg13_cifar(num_classes=10, batch_norm=True, hidden=None, **kwargs):
    """CIFAR-10 VGG-13: B's convs (+BN), Linear(512, num_classes)."""
    return _cifar("B", "vgg13_cifar", num_classes, batch_norm, hidden, **kwargs)


@register(family="vgg", dataset="cifar", paper="VGG D conv stack, 32x32, BN, linear head")
def vgg16_cifar(num_classes=10, batch_norm=True, hidden=None, **kwargs):
    """CIFAR-10 VGG-16: D's convs (+BN), Linear(512, num_classes)."""
    return _cifar("D", "vgg16_cifar", num_classes, batch_norm, hidden, **kwargs)


@register(family="vgg", dataset="cifar", paper="VGG E conv stack, 32x32, BN, linear head")
def vgg19_cifar(num_classes=10, batch_norm=True, hidden=None, **kwargs):
    """CIFAR-10 VGG-19: E's convs (+BN), Linear(512, num_classes)."""
    return _cifar("E", "vgg19_cifar", num_classes, batch_norm, hidden, **kwargs)
