"""minigrad.models: registry, exact parameter counts, structure of every
network, forward + backward of every registered model, dense evaluation and
init_from.  Golden numbers come from /shared/PAPERS.md (the papers' tables and
their exact computed counts)."""
import gc

import numpy as np
import pytest

import minigrad
from minigrad import nn
import minigrad.models as models
from minigrad.models import (BasicBlock, Bottleneck, DenseVGG, ZeroPadShortcut, dense_predict,
                             init_from, to_fully_convolutional)

# ---------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------
IMAGENET_VGG = ["vgg11", "vgg11_lrn", "vgg13", "vgg16_1x1", "vgg16", "vgg19"]
CIFAR_VGG = ["vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar"]
IMAGENET_RESNET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                   "plain18", "plain34"]
CIFAR_RESNET = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
                "plain20", "plain32", "plain44", "plain56", "plain110"]
ALL = IMAGENET_VGG + CIFAR_VGG + IMAGENET_RESNET + CIFAR_RESNET


def test_list_models_is_sorted_and_complete():
    names = models.list_models()
    assert names == sorted(names)
    assert set(names) == set(ALL)


def test_list_models_filters():
    assert models.list_models(family="vgg", dataset="imagenet") == sorted(IMAGENET_VGG)
    assert models.list_models(family="plain", dataset="cifar") == [
        "plain110", "plain20", "plain32", "plain44", "plain56"]
    assert models.list_models("resnet1*") == ["resnet101", "resnet110", "resnet1202",
                                              "resnet152", "resnet18"]
    assert models.list_models(dataset="cifar") == sorted(CIFAR_VGG + CIFAR_RESNET)
    assert models.model_info("vgg16").paper.startswith("VGG Table 1, D")


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20"):
        models.create("resnet21")
    with pytest.raises(ValueError, match="vgg16"):
        models.create("vgg61")
    with pytest.raises(TypeError):
        models.create(16)


def test_register_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        models.register("resnet20", family="resnet", dataset="cifar")(lambda **kw: None)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown init 'normal'"):
        models.create("resnet20", init="normal")
    with pytest.raises(ValueError, match="shortcut must be"):
        models.create("resnet20", shortcut="D")
    with pytest.raises(ValueError, match="config"):
        models.VGG("F")


# ---------------------------------------------------------------------------
# Exact parameter counts (built once per session, without initialisation)
# ---------------------------------------------------------------------------
EXPECTED_PARAMS = {
    "vgg11": 132_863_336, "vgg11_lrn": 132_863_336, "vgg13": 133_047_848,
    "vgg16_1x1": 133_638_952, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808, "plain18": 11_515_688,
    "resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
    "resnet110": 1_727_962, "resnet1202": 19_421_274,
    "plain20": 269_722, "plain32": 464_154, "plain44": 658_586, "plain56": 853_018,
    "plain110": 1_727_962,
}


@pytest.fixture(scope="session")
def param_counts():
    """Build every registered model once (``init=None``: the arrays are
    allocated but never filled, so even VGG-19 costs no time), count, free."""
    counts = {}
    for name in models.list_models():
        net = models.create(name, init=None)
        counts[name] = (net.num_parameters(), sum(p.size for _, p in net.named_parameters()))
        del net
        gc.collect()
    return counts


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_exact_parameter_count(param_counts, name):
    total, by_name = param_counts[name]
    assert total == by_name == EXPECTED_PARAMS[name]


def test_plain_nets_equal_option_a_resnets(param_counts):
    # option A is parameter-free, so a ResNet and its plain twin have the same count
    assert param_counts["plain34"][0] == models.create("resnet34", shortcut="A",
                                                       init=None).num_parameters()


def test_projection_shortcuts_add_exactly_their_weights():
    # ResNet-20 with option B: projections 16->32 and 32->64 (1x1 conv + BN)
    b = models.create("resnet20", shortcut="B", init=None).num_parameters()
    assert b == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    # option C: every one of the 9 blocks has a projection
    c = models.create("resnet20", shortcut="C", init=None).num_parameters()
    projections = 3 * (16 * 16 + 32) + (16 * 32 + 64) + 2 * (32 * 32 + 64) + (32 * 64 + 128) \
        + 2 * (64 * 64 + 128)
    assert c == 269_722 + projections


