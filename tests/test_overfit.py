"""A small CNN must be able to memorise 64 real CIFAR-10 images.

This is the classic "can it overfit a tiny batch?" check: if any layer's
forward or backward, the initialisation or the optimizer is wrong, training
accuracy stalls far below 100%.
"""
import pickle

import numpy as np

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.nn import functional as F
from minigrad.optim import SGD


def _load_64(cifar10_dir):
    with open(cifar10_dir / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    x = np.asarray(batch[b"data"][:64], dtype=np.float32).reshape(-1, 3, 32, 32) / 255.0
    y = np.asarray(batch[b"labels"][:64], dtype=np.int64)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    std = x.std(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / std, y


def _small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10))


def test_small_cnn_overfits_64_cifar_images(cifar10_dir):
    x, y = _load_64(cifar10_dir)
    assert x.shape == (64, 3, 32, 32) and len(np.unique(y)) > 5
    mg.manual_seed(0)
    model = _small_cnn()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xt, yt = Tensor(x), Tensor(y)

    def accuracy():
        model.eval()
        with mg.no_grad():
            pred = model(xt).numpy().argmax(axis=1)
        model.train()
        return float((pred == y).mean())

    first_loss, acc = None, accuracy()
    assert acc < 0.5                                  # it has not seen the labels yet
    for step in range(200):
        loss = F.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first_loss = loss.item() if first_loss is None else first_loss
        if step % 10 == 9:
            acc = accuracy()
            if acc >= 0.95:
                break
    assert acc >= 0.95, f"training accuracy {acc:.2f} after {step + 1} steps (loss {loss.item():.3f})"
    assert loss.item() < 0.5 * first_loss
