# %% [markdown]
# # 6 · Training a ResNet on CIFAR-10, end to end
#
# Everything from notebooks 1-4 at work: the data, the paper's augmentation, a ResNet, SGD with
# momentum and a step learning-rate schedule, and a look at what the trained network gets wrong.
# The recipe is the ResNet paper's CIFAR-10 setup (Sec. 4.2):
#
# * **per-pixel mean subtraction**; augmentation by **padding 4 pixels** on each side and taking
#   a **random 32×32 crop**, plus a **random horizontal flip** (VGG, Sec. 3.1, uses crops and
#   flips too);
# * **SGD**, momentum 0.9, weight decay $10^{-4}$, batch 128, learning rate 0.1 **divided by 10**
#   at fixed points;
# * a ResNet-20 (option A shortcuts, He initialisation, batch normalisation).
#
# The paper trains 64,000 iterations (164 epochs on 45k images) to reach 8.75% test error. On a
# laptop CPU we train a few epochs on the subset of CIFAR-10 shipped alongside minigrad (5,438
# training and 1,017 test images; a synthetic stand-in when it is absent), so expect a network
# that has clearly learned something, far from the paper's accuracy. For the real run, use
# `examples/train_cifar_resnet.py`.

# %%
import os
import sys
import time
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minigrad" / "__init__.py").exists())
sys.path.insert(0, str(ROOT))
QUICK = os.environ.get("MINIGRAD_NOTEBOOK_QUICK", "0") == "1"

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import display

import minigrad
from minigrad import Tensor
import minigrad.nn.functional as F
import minigrad.models as models
import minigrad.optim as optim
from minigrad.data import CIFAR10, DataLoader, SyntheticImages, transforms as T
from minigrad.training import predict_logits

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
minigrad.manual_seed(0)
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. The data
#
# The CIFAR-10 subset is found like the tests find it: `$MINIGRAD_CIFAR10_DIR`, or
# `../shared/data/cifar-10-batches-py` next to the repository. `CIFAR10(...).data` is uint8 in
# NCHW layout, `(N, 3, 32, 32)`.

# %%
CIFAR_DIR = Path(os.environ.get("MINIGRAD_CIFAR10_DIR", ROOT.parent / "shared" / "data" / "cifar-10-batches-py"))
if (CIFAR_DIR / "data_batch_1").exists():
    train_set, test_set = CIFAR10(str(CIFAR_DIR), train=True), CIFAR10(str(CIFAR_DIR), train=False)
else:
    print(f"CIFAR-10 not found at {CIFAR_DIR}: using synthetic CIFAR-shaped images instead")
    train_set, test_set = SyntheticImages(n=3000, seed=0), SyntheticImages(n=600, seed=1)
classes = train_set.classes
print(train_set)
print(test_set)

fig, ax = plt.subplots(figsize=(8, 2.6))
ax.bar(classes, np.bincount(train_set.targets, minlength=len(classes)), label="train")
ax.bar(classes, np.bincount(test_set.targets, minlength=len(classes)), label="test")
ax.set_ylabel("images"); ax.legend(); ax.tick_params(axis="x", rotation=30)
ax.set_title("images per class")
plt.show()

# %%
def show_grid(images, titles=None, rows=None, cols=8, size=1.2, fontsize=8, title_lines=1):
    """Show uint8 (or 0..1 float) images (N, 3, H, W) in a grid."""
    n = len(images)
    rows = rows or -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.2 * title_lines)))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            img = images[i].transpose(1, 2, 0)
            ax.imshow(img if img.dtype == np.uint8 else np.clip(img, 0, 1))
            if titles is not None:
                ax.set_title(titles[i], fontsize=fontsize)
    plt.tight_layout()
    plt.show()


per_class = 6
idx = np.concatenate([np.flatnonzero(train_set.targets == k)[:per_class] for k in range(len(classes))])
show_grid(train_set.data[idx], [classes[train_set.targets[i]] for i in idx], cols=per_class, size=0.9, fontsize=7)

