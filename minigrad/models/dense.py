"""Dense evaluation of a VGG (Sec 3.2): the fully connected layers become
convolutions, so the net slides over an image of any size.

``fc6`` sees the whole 512×7×7 map: its weight (4096, 512·7·7) *is* a
(4096, 512, 7, 7) convolution kernel, read in the same (channel, row, column)
order the Flatten layer used.  ``fc7`` and ``fc8`` act on one position: 1×1
convolutions.  On a 224×224 image the converted net gives the same logits as
the original, shaped (N, classes, 1, 1); on a larger image it gives a class
score map (N, classes, h, w), one score vector per 224×224 window, with a
stride of 32 pixels.

:func:`to_fully_convolutional` shares the weights: each conv kernel is a
reshaped *view* of the Linear weight (no copy), so the two nets always agree.
The converted net is meant for evaluation: re-assigning ``.data`` of one
(``model.to(...)``, an optimizer that replaces arrays) breaks the sharing.
"""
from __future__ import annotations

import math
from collections import OrderedDict

from .. import backend, nn
from ..tensor import Tensor, no_grad
from .initialization import skip_layer_init
from .vgg import VGG

__all__ = ["DenseVGG", "to_fully_convolutional", "dense_predict"]


class DenseVGG(nn.Module):
    """A fully convolutional VGG: the original ``features`` (the same module)
    followed by ``classifier`` convs that view the FC weights."""

    def __init__(self, features, classifier, name):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.name = name

    def forward(self, x):
        """Images (N, 3, H, W), H, W >= 224 -> class score map (N, classes, h, w)."""
        return self.classifier(self.features(x))


def _linear_as_conv(linear, in_channels):
    """A Conv2d whose weight and bias are views of ``linear``'s arrays."""
    spatial = linear.in_features // in_channels
    k = math.isqrt(spatial)
    if k * k * in_channels != linear.in_features:
        raise ValueError(f"to_fully_convolutional: a Linear with {linear.in_features} inputs is "
                         f"not a square k×k window over {in_channels} channels")
    with skip_layer_init():
        conv = nn.Conv2d(in_channels, linear.out_features, k, bias=linear.bias is not None)
    w = linear.weight
    conv.weight = nn.Parameter(w.data.reshape(linear.out_features, in_channels, k, k),
                               requires_grad=w.requires_grad)
    if linear.bias is not None:
        conv.bias = nn.Parameter(linear.bias.data, requires_grad=linear.bias.requires_grad)
    return conv


def to_fully_convolutional(model: VGG) -> DenseVGG:
    """Convert a VGG into a fully convolutional net for dense evaluation.

    The first Linear becomes a k×k conv over the last feature map (7×7 for
    224-pixel ImageNet nets), the others 1×1 convs; ReLU and Dropout are kept
    in place (new modules of the same kind).  Weights are shared (views).  The
    result is in the model's current train/eval mode.
    """
    if not isinstance(model, VGG):
        raise TypeError(f"to_fully_convolutional: expected a VGG, got {type(model).__name__}")
    layers = OrderedDict()
    channels = model.feature_channels
    for name, m in model.classifier.named_children():
        if isinstance(m, nn.Linear):
            layers[name] = _linear_as_conv(m, channels)
            channels = m.out_features
        elif isinstance(m, nn.ReLU):
            layers[name] = nn.ReLU()
        elif isinstance(m, nn.Dropout):
            layers[name] = nn.Dropout(m.p)
        else:
            raise TypeError(f"to_fully_convolutional: cannot convert classifier layer "
                            f"{name!r} ({type(m).__name__})")
    dense = DenseVGG(model.features, nn.Sequential(layers), name=f"{model.name} (dense)")
    for m in dense.classifier:                  # same mode as the model, without touching it
        object.__setattr__(m, "training", model.training)
    object.__setattr__(dense, "training", model.training)
    return dense


def _softmax(scores):
    xp = backend.get_array_module(scores)
    e = xp.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def dense_predict(model, images, flip=True) -> Tensor:
    """Class posteriors of ``images`` (N, 3, H, W) by dense evaluation (Sec 3.2).

    ``images``: a Tensor, or a NumPy or CuPy array on the model's device.

    The fully convolutional net (``model`` is a VGG, converted here, or a
    :class:`DenseVGG`) produces a class score map; it is averaged over space
    to one score vector per image, turned into soft-max posteriors, and, with
    ``flip=True``, averaged with the posteriors of the horizontally flipped
    image.  Runs in evaluation mode without recording a graph (the model's
    modes are restored).  Returns a Tensor (N, classes).
    """
    dense = to_fully_convolutional(model) if isinstance(model, VGG) else model
    if not isinstance(dense, DenseVGG):
        raise TypeError(f"dense_predict: expected a VGG or DenseVGG, got {type(model).__name__}")
    # Tensor() keeps an array where it is (a CuPy batch stays on the GPU; CuPy refuses
    # the implicit copy np.asarray would ask for) and turns lists into NumPy arrays
    x = images if isinstance(images, Tensor) else Tensor(images)
    if x.ndim != 4:
        raise ValueError(f"dense_predict: expected images (N, 3, H, W), got shape {x.shape}")
    modes = {id(m): m.training for m in dense.modules()}
    xp = backend.get_array_module(x.data)
    views = [x.data, xp.ascontiguousarray(x.data[..., ::-1])] if flip else [x.data]
    try:
        dense.eval()
        with no_grad():
            probs = [_softmax(dense(Tensor._wrap(v)).data.mean(axis=(2, 3))) for v in views]
    finally:
        for m in dense.modules():
            object.__setattr__(m, "training", modes[id(m)])
    return Tensor._wrap(sum(probs) / len(probs))
