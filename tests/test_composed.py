"""Gradient check of a whole (tiny) residual network, end to end, in float64:

    conv -> BN (train) -> ReLU -> max-pool -> conv (+ shortcut) -> global avg pool
         -> linear -> cross-entropy

The gradients of the input AND of every parameter are compared with central
finite differences.  The inputs are checked to stay away from the kinks: no
ReLU input near 0, no near-tie inside a max-pool window.
"""
import numpy as np

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.nn import functional as F


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = self.pool(self.relu(self.bn1(self.conv1(x))))
        h = self.conv2(h) + h                     # identity shortcut
        return self.fc(self.gap(h).flatten(1))


def _build():
    mg.manual_seed(0)
    net = TinyResNet().double()
    rng = np.random.default_rng(0)
    net.bn1.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    net.bn1.bias.data[...] = rng.uniform(-0.3, 0.3, 3)
    x = Tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    target = Tensor(np.array([1, 3]))
    return net, x, target


def test_inputs_stay_away_from_kinks():
    net, x, _ = _build()
    seen = {}
    net.bn1.register_forward_hook(lambda m, i, o: seen.setdefault("bn", o.numpy()))
    net.relu.register_forward_hook(lambda m, i, o: seen.setdefault("relu", o.numpy()))
    net(x)
    # a perturbation of 1e-6 moves these values by ~1e-5 at most
    assert np.abs(seen["bn"]).min() > 1e-3
    windows = seen["relu"].reshape(2, 3, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(-1, 4)
    top2 = np.sort(windows, axis=1)[:, -2:]
    positive = top2[:, 1] > 0
    assert positive.any()
    assert (top2[positive, 1] - top2[positive, 0]).min() > 1e-3


def test_gradcheck_composed_network():
    net, x, target = _build()
    params = list(net.parameters())
    assert len(params) == 8

    def loss_fn(inp, *ps):         # the parameters are read by the modules themselves
        return F.cross_entropy(net(inp), target)

    assert mg.gradcheck(loss_fn, [x, *params])
    # and the analytic gradient reaches every parameter
    net.zero_grad()
    loss_fn(x, *params).backward()
    assert all(p.grad is not None and np.abs(p.grad.numpy()).sum() > 0 for p in params)