# %% [markdown]
# ## 2. Preprocessing and augmentation
#
# The paper subtracts the **per-pixel mean** of the training set (a 3×32×32 image, drawn below)
# and augments each training image every time it is used: pad 4 pixels with zeros, crop a random
# 32×32 window, flip left-right with probability 1/2. The transforms of `minigrad.data.transforms`
# work on whole NCHW batches with a seeded generator, so every run sees the same batches.

# %%
mean_img = T.mean_image(train_set.data)                       # (3, 32, 32), in the 0..1 scale
augment = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])

one = train_set.data[idx[3 * per_class]][None].astype(np.float32) / 255     # a single image
rng = np.random.default_rng(0)
views = np.concatenate([one] + [augment(one, rng) for _ in range(7)])
fig, axes = plt.subplots(1, 3, figsize=(7, 2.5))
axes[0].imshow(mean_img.transpose(1, 2, 0)); axes[0].set_title("per-pixel mean image")
axes[1].imshow(one[0].transpose(1, 2, 0)); axes[1].set_title("an image")
d = (one[0] - mean_img).transpose(1, 2, 0)
axes[2].imshow(np.clip(d / (2 * np.abs(d).max()) + 0.5, 0, 1)); axes[2].set_title("minus the mean")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()
show_grid(views, ["original"] + [f"augmented {i}" for i in range(1, 8)], cols=8)

# %% [markdown]
# The `DataLoader` shuffles with a seed, applies the batch transform, and hands out float32
# batches in the 0..1 scale (the model sees them with the mean subtracted):