def test_num_classes_changes_only_the_last_layer():
    assert models.create("resnet20", num_classes=100, init=None).fc.weight.shape == (100, 64)
    net = models.create("vgg16", num_classes=10, init=None)
    assert net.classifier.fc8.weight.shape == (10, 4096)
    assert net.num_parameters() == 138_357_544 - 990 * 4097


# ---------------------------------------------------------------------------
# Structure: the papers' tables
# ---------------------------------------------------------------------------
def _convs(net):
    return [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name,weight_layers", [("vgg11", 11), ("vgg11_lrn", 11), ("vgg13", 13),
                                                ("vgg16_1x1", 16), ("vgg16", 16), ("vgg19", 19)])
def test_vgg_weight_layers(name, weight_layers):
    net = models.create(name, init=None)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(_convs(net)) + len(linears) == weight_layers
    assert [m.out_features for m in linears] == [4096, 4096, 1000]
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.5, 0.5]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.kernel_size == (2, 2) and p.stride == (2, 2) for p in pools)


def test_vgg_c_has_1x1_convs_at_the_end_of_stages_3_to_5():
    net = models.create("vgg16_1x1", init=None)
    ones = [n for n, m in _convs(net) if m.kernel_size == (1, 1)]
    assert ones == ["features.conv3_3", "features.conv4_3", "features.conv5_3"]
    assert all(m.padding == (0, 0) for n, m in _convs(net) if n in ones)
    assert all(m.padding == (1, 1) and m.stride == (1, 1)
               for n, m in _convs(net) if n not in ones)


def test_vgg_lrn_placement_and_paper_parameters():
    net = models.create("vgg11_lrn", init=None)
    names = list(dict(net.features.named_children()))
    assert names[:4] == ["conv1_1", "relu1_1", "lrn1", "pool1"]
    lrn = net.features.lrn1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 2.0)
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in models.create("vgg11", init=None).modules())


def test_cifar_vgg_has_bn_and_a_linear_head():
    net = models.create("vgg16_cifar", init=None)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 13
    assert all(m.bias is None for _, m in _convs(net))
    assert [type(m).__name__ for m in net.classifier] == ["Linear"]
    plain = models.create("vgg16_cifar", batch_norm=False, hidden=512, init=None)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert [m.out_features for m in plain.modules() if isinstance(m, nn.Linear)] == [512, 512, 10]


def test_resnet_stem_and_bottleneck_stride_in_first_1x1():
    net = models.create("resnet50", init=None)
    assert (net.conv1.kernel_size, net.conv1.stride, net.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert (net.maxpool.kernel_size, net.maxpool.stride, net.maxpool.padding) == \
        ((3, 3), (2, 2), (1, 1))
    for stage in ("layer2", "layer3", "layer4"):
        first = getattr(net, stage)[0]
        assert isinstance(first, Bottleneck)
        assert first.conv1.kernel_size == (1, 1) and first.conv1.stride == (2, 2)
        assert first.conv2.stride == (1, 1)
    assert all(m.bias is None for _, m in _convs(net))
    assert [len(getattr(net, s)) for s in net.stages] == [3, 4, 6, 3]
    assert [len(getattr(models.create("resnet152", init=None), s)) for s in net.stages] == \
        [3, 8, 36, 3]


def _shortcut_kinds(net):
    kinds = []
    for block in net.blocks():
        s = block.shortcut
        kinds.append("plain" if s is None else "proj" if isinstance(s, nn.Sequential)
                     else "pad" if isinstance(s, ZeroPadShortcut) else "id")
    return kinds


def test_shortcut_options():
    imagenet_b = _shortcut_kinds(models.create("resnet50", init=None))
    # B: projections exactly where the shape changes (also the first block: 64 -> 256)
    assert imagenet_b == ["proj", "id", "id", "proj"] + ["id"] * 3 + ["proj"] + ["id"] * 5 + \
        ["proj", "id", "id"]
    assert _shortcut_kinds(models.create("resnet20", init=None)) == \
        ["id"] * 3 + ["pad", "id", "id", "pad", "id", "id"]
    assert set(_shortcut_kinds(models.create("resnet20", shortcut="C", init=None))) == {"proj"}
    assert set(_shortcut_kinds(models.create("plain20", init=None))) == {"plain"}
    assert set(_shortcut_kinds(models.create("plain18", init=None))) == {"plain"}


def test_zero_pad_shortcut_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 6))
    out = ZeroPadShortcut(3, 8, 2)(minigrad.Tensor(x)).numpy()
    assert out.shape == (2, 8, 3, 3)
    np.testing.assert_array_equal(out[:, :3], x[:, :, ::2, ::2])
    np.testing.assert_array_equal(out[:, 3:], 0)
    with pytest.raises(ValueError, match="cannot shrink"):
        ZeroPadShortcut(8, 4, 1)


