"""Weight initialisation schemes for whole networks, and cheap construction.

``init_weights(model, scheme)`` sets every Conv2d / Linear / BatchNorm of a
model.  The schemes (``init=`` of every builder):

=================  ============================================================
``"he"``           He et al. 2015 ("kaiming"): each conv and linear weight from
                   N(0, 2 / fan_in), fan_in = C_in·kh·kw; biases 0.  Keeps the
                   variance of the responses constant through ReLU layers, so
                   any depth trains from scratch.  Default of every model.
``"glorot"``       Glorot & Bengio 2010 ("xavier"): U(-b, b),
                   b = sqrt(6 / (fan_in + fan_out)); biases 0.  VGG Sec 3.1 notes
                   it trains the deep configurations without pre-training.
``"paper"``        VGG Sec 3.1 as written: N(0, variance 1e-2), i.e. std 0.1,
                   biases 0 (the paper trains net A like this and starts the
                   deeper nets from A, see :func:`minigrad.models.init_from`).
                   With std 0.1 the responses grow layer after layer; it is
                   kept for fidelity, not as a recipe.
``"torch"``        PyTorch's layer defaults (U(±1/sqrt(fan_in))).
``"zeros"``        every weight and bias 0 (fast; for shapes and counting).
``None``           nothing at all: weights are uninitialised memory.  For
                   counting parameters only.
=================  ============================================================

Batch-norm layers always get weight (γ) 1 and bias (β) 0.
"""
from __future__ import annotations

import contextlib

from .. import nn
from ..nn import init as I

SCHEMES = ("he", "kaiming", "glorot", "xavier", "paper", "torch", "zeros", None)
_ALIASES = {"kaiming": "he", "xavier": "glorot"}
PAPER_STD = 0.1          # VGG: "zero mean and 10^-2 variance"


def check_scheme(scheme, who: str):
    if scheme not in SCHEMES:
        raise ValueError(f"{who}: unknown init {scheme!r}; choose one of "
                         f"{', '.join(repr(s) for s in SCHEMES)}")
    return _ALIASES.get(scheme, scheme)


@contextlib.contextmanager
def skip_layer_init():
    """Build layers without their own default initialisation.

    ``Conv2d`` and ``Linear`` fill their weights at construction; a model
    overwrites them right after with its own scheme, so that first fill is wasted
    work (seconds and a GiB of temporaries for VGG's 100M-weight first FC
    layer).  Inside this block their ``reset_parameters`` does nothing and the
    weights stay uninitialised until :func:`init_weights` runs.
    """
    saved = {cls: cls.__dict__["reset_parameters"] for cls in (nn.Conv2d, nn.Linear)}
    try:
        for cls in saved:
            cls.reset_parameters = _no_init
        yield
    finally:
        for cls, method in saved.items():
            cls.reset_parameters = method


def _no_init(self):
    pass


def init_weights(model, scheme="he"):
    """Initialise every layer of ``model`` in place with ``scheme`` (see the
    module docstring); returns the model."""
    scheme = check_scheme(scheme, "init_weights")
    if scheme is None:
        return model
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _init_layer(m, scheme)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            I.ones_(m.weight)
            I.zeros_(m.bias)
    return model


def _init_layer(m, scheme):
    if scheme == "torch":
        type(m).reset_parameters(m)
        return
    w = m.weight
    if scheme == "he":
        I.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    elif scheme == "glorot":
        I.xavier_uniform_(w)
    elif scheme == "paper":
        I.normal_(w, 0.0, PAPER_STD)
    elif scheme == "zeros":
        I.zeros_(w)
    if m.bias is not None:
        I.zeros_(m.bias)
