"""Finite-difference checks of whole networks: a width-4 CIFAR ResNet with one
block per stage (9 weighted layers) in float64, batch-norm in training mode, for
every shortcut option and for the plain twin.  The gradient of the input and
of parameters on the main path, in the shortcut projections and in the
classifier are compared with central differences.

Parameters are checked by passing them to ``gradcheck`` as inputs: it perturbs
their arrays in place, which the model reads on the next forward.
"""
import numpy as np
import pytest

import minigrad
import minigrad.models as models

EPS, ATOL, RTOL = 1e-6, 1e-8, 1e-6


def _tiny(name, shortcut):
    minigrad.manual_seed(0)
    kwargs = dict(width=4, blocks_per_stage=1, num_classes=3)
    if shortcut is not None:
        kwargs["shortcut"] = shortcut
    return models.create(name, **kwargs).double().train()


@pytest.mark.parametrize("name,shortcut,checked", [
    ("resnet20", "A", ["conv1.weight", "layer2.0.conv2.weight", "layer3.0.bn1.weight",
                       "fc.bias"]),
    ("resnet20", "B", ["layer2.0.shortcut.0.weight", "layer3.0.shortcut.1.bias",
                       "layer1.0.conv1.weight"]),
    ("resnet20", "C", ["layer1.0.shortcut.0.weight", "layer3.0.shortcut.1.weight",
                       "layer3.0.bn2.bias"]),
    ("plain20", None, ["conv1.weight", "layer2.0.bn2.weight", "fc.weight"]),
])
def test_gradcheck_tiny_network(name, shortcut, checked):
    net = _tiny(name, shortcut)
    params = dict(net.named_parameters())
    x = minigrad.Tensor(np.random.default_rng(1).standard_normal((2, 3, 6, 6)), requires_grad=True)
    inputs = [x] + [params[n] for n in checked]

    def forward(x, *checked_params):      # the parameters are read by the model itself
        return net(x)

    assert minigrad.gradcheck(forward, inputs, eps=EPS, atol=ATOL, rtol=RTOL)


def test_gradcheck_catches_a_wrong_gradient():
    # the same check must fail when the network's gradient is wrong: scale the
    # gradient reaching conv1's weight through a hook on the output of bn1
    net = _tiny("resnet20", "A")
    net.bn1.register_forward_hook(lambda m, inp, out: out.register_hook(lambda g: g * 1.01) and None)
    x = minigrad.Tensor(np.random.default_rng(1).standard_normal((2, 3, 6, 6)), requires_grad=True)
    with pytest.raises(minigrad.GradcheckError):
        minigrad.gradcheck(lambda x, w: net(x), [x, net.conv1.weight], eps=EPS, atol=ATOL,
                           rtol=RTOL)