def test_cifar_resnet_overrides_build_tiny_nets():
    net = models.create("resnet56", width=4, blocks_per_stage=1)
    assert [b.conv2.out_channels for b in net.blocks()] == [4, 8, 16]
    assert net.fc.in_features == 16


# ---------------------------------------------------------------------------
# Initialisation schemes
# ---------------------------------------------------------------------------
def test_init_schemes_have_the_documented_statistics():
    minigrad.manual_seed(0)
    net = models.create("vgg11_cifar", init="he")
    w = net.features.conv4_1.weight.numpy()           # 512 x 256 x 3 x 3
    assert w.std() == pytest.approx(np.sqrt(2 / (256 * 9)), rel=0.02)
    assert abs(w.mean()) < 1e-3
    bn = net.features.bn4_1
    assert np.all(bn.weight.numpy() == 1) and np.all(bn.bias.numpy() == 0)

    net = models.create("vgg11_cifar", batch_norm=False, init="paper")
    w = net.features.conv4_1.weight.numpy()
    assert w.std() == pytest.approx(0.1, rel=0.02)
    assert np.all(net.features.conv4_1.bias.numpy() == 0)

    net = models.create("vgg11_cifar", init="xavier")
    w = net.features.conv4_1.weight.numpy()
    bound = np.sqrt(6 / (256 * 9 + 512 * 9))
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)

    net = models.create("resnet20", init="zeros")
    assert all(np.all(p.numpy() == 0) for n, p in net.named_parameters() if "bn" not in n)


def test_init_is_reproducible_from_the_seed():
    minigrad.manual_seed(3)
    a = models.create("resnet20").state_dict()
    minigrad.manual_seed(3)
    b = models.create("resnet20").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------
# Every registered model: forward and backward on a small batch
# ---------------------------------------------------------------------------
def _case(name):
    """(input shape, classes) of the forward/backward test: every model at its
    full registered size, on one image of its smallest valid input.

    ImageNet VGGs need 224x224 (their FC-4096 head expects a 7x7 map); ImageNet
    ResNets end in global average pooling; one image of 64x64 leaves 2x2 after
    layer4, the least on which batch norm can take training statistics;
    CIFAR nets take 2x3x32x32, the deepest on smaller images (ResNet-1202 on 8x8,
    ResNet-110 on 16x16) to fit the suite's time budget."""
    if name in IMAGENET_VGG:
        return (1, 3, 224, 224), 1000
    if name in IMAGENET_RESNET:
        return (1, 3, 64, 64), 1000
    if name == "resnet1202":
        return (2, 3, 8, 8), 10
    if name in ("resnet110", "plain110"):
        return (2, 3, 16, 16), 10
    return (2, 3, 32, 32), 10


_NOISE = np.random.default_rng(7).standard_normal(1 << 20).astype(np.float32)


def _quick_he_init(net):
    """He-scaled weights tiled from one fixed block of noise: the statistics of
    ``init="he"`` (what matters for a finite forward/backward) at memory speed,
    instead of drawing 100+ million fresh samples for VGG's FC layers."""
    for pname, p in net.named_parameters():
        if p.ndim >= 2:
            fan_in = int(np.prod(p.shape[1:]))
            p.data[...] = np.resize(_NOISE, p.shape) * np.float32(np.sqrt(2.0 / fan_in))


HEAVY = {"resnet1202", "resnet152", "resnet101", "vgg16", "vgg16_1x1", "vgg19"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n
                                  for n in ALL])
