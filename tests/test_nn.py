"""minigrad.nn: the module system, state dicts and checkpoints, layers, init."""
import math
import os
from collections import OrderedDict

import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.nn import functional as F
from minigrad.nn import init
from minigrad.optim import SGD
from minigrad.serialization import atomic_write, load_npz, save_npz


# ---------------------------------------------------------------------------
# a small ResNet-like model, to get torch-like nested names
# ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)))


class Net(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.layer1 = nn.Sequential(Block(width, width), Block(width, width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


# ---------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------
def test_registration_of_parameters_buffers_and_modules():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(np.ones((2, 2), np.float32))
            self.register_buffer("count", np.zeros(1, np.float32))
            self.child = nn.Linear(2, 3)
            self.not_a_param = Tensor(np.ones(2))       # a plain attribute
            self.scale = 2.0

    m = M()
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    assert [n for n, _ in m.named_buffers()] == ["count"]
    assert isinstance(m.count, Tensor) and not m.count.requires_grad
    assert list(m.children()) == [m.child]
    assert [n for n, _ in m.named_modules()] == ["", "child"]
    assert m.num_parameters() == 4 + 6 + 3
    assert isinstance(m.w, nn.Parameter) and m.w.requires_grad and m.w.dtype == np.float32
    assert repr(m.w).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="parameter 'w'"):
        m.w = Tensor(np.ones((2, 2)))
    m.w = None
    assert m.w is None and [n for n, _ in m.named_parameters()][0] == "child.weight"
    m.count = np.ones(1, np.float32)                   # assigning to a buffer keeps it a buffer
    assert [n for n, _ in m.named_buffers()] == ["count"] and isinstance(m.count, Tensor)
    del m.child
    assert list(m.children()) == []
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        m.missing


def test_named_parameters_dotted_names_and_sharing():
    mg.manual_seed(0)
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["stem.weight", "stem.bias",
                     "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                     "layer1.1.conv1.weight", "layer1.1.bn1.weight", "layer1.1.bn1.bias",
                     "fc.weight", "fc.bias"]
    assert list(net.state_dict())[:7] == [
        "stem.weight", "stem.bias", "layer1.0.conv1.weight", "layer1.0.bn1.weight",
        "layer1.0.bn1.bias", "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"]
    assert "layer1.1.bn1.num_batches_tracked" in net.state_dict()
    # a module used twice is counted once
    lin = nn.Linear(3, 3)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(shared.parameters())) == 2
    assert shared.num_parameters() == 12


def test_containers():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    seq.append(c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    assert isinstance(seq[1:], nn.Sequential) and list(seq[1:]) == [b, c]
    with pytest.raises(IndexError):
        seq[3]
    named = nn.Sequential(OrderedDict([("fc", a), ("act", b)]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    assert named.fc is a
    ml = nn.ModuleList([a, c])
    ml.append(nn.Linear(1, 1))
    assert len(ml) == 3 and ml[1] is c
    assert [n for n, _ in ml.named_parameters()][-1] == "2.bias"
    x = Tensor(np.ones((4, 2), np.float32))
    assert seq(x).shape == (4, 1)


def test_train_eval_propagates():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.layer1.train()
    assert net.layer1[0].bn1.training and not net.training


def test_repr_is_nested_like_torch():
    text = repr(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Sequential(nn.ReLU())))
    assert text == ("Sequential(\n"
                    "  (0): Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))\n"
                    "  (1): Sequential(\n"
                    "    (0): ReLU()\n"
                    "  )\n"
                    ")")
    assert repr(nn.Linear(4, 2, bias=False)) == "Linear(in_features=4, out_features=2, bias=False)"


def test_forward_hooks_record_and_remove():
    mg.manual_seed(1)
    net = Net()
    stds = {}

    def record(name):
        return lambda module, inputs, output: stds.setdefault(name, []).append(
            float(output.numpy().std()))

    handles = [m.register_forward_hook(record(n)) for n, m in net.named_modules()
               if isinstance(m, nn.BatchNorm2d)]
    x = mg.randn(2, 3, 6, 6)
    net(x)
    assert sorted(stds) == ["layer1.0.bn1", "layer1.1.bn1"]
    # in training mode BN output has (close to) unit std per channel
    assert all(abs(v[0] - 1) < 0.05 for v in stds.values())
    for h in handles:
        h.remove()
    net(x)
    assert all(len(v) == 1 for v in stds.values())
    # a hook that returns a value replaces the output
    h = net.fc.register_forward_hook(lambda m, i, o: o * 0)
    assert np.all(net(x).numpy() == 0)
    h.remove()
    assert not np.all(net(x).numpy() == 0)


def test_to_double_casts_params_and_buffers_in_place():
    net = Net()
    params = list(net.parameters())
    opt = SGD(net.parameters(), lr=0.1)
    net.to(dtype=np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert opt.param_groups[0]["params"][0] is params[0]
    bn = net.layer1[0].bn1
    assert bn.running_mean.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64
    assert net(Tensor(np.ones((1, 3, 4, 4)))).dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to("float64")
    assert net.fc.weight.dtype == np.float64
    net.to("cpu")
    assert net.fc.weight.device == "cpu"


def test_zero_grad_and_apply():
    lin = nn.Linear(3, 2)
    lin(Tensor(np.ones((1, 3), np.float32))).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad()
    assert lin.weight.grad is None
    seen = []
    Net().apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Block") == 2


# ---------------------------------------------------------------------------
# state_dict, save/load
# ---------------------------------------------------------------------------
def test_state_dict_round_trip_through_npz(tmp_path):
    mg.manual_seed(0)
    a = Net()
    a(mg.randn(2, 3, 5, 5))                   # move the BN running statistics
    path = tmp_path / "model.npz"
    a.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]      # atomic: no temporary file left
    with np.load(path, allow_pickle=False) as f:
        assert "layer1.0.conv1.weight" in f.files
    mg.manual_seed(1)
    b = Net()
    w_array = b.stem.weight.data
    assert not np.array_equal(a.stem.weight.numpy(), b.stem.weight.numpy())
    b.load(path)
    assert b.stem.weight.data is w_array              # copied into the existing arrays
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
        assert sa[k].dtype == sb[k].dtype
    assert int(sb["layer1.0.bn1.num_batches_tracked"]) == 1
    # state_dict values are copies
    sa["fc.bias"][...] = 123
    assert not np.any(a.fc.bias.numpy() == 123)


def test_load_state_dict_errors_name_keys_and_shapes():
    net = Net(width=4)
    state = net.state_dict()
    missing = dict(state)
    del missing["layer1.0.bn1.running_var"]
    with pytest.raises(ValueError, match=r"missing keys: 'layer1\.0\.bn1\.running_var'"):
        net.load_state_dict(missing)
    extra = dict(state, **{"head.weight": np.zeros(3)})
    with pytest.raises(ValueError, match=r"unexpected keys: 'head\.weight'"):
        net.load_state_dict(extra)
    both = dict(missing, **{"head.weight": np.zeros(3)})
    with pytest.raises(ValueError) as info:
        net.load_state_dict(both)
    assert "layer1.0.bn1.running_var" in str(info.value) and "head.weight" in str(info.value)
    result = net.load_state_dict(both, strict=False)
    assert result.missing_keys == ["layer1.0.bn1.running_var"]
    assert result.unexpected_keys == ["head.weight"]
    wrong = Net(width=8).state_dict()
    with pytest.raises(ValueError) as info:
        net.load_state_dict(wrong)
    assert ("load_state_dict: 'layer1.0.conv1.weight' has shape (8, 8, 3, 3) in the checkpoint "
            "but (4, 4, 3, 3) in the model") in str(info.value)
    # nothing was written on failure
    np.testing.assert_array_equal(net.stem.weight.numpy(), state["stem.weight"])


def test_save_npz_nested_and_plain_values(tmp_path):
    rng_state = mg.random.get_rng_state()
    obj = {"model": {"layer1.0.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
           "optimizer": {"state": {0: {"momentum_buffer": np.ones(2)}},
                         "param_groups": [{"lr": 0.1, "nesterov": False, "params": [0, 1]}]},
           "rng": rng_state, "epoch": 7, "name": "resnet20", "best": float("inf"),
           "none": None, "shape": (3, 4), "tensor": Tensor(np.ones(2, np.float32))}
    path = tmp_path / "ckpt.npz"
    save_npz(obj, path)
    assert os.listdir(tmp_path) == ["ckpt.npz"]
    back = load_npz(path)
    np.testing.assert_array_equal(back["model"]["layer1.0.weight"], obj["model"]["layer1.0.weight"])
    assert back["model"]["layer1.0.weight"].dtype == np.float32
    np.testing.assert_array_equal(back["optimizer"]["state"][0]["momentum_buffer"], np.ones(2))
    assert back["optimizer"]["param_groups"] == obj["optimizer"]["param_groups"]
    assert back["rng"] == rng_state                   # 128-bit integers survive
    assert (back["epoch"], back["name"], back["best"], back["none"], back["shape"]) == \
        (7, "resnet20", float("inf"), None, (3, 4))
    np.testing.assert_array_equal(back["tensor"], np.ones(2))
    with np.load(path, allow_pickle=False) as f:
        assert "model/layer1.0.weight" in f.files
        assert "optimizer/state/0/momentum_buffer" in f.files
    with pytest.raises(TypeError, match="cannot store"):
        save_npz({"f": lambda: 0}, tmp_path / "bad.npz")
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]   # failed save leaves nothing

    def crash(f):
        f.write(b"half a file")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)                          # a crash while writing...
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]   # ...leaves no temporary file
    assert load_npz(path)["epoch"] == 7                    # and the old checkpoint intact


# ---------------------------------------------------------------------------
# input checking
# ---------------------------------------------------------------------------
def test_conv2d_error_messages():
    conv = nn.Conv2d(3, 16, 3, padding=1)
    with pytest.raises(ValueError) as info:
        conv(Tensor(np.zeros((2, 4, 32, 32), np.float32)))
    assert str(info.value) == ("Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), "
                               "padding=(1, 1)): expected input (N, 3, H, W), got shape (2, 4, 32, 32)")
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\), got shape \(3, 32, 32\)"):
        conv(Tensor(np.zeros((3, 32, 32), np.float32)))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        nn.Conv2d(3, 4, 5)(Tensor(np.zeros((1, 3, 2, 2), np.float32)))
    with pytest.raises(ValueError, match="in_channels"):
        nn.Conv2d(0, 4, 3)


