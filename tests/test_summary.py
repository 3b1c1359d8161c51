"""minigrad.models.summary: per-layer shapes, parameters, multiply-adds and
receptive fields, checked against hand computations and the papers' totals
(VGG: computed mult-adds in PAPERS.md; ResNet: Table 1 FLOPs)."""
from collections import OrderedDict

import numpy as np
import pytest

from minigrad import nn
import minigrad.models as models
from minigrad.models import summary


# ---------------------------------------------------------------------------
# Hand-checked small cases
# ---------------------------------------------------------------------------
def _tiny_net():
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 4, 3, padding=1)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(4, 6, 3, padding=1)),
        ("pool", nn.MaxPool2d(2, 2)),
        ("conv3", nn.Conv2d(6, 5, 3, stride=2)),
        ("flat", nn.Flatten()),
        ("fc", nn.Linear(5 * 3 * 3, 7)),
    ]))


def test_rows_against_hand_computation():
    s = summary(_tiny_net(), (3, 16, 16))
    assert [r.name for r in s.rows] == ["conv1", "relu1", "conv2", "pool", "conv3", "flat", "fc"]
    shapes = [r.output_shape for r in s.rows]
    assert shapes == [(1, 4, 16, 16), (1, 4, 16, 16), (1, 6, 16, 16), (1, 6, 8, 8),
                      (1, 5, 3, 3), (1, 45), (1, 7)]
    assert [r.params for r in s.rows] == [3 * 4 * 9 + 4, 0, 4 * 6 * 9 + 6, 0, 6 * 5 * 9 + 5, 0,
                                          45 * 7 + 7]
    # conv: Cout * Cin * kh * kw * Hout * Wout;  linear: in * out
    assert [r.madds for r in s.rows] == [4 * 3 * 9 * 256, 0, 6 * 4 * 9 * 256, 0, 5 * 6 * 9 * 9,
                                         0, 45 * 7]
    # receptive field: two 3x3 see 5x5; the 2x2/2 pool adds 1 (jump 1) -> 6, jump 2;
    # the 3x3/2 conv adds 2*2 -> 10, jump 4
    assert [r.receptive_field for r in s.rows[:5]] == [(3, 3), (3, 3), (5, 5), (6, 6), (10, 10)]
    assert [r.jump for r in s.rows[:5]] == [(1, 1), (1, 1), (1, 1), (2, 2), (4, 4)]
    assert s.rows[-1].receptive_field is None
    assert s.total_params == sum(r.params for r in s.rows) == _tiny_net().num_parameters()
    assert s.total_madds == sum(r.madds for r in s.rows)
    # float32 outputs of one image
    assert s.output_bytes == 4 * sum(int(np.prod(r.output_shape)) for r in s.rows)


def test_table_text_and_batch():
    s = summary(_tiny_net(), (2, 3, 16, 16))
    text = str(s)
    for word in ("conv1", "MaxPool2d", "(2, 6, 8, 8)", "Total params:", "Mult-adds per image:",
                 f"{s.total_params:,}", "RF", "Jump"):
        assert word in text
    # mult-adds are per image, whatever the batch
    assert s.total_madds == summary(_tiny_net(), (3, 16, 16)).total_madds
    assert s.row("conv2").output_shape == (2, 6, 16, 16)
    with pytest.raises(KeyError):
        s.row("conv9")


def test_summary_restores_modes_and_checks_arguments():
    net = models.create("resnet20", width=4, blocks_per_stage=1)
    net.train()
    net.layer2.eval()
    summary(net, (3, 32, 32))
    assert net.training and net.layer1.training and not net.layer2.training
    with pytest.raises(ValueError, match="input_shape"):
        summary(net, (32, 32))
    with pytest.raises(TypeError, match="Module"):
        summary(lambda x: x, (3, 32, 32))


def test_resnet_receptive_field_follows_the_main_branch():
    s = summary(models.create("resnet20", init="zeros"), (3, 32, 32))
    # conv1 + 2 convs per block, 3 blocks of stride 1: 1 + 2*7 = 15
    assert s.row("layer1.2.conv2").receptive_field == (15, 15)
    # the stride-2 conv adds 2, the next conv (jump 2) adds 4
    assert s.row("layer2.0.conv2").receptive_field == (21, 21)
    assert s.row("layer2.0.conv2").jump == (2, 2)
    assert s.row("layer2.0.shortcut").receptive_field is None      # side branch
    assert s.row("layer3.2.conv2").jump == (4, 4)
    assert s.total_params == 269_722


# ---------------------------------------------------------------------------
# The papers' totals (one forward each at full size)
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name,giga,tol", [("vgg11", 7.61, 0.02), ("vgg16", 15.47, 0.02),
                                           ("vgg19", 19.63, 0.02)])
def test_vgg_mult_adds(name, giga, tol):
    net = models.create(name, init="zeros")
    s = summary(net, (3, 224, 224))
    assert s.total_madds == pytest.approx(giga * 1e9, rel=tol)
    assert s.row("features.pool5").output_shape == (1, 512, 7, 7)
    if name == "vgg16":
        # VGG-16's last conv sees 196 pixels, pool5 212, with a jump of 32
        assert s.row("features.conv5_3").receptive_field == (196, 196)
        assert s.row("features.pool5").receptive_field == (212, 212)
        assert s.row("features.pool5").jump == (32, 32)
        assert s.total_params == 138_357_544


@pytest.mark.slow
@pytest.mark.parametrize("name,giga", [("resnet18", 1.8), ("resnet34", 3.6), ("resnet50", 3.8),
                                       ("resnet101", 7.6), ("resnet152", 11.3)])
def test_resnet_flops_table1(name, giga):
    s = summary(models.create(name, init="zeros"), (3, 224, 224))
    assert s.total_madds == pytest.approx(giga * 1e9, rel=0.05)
    assert s.row("layer4.0.conv1").output_shape[2:] == (7, 7)


def test_resnet20_mult_adds():
    s = summary(models.create("resnet20", init="zeros"), (3, 32, 32))
    assert s.total_madds == pytest.approx(40.6e6, rel=0.02)