def test_forward_backward_every_model(name):
    shape, classes = _case(name)
    net = models.create(name, init="zeros")       # biases 0, BN gamma 1
    _quick_he_init(net)
    x = minigrad.Tensor(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    out = net(x)
    assert out.shape == (shape[0], classes)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out.numpy())) and np.any(out.numpy() != 0)
    (out * out).mean().backward()
    params = list(net.named_parameters())
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    for n, p in params:
        assert p.grad.shape == p.shape, n
        assert np.all(np.isfinite(p.grad.numpy())), n
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert np.any(first_conv.weight.grad.numpy() != 0)     # the gradient reached the input end
    del net, out, params
    gc.collect()


def test_vgg_refuses_wrong_image_size_clearly():
    net = models.VGG("A", 10, width=8, hidden=16)
    with pytest.raises(ValueError, match=r"7x7 feature map.*224x224.*to_fully_convolutional"):
        net(minigrad.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expected images"):
        net(minigrad.zeros(3, 224, 224))


# ---------------------------------------------------------------------------
# ResNet Fig. 7: the residual response after BN, before the addition
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs", [("resnet20", dict(width=4, blocks_per_stage=1)),
                                         ("resnet50", dict(width=4, blocks_per_stage=(1, 1, 1, 1)))])
def test_last_bn_hook_reads_the_response_before_the_addition(name, kwargs):
    minigrad.manual_seed(0)
    net = models.create(name, **kwargs)
    net.eval()
    seen = {}
    block = net.blocks()[1]                     # a block whose shortcut changes the shape
    assert block.last_bn is (block.bn2 if isinstance(block, BasicBlock) else block.bn3)
    block.last_bn.register_forward_hook(lambda m, inp, out: seen.setdefault("residual", out))
    block.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0], y=out))
    size = 16 if name == "resnet20" else 64
    net(minigrad.Tensor(np.random.default_rng(0).standard_normal((2, 3, size, size))
                        .astype(np.float32)))
    f = seen["residual"].numpy()
    shortcut = block.shortcut(seen["x"]).numpy()
    np.testing.assert_allclose(seen["y"].numpy(), np.maximum(f + shortcut, 0), rtol=1e-6, atol=1e-6)
    assert np.any(f < 0)                           # before the final ReLU


# ---------------------------------------------------------------------------
# Dense evaluation (VGG Sec 3.2)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_vgg():
    """VGG-A layout with 8x thinner convs and 64-wide FC layers: the same
    layers and the same 224-pixel geometry, for a fraction of the cost."""
    minigrad.manual_seed(0)
    return models.VGG("A", 10, width=8, hidden=64).eval()


def _images(*shape, seed=0):
    return minigrad.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_dense_net_shares_the_fc_weights(small_vgg):
    dense = to_fully_convolutional(small_vgg)
    assert isinstance(dense, DenseVGG) and dense.features is small_vgg.features
    fc6, conv6 = small_vgg.classifier.fc6, dense.classifier.fc6
    assert conv6.weight.shape == (64, 64, 7, 7) and conv6.kernel_size == (7, 7)
    assert dense.classifier.fc7.weight.shape == (64, 64, 1, 1)
    assert dense.classifier.fc8.weight.shape == (10, 64, 1, 1)
    for name in ("fc6", "fc7", "fc8"):
        lin, conv = getattr(small_vgg.classifier, name), getattr(dense.classifier, name)
        assert np.shares_memory(lin.weight.data, conv.weight.data)
        assert np.shares_memory(lin.bias.data, conv.bias.data)
    # the (channel, row, column) order of Flatten: weight[o, c, i, j] == fc6[o, c*49 + i*7 + j]
    np.testing.assert_array_equal(conv6.weight.numpy()[5, 3, 2, 4], fc6.weight.numpy()[5, 3 * 49 + 2 * 7 + 4])


def test_dense_evaluation_equals_the_vgg_at_224(small_vgg):
    x = _images(2, 3, 224, 224)
    with minigrad.no_grad():
        logits = small_vgg(x).numpy()
        scores = to_fully_convolutional(small_vgg)(x).numpy()
    assert scores.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(scores[:, :, 0, 0], logits, rtol=1e-5,
                               atol=1e-5 * np.abs(logits).max())