def test_linear_and_bn_error_messages():
    with pytest.raises(ValueError) as info:
        nn.Linear(4, 3)(Tensor(np.zeros((2, 5), np.float32)))
    assert str(info.value) == ("Linear(in_features=4, out_features=3, bias=True): "
                               "expected input (..., 4), got shape (2, 5)")
    with pytest.raises(ValueError, match=r"BatchNorm2d\(8.*expected input \(N, 8, H, W\), "
                                         r"got shape \(2, 4, 3, 3\)"):
        nn.BatchNorm2d(8)(Tensor(np.zeros((2, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(8.*got shape \(2, 4, 3, 3\)"):
        nn.BatchNorm1d(8)(Tensor(np.zeros((2, 4, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm1d(3)(Tensor(np.zeros((1, 3), np.float32)))
    with pytest.raises(ValueError, match=r"MaxPool2d.*got shape \(4, 4\)"):
        nn.MaxPool2d(2)(Tensor(np.zeros((4, 4), np.float32)))
    with pytest.raises(ValueError, match="Dropout"):
        nn.Dropout(1.5)


# ---------------------------------------------------------------------------
# initialisation
# ---------------------------------------------------------------------------
def test_kaiming_normal_statistics():
    mg.manual_seed(0)
    w = nn.Parameter(np.empty((256, 128, 3, 3), np.float32))
    init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
    fan_in = 128 * 9
    assert abs(w.numpy().std() / math.sqrt(2 / fan_in) - 1) < 0.02
    assert abs(w.numpy().mean()) < 0.02 * math.sqrt(2 / fan_in) * 10
    init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.numpy().std() / math.sqrt(2 / (256 * 9)) - 1) < 0.02
    assert w.dtype == np.float32


def test_xavier_and_uniform_bounds_and_constants():
    mg.manual_seed(0)
    w = Tensor(np.empty((300, 200), np.float64))
    init.xavier_uniform_(w, gain=init.calculate_gain("relu"))
    bound = math.sqrt(2) * math.sqrt(6 / 500)
    a = w.numpy()
    assert a.max() <= bound and a.min() >= -bound and a.max() > 0.98 * bound
    assert abs(a.std() / (bound / math.sqrt(3)) - 1) < 0.02
    init.xavier_normal_(w)
    assert abs(w.numpy().std() / math.sqrt(2 / 500) - 1) < 0.02
    init.kaiming_uniform_(w, a=0, nonlinearity="relu")
    assert np.abs(w.numpy()).max() <= math.sqrt(6 / 200)
    init.uniform_(w, -0.5, 0.25)
    assert w.numpy().min() >= -0.5 and w.numpy().max() < 0.25
    init.normal_(w, mean=3.0, std=0.1)
    assert abs(w.numpy().mean() - 3.0) < 0.01 and abs(w.numpy().std() - 0.1) < 0.005
    init.constant_(w, 0.3)
    assert np.all(w.numpy() == 0.3)
    init.zeros_(w)
    assert not w.numpy().any()
    init.ones_(w)
    assert np.all(w.numpy() == 1)
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    with pytest.raises(ValueError, match="at least 2"):
        init.xavier_uniform_(Tensor(np.zeros(3)))


def test_default_init_is_torch_like_and_seeded():
    mg.manual_seed(42)
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / math.sqrt(16 * 9)
    w = conv.weight.numpy()
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert np.abs(conv.bias.numpy()).max() <= bound
    lin = nn.Linear(50, 10)
    assert np.abs(lin.weight.numpy()).max() <= 1 / math.sqrt(50)
    mg.manual_seed(42)
    again = nn.Conv2d(16, 32, 3)
    np.testing.assert_array_equal(again.weight.numpy(), w)
    bn = nn.BatchNorm2d(5)
    assert np.all(bn.weight.numpy() == 1) and not bn.bias.numpy().any()


# ---------------------------------------------------------------------------
# layers against functions and simple oracles
# ---------------------------------------------------------------------------
def _distinct(shape, seed=0, scale=0.1):
    """Shuffled, well separated values: no max-pool ties, no ReLU input near 0."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    vals = (np.arange(n) - n / 2 + 0.5) * scale
    return rng.permutation(vals).reshape(shape)


def test_conv_and_linear_match_numpy_oracles():
    mg.manual_seed(3)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    out = conv(Tensor(x)).numpy()
    w, b = conv.weight.numpy(), conv.bias.numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((2, 3, 3, 3))
    for n in range(2):
        for o in range(3):
            for i in range(3):
                for j in range(3):
                    want[n, o, i, j] = (xp[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[o]).sum() + b[o]
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out, F.conv2d(Tensor(x), conv.weight, conv.bias, 2, 1).numpy())
    lin = nn.Linear(4, 3).double()
    xl = np.random.default_rng(1).standard_normal((5, 4))
    np.testing.assert_allclose(lin(Tensor(xl)).numpy(),
                               xl @ lin.weight.numpy().T + lin.bias.numpy(), rtol=1e-12)


def test_layers_match_functions():
    x = Tensor(_distinct((2, 6, 4, 4)))
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), F.relu(x).numpy())
    np.testing.assert_array_equal(nn.MaxPool2d(2)(x).numpy(), F.max_pool2d(x, 2).numpy())
    np.testing.assert_array_equal(nn.MaxPool2d(3, 1, 1)(x).numpy(), F.max_pool2d(x, 3, 1, 1).numpy())
    np.testing.assert_array_equal(nn.AvgPool2d(2)(x).numpy(), F.avg_pool2d(x, 2).numpy())
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(1)(x).numpy(),
                               x.numpy().mean(axis=(2, 3), keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(nn.LocalResponseNorm()(x).numpy(),
                                  F.local_response_norm(x, 5, 1e-4, 0.75, 2.0).numpy())
    assert nn.Flatten()(x).shape == (2, 96) and nn.Flatten(2)(x).shape == (2, 6, 16)
    assert nn.Identity(3, foo=1)(x) is x
    logits = np.random.default_rng(0).standard_normal((4, 5))
    target = np.array([0, 3, 4, 1])
    ce = nn.CrossEntropyLoss()(Tensor(logits), Tensor(target)).item()
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert ce == pytest.approx(-logp[np.arange(4), target].mean(), rel=1e-10)


def test_batchnorm_running_statistics_and_eval():
    rng = np.random.default_rng(0)
    bn = nn.BatchNorm2d(3, momentum=0.1).double()
    x = rng.standard_normal((4, 3, 2, 2)) * 2 + 1
    out = bn(Tensor(x)).numpy()
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * mean, rtol=1e-10)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * var * 16 / 15, rtol=1e-10)
    assert int(bn.num_batches_tracked.item()) == 1
    bn.eval()
    y = bn(Tensor(x)).numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    np.testing.assert_allclose(y, (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5),
                               rtol=1e-8)
    assert int(bn.num_batches_tracked.item()) == 1
    # momentum=None: cumulative average of the batch statistics
    cum = nn.BatchNorm1d(2, momentum=None).double()
    batches = [rng.standard_normal((5, 2)) + k for k in range(3)]
    for b in batches:
        cum(Tensor(b))
    np.testing.assert_allclose(cum.running_mean.numpy(), np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-10)


def test_dropout_train_and_eval():
    mg.manual_seed(0)
    drop = nn.Dropout(0.25)
    x = Tensor(np.ones((100, 100), np.float32))
    y = drop(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


# ---------------------------------------------------------------------------
# gradient checks of every layer (float64, tiny shapes)
# ---------------------------------------------------------------------------
def _check_layer(layer, x):
    x = Tensor(x, requires_grad=True)
    params = [p for p in layer.parameters()]
    assert mg.gradcheck(lambda inp, *ps: layer(inp), [x, *params])


def test_gradcheck_conv2d():
    mg.manual_seed(0)
    _check_layer(nn.Conv2d(2, 3, 3, stride=2, padding=1).double(),
                 np.random.default_rng(0).standard_normal((2, 2, 5, 5)))


def test_gradcheck_linear():
    mg.manual_seed(0)
    _check_layer(nn.Linear(4, 3).double(), np.random.default_rng(0).standard_normal((5, 4)))


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm2d, (3, 2, 2, 3))])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_batchnorm(cls, shape, training):
    rng = np.random.default_rng(0)
    bn = cls(shape[1]).double()
    bn.weight.data[...] = rng.uniform(0.5, 1.5, shape[1])
    bn.bias.data[...] = rng.standard_normal(shape[1])
    bn.running_mean.data[...] = rng.standard_normal(shape[1])
    bn.running_var.data[...] = rng.uniform(0.5, 2, shape[1])
    bn.train(training)
    _check_layer(bn, rng.standard_normal(shape))


def test_gradcheck_local_response_norm():
    _check_layer(nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0),
                 np.random.default_rng(0).standard_normal((1, 5, 2, 2)))


@pytest.mark.parametrize("layer", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1),
                                   nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1),
                                   nn.AdaptiveAvgPool2d(2)], ids=repr)
def test_gradcheck_pools(layer):
    _check_layer(layer, _distinct((1, 2, 4, 4)))


def test_gradcheck_relu_flatten_dropout():
    _check_layer(nn.Sequential(nn.ReLU(), nn.Flatten()), _distinct((2, 2, 3)))
    drop = nn.Dropout(0.5)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 5)), requires_grad=True)

    def f(t):
        mg.manual_seed(7)             # the same mask on every call
        return drop(t)
    assert mg.gradcheck(f, [x])


# ---------------------------------------------------------------------------
# checkpoints of arbitrary structure
# ---------------------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_leaves = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=5)
           | hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_]),
                        hnp.array_shapes(min_dims=0, max_dims=3, max_side=3)))
_keys = st.text(alphabet="abc.0_", min_size=1, max_size=4) | st.integers(0, 5)
_trees = st.recursive(_leaves, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(_keys, kids, max_size=3), max_leaves=8)


def _same(a, b):
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and a.tobytes() == b.tobytes())          # bit-exact, NaN included
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=st.dictionaries(_keys, _trees, max_size=4))
def test_save_load_round_trips_any_structure(tree, tmp_path):
    path = tmp_path / "tree.npz"
    try:
        save_npz(tree, path)
    except ValueError as err:            # two keys mapping to one name, e.g. 0 and "0"
        assert "map to the archive name" in str(err)
        return
    assert _same(tree, load_npz(path))