# %%
BATCH = 64 if QUICK else 128
train_tf = T.Compose([T.SubtractMean(mean_img), T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
test_tf = T.SubtractMean(mean_img)
if QUICK:                                  # a small slice keeps the quick run short
    train_data = (train_set.data[:512], train_set.targets[:512])
    test_images, test_labels = test_set.data[:256], np.asarray(test_set.targets[:256])
else:
    train_data = train_set
    test_images, test_labels = test_set.data, np.asarray(test_set.targets)
loader = DataLoader(train_data, batch_size=BATCH, shuffle=True, seed=0, transform=train_tf)
xb, yb = next(iter(loader))
print(f"{len(loader)} batches per epoch; a batch: images {xb.shape} {xb.dtype}, labels {yb.shape} {yb.dtype}")
print(f"pixel range after mean subtraction: {xb.min():.2f} .. {xb.max():.2f}")

# %% [markdown]
# ## 3. Training, with live curves
#
# A ResNet-20 (quick mode: a tiny one) trained with the paper's optimiser. The learning rate
# follows the paper's shape, compressed into a few epochs: a short warm-up at 0.01 (the paper
# uses one for ResNet-110), then 0.1, divided by 10 for the last epoch. The plot updates after
# every epoch: training loss and error (measured on the augmented batches while training, as
# the paper's training curves are) and test error.

# %%
if QUICK:
    model = models.create("resnet20", blocks_per_stage=1, width=4)
    EPOCHS = 2
else:
    model = models.create("resnet20")
    EPOCHS = 3
print(f"{model.name}: {model.num_parameters():,} parameters; {EPOCHS} epochs of {len(loader)} iterations")

opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
iters = EPOCHS * len(loader)
warmup = max(1, len(loader) // 4)
milestone = (EPOCHS - 1) * len(loader)


def lr_at(it):
    """Warm-up at 0.01, then 0.1, then 0.01 for the last epoch."""
    return 0.01 if it < warmup else (0.1 if it < milestone else 0.01)


history = {"it": [], "loss": [], "err": [], "lr": [], "epoch_it": [], "test_err": [], "train_err": []}


def draw(fig, axes):
    for ax in axes:
        ax.clear()
    k = max(1, len(loader) // 8)
    sm = lambda v: np.convolve(v, np.ones(k) / k, mode="valid")
    its = np.asarray(history["it"])
    axes[0].plot(its[k - 1:], sm(history["loss"]), label="training loss (smoothed)")
    axes[0].set_xlabel("iteration"); axes[0].set_ylabel("cross-entropy"); axes[0].grid(alpha=0.3)
    axes[1].plot(its[k - 1:], sm(history["err"]), label="training error (batches, smoothed)", alpha=0.6)
    axes[1].plot(history["epoch_it"], history["train_err"], "o-", label="training error (epoch)")
    axes[1].plot(history["epoch_it"], history["test_err"], "s-", lw=2, label="test error")
    axes[1].set_xlabel("iteration"); axes[1].set_ylabel("error"); axes[1].set_ylim(0, 1)
    axes[1].grid(alpha=0.3); axes[1].legend(fontsize=8)
    axes[2].plot(its, history["lr"], "k-")
    axes[2].set_xlabel("iteration"); axes[2].set_ylabel("learning rate"); axes[2].grid(alpha=0.3)
    axes[0].set_title(f"epoch {len(history['test_err'])} of {EPOCHS}")
    fig.tight_layout()


fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [3, 3, 2]})
plt.close(fig)                                   # shown through the display handle below
handle = display(fig, display_id=True)
t_start, it = time.perf_counter(), 0
for epoch in range(EPOCHS):
    model.train()
    wrong = seen = 0
    for xb, yb in loader:
        for group in opt.param_groups:
            group["lr"] = lr_at(it)
        logits = model(Tensor(xb))
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pred = logits.numpy().argmax(1)
        wrong += int((pred != yb).sum()); seen += len(yb)
        history["it"].append(it); history["loss"].append(loss.item())
        history["err"].append(float((pred != yb).mean())); history["lr"].append(lr_at(it))
        it += 1
    test_pred = predict_logits(model, test_images, transform=test_tf).argmax(1)
    history["epoch_it"].append(it); history["train_err"].append(wrong / seen)
    history["test_err"].append(float((test_pred != test_labels).mean()))
    draw(fig, axes)
    handle.update(fig)
    print(f"epoch {epoch + 1}: train error {wrong / seen:.1%}, test error {history['test_err'][-1]:.1%}, "
          f"{time.perf_counter() - t_start:.0f} s so far")

# %% [markdown]
# ## 4. What the network gets wrong
#
# The **confusion matrix** counts, for every true class (row), how the test images of that class
# were classified (column); the diagonal is the correct ones. For CIFAR-10 the classic confusions
# are among the animals (cat / dog, deer / horse) and among the vehicles (automobile / truck,
# airplane / ship).

# %%
logits = predict_logits(model, test_images, transform=test_tf)
pred = logits.argmax(1)
K = len(classes)
cm = np.zeros((K, K), dtype=int)
np.add.at(cm, (test_labels, pred), 1)

fig, ax = plt.subplots(figsize=(6.5, 5.5))
im = ax.imshow(cm, cmap="Blues")
for (r, c), v in np.ndenumerate(cm):
    ax.text(c, r, v, ha="center", va="center", fontsize=8, color="w" if v > cm.max() / 2 else "k")
ax.set_xticks(range(K), classes, rotation=45, ha="right"); ax.set_yticks(range(K), classes)
ax.set_xlabel("predicted"); ax.set_ylabel("true")
ax.set_title(f"test confusion matrix (accuracy {np.trace(cm) / cm.sum():.1%})")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.tight_layout()
plt.show()
for k in range(K):
    print(f"{classes[k]:>11}: {cm[k, k] / max(cm[k].sum(), 1):.0%} correct")

# %% [markdown]
# Some misclassified test images, with the predicted class, its probability and the true class.
# The most confident mistakes are the interesting ones:

# %%
z = logits - logits.max(1, keepdims=True)
probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
wrong_idx = np.flatnonzero(pred != test_labels)
wrong_idx = wrong_idx[np.argsort(-probs[wrong_idx, pred[wrong_idx]])][:16]
show_grid(test_images[wrong_idx],
          [f"{classes[pred[i]]} {probs[i, pred[i]]:.0%}\n(true: {classes[test_labels[i]]})" for i in wrong_idx],
          cols=8, size=1.45, fontsize=7, title_lines=2)

# %% [markdown]
# **Where to go from here.** `python examples/train_cifar_resnet.py` runs the same recipe as a
# proper experiment: the paper's learning-rate schedule, checkpoints that resume exactly, metrics
# in CSV and a curves plot. Notebook 4 compares plain and residual nets; notebook 3 looks inside
# VGG.