def test_dense_evaluation_on_a_larger_image(small_vgg):
    dense = to_fully_convolutional(small_vgg)
    x = _images(1, 3, 256, 320, seed=1)
    with minigrad.no_grad():
        assert dense.features(x).shape == (1, 64, 8, 10)
        scores = dense(x).numpy()
        assert scores.shape == (1, 10, 2, 4)
        # the score at map position (i, j) is the VGG's classifier applied to the 7x7 window
        # of the feature map at (i, j): fc6 slides over the map with stride 1
        window = dense.features(x).numpy()[:, :, 1:8, 3:10]
        expected = small_vgg.classifier(small_vgg.flatten(minigrad.Tensor(
            np.ascontiguousarray(window)))).numpy()
        np.testing.assert_allclose(scores[0, :, 1, 3], expected[0], rtol=1e-5,
                                   atol=1e-5 * np.abs(scores).max())


def _softmax(s):
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_dense_predict_averages_space_then_flip(small_vgg):
    x = _images(2, 3, 256, 288, seed=2)
    small_vgg.train()                          # dense_predict must evaluate in eval mode
    probs = dense_predict(small_vgg, x).numpy()
    assert small_vgg.training                  # and restore the mode
    small_vgg.eval()
    dense = to_fully_convolutional(small_vgg)
    with minigrad.no_grad():
        a = dense(x).numpy().mean(axis=(2, 3))
        b = dense(minigrad.Tensor(np.ascontiguousarray(x.numpy()[..., ::-1]))).numpy().mean(axis=(2, 3))
    np.testing.assert_allclose(probs, (_softmax(a) + _softmax(b)) / 2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert probs.shape == (2, 10)
    # without flip: just the spatially averaged posteriors
    np.testing.assert_allclose(dense_predict(dense, x, flip=False).numpy(), _softmax(a), rtol=1e-5)


def test_dense_refuses_other_models():
    with pytest.raises(TypeError, match="expected a VGG"):
        to_fully_convolutional(models.create("resnet20", init=None))


# ---------------------------------------------------------------------------
# init_from (VGG Sec 3.1)
# ---------------------------------------------------------------------------
def test_init_from_copies_exactly_the_first_four_convs_and_the_fcs():
    minigrad.manual_seed(1)
    a = models.VGG("A", 10, width=8, hidden=32, name="A")
    for m in a.modules():                      # "trained" A: non-zero biases too
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.bias.data[...] = np.random.default_rng(5).standard_normal(m.bias.shape)
    minigrad.manual_seed(2)
    d = models.VGG("D", 10, width=8, hidden=32, name="D")
    copied = init_from(d, a)
    layers = ["features.conv1_1", "features.conv2_1", "features.conv3_1", "features.conv3_2",
              "classifier.fc6", "classifier.fc7", "classifier.fc8"]
    assert copied == [f"{l}.{p}" for l in layers for p in ("weight", "bias")]
    sa, sd = a.state_dict(), d.state_dict()
    for name, value in sd.items():
        if name in copied:
            np.testing.assert_array_equal(value, sa[name])
        elif name.endswith(".bias"):
            np.testing.assert_array_equal(value, 0)         # D's own initialisation
        else:
            assert name not in sa or sa[name].shape != value.shape or \
                not np.array_equal(value, sa[name]), name
    # D's own layers (conv1_2, conv3_3, ...) kept their initialisation
    assert "features.conv1_2.weight" not in copied and "features.conv3_3.weight" not in copied


def test_init_from_refuses_mismatched_shapes_and_copies_nothing():
    minigrad.manual_seed(1)
    a = models.VGG("A", 10, width=8, hidden=32, name="A")
    e = models.VGG("E", 100, width=8, hidden=32, name="E")
    before = e.state_dict()
    with pytest.raises(ValueError, match=r"classifier.fc8.weight: shape \(10, 32\) in A but "
                                         r"\(100, 32\) in E"):
        init_from(e, a)
    after = e.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(TypeError, match="must be a VGG"):
        init_from(models.create("resnet20", init=None), a)
