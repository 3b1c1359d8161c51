# %% [markdown]
# # 3 · VGG: very deep stacks of 3×3 convolutions
#
# Simonyan & Zisserman (ICLR 2015) asked one question: what happens to accuracy when a
# convolutional network gets **deeper**, if every convolution is the smallest useful one, 3×3?
# This notebook builds their networks from `minigrad.models` and looks inside:
#
# 1. the configurations **A–E of Table 1** as a table computed from the real models, with the
#    parameter counts of Table 2 (Sec. 2.2);
# 2. **where the parameters and the arithmetic are**, layer by layer (`minigrad.models.summary`);
# 3. **why 3×3**: three stacked 3×3 layers see 7×7 like one 7×7 layer, with
#    $27C^2$ instead of $49C^2$ weights (Sec. 2.3), computed from real layers, and the receptive
#    field drawn by back-propagating from one output pixel;
# 4. **LRN** on and off (net A vs A-LRN; Sec. 2.2 and 4.1 conclude it does not help);
# 5. **dense evaluation** (Sec. 3.2): the fully connected layers turned into convolutions, the
#    net run on a larger image, and its class **score map**.
#
# The ImageNet VGGs are big (VGG-16 has 138 M parameters and needs 15.5 G multiply-adds per
# 224×224 image), so where a forward pass is needed in quick mode the notebook uses a thinner
# copy of the same layout (`width=8`).

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
from IPython.display import Markdown, display

import minigrad
from minigrad import Tensor, nn
import minigrad.models as models

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
minigrad.manual_seed(0)
print("quick mode" if QUICK else "full mode")
print("VGG models in the registry:", models.list_models(family="vgg"))

# %% [markdown]
# ## 1. Table 1, from the real models
#
# Each configuration is built with `init=None` (no initialisation: we only count), then its
# layers are walked: the conv widths per stage (stages end at a max-pool), the number of
# **weight layers** (conv + fully connected), the parameters, and the multiply-adds per
# 224×224 image, $C_{in} C_{out} k^2 H_o W_o$ for a conv and $n_{in} n_{out}$ for an FC layer.

# %%
CONFIGS = [("A", "vgg11"), ("A-LRN", "vgg11_lrn"), ("B", "vgg13"), ("C", "vgg16_1x1"),
           ("D", "vgg16"), ("E", "vgg19")]
PAPER_PARAMS_M = {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}


def describe(model, size=224):
    """Stages as text, weight layers, parameters and mult-adds from the model's layers."""
    stages, current, madds, weight_layers = [], [], 0, 0
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0]
            current.append(f"{layer.out_channels}" if k == 3 else f"conv{k}-{layer.out_channels}")
            madds += layer.in_channels * layer.out_channels * k * k * size * size
            weight_layers += 1
        elif isinstance(layer, nn.LocalResponseNorm):
            current.append("LRN")
        elif isinstance(layer, nn.MaxPool2d):
            stages.append(", ".join(current)); current = []
            size //= 2
    for layer in model.classifier:
        if isinstance(layer, nn.Linear):
            madds += layer.in_features * layer.out_features
            weight_layers += 1
    return stages, weight_layers, model.num_parameters(), madds


lines = ["| config | name | weight layers | stage 1 | stage 2 | stage 3 | stage 4 | stage 5 "
         "| parameters | paper (Table 2) | mult-adds / image |",
         "|---" * 11 + "|"]
for config, name in CONFIGS:
    model = models.create(name, init=None)
    stages, n_weight, n_params, madds = describe(model)
    lines.append(f"| {config} | `{name}` | {n_weight} | " + " | ".join(stages)
                 + f" | {n_params:,} | {PAPER_PARAMS_M[config]} M | {madds / 1e9:.2f} G |")
    del model
display(Markdown("\n".join(lines)))

# %% [markdown]
# Every configuration ends with the same three fully connected layers (FC-4096, FC-4096,
# FC-1000). The parameter counts round to the paper's 133 / 133 / 133 / 134 / 138 / 144 million:
# going from 11 to 19 layers adds only 8% more parameters, but 2.6× more arithmetic.
#
# ## 2. Where the parameters and the arithmetic are
#
# `models.summary(model, input_shape)` runs one forward pass and lists every layer with its
# output shape, parameters, multiply-adds and receptive field. For VGG-16 (D):

# %%
if QUICK:   # same layout, 8x thinner (64x fewer conv weights): a fast forward pass
    vgg16 = models.create("vgg16", width=8)
    note = " (quick mode: width=8, so the conv numbers are 64x smaller than the real VGG-16)"
else:
    vgg16 = models.create("vgg16", init="zeros")     # counting only: zeros are fastest
    note = ""
t0 = time.perf_counter()
s16 = models.summary(vgg16, (3, 224, 224))
print(f"summary in {time.perf_counter() - t0:.1f} s{note}\n")
print(s16)

# %%
rows = [r for r in s16.rows if r.type in ("Conv2d", "Linear")]
names = [r.name.split(".")[-1] for r in rows]
fig, (a0, a1) = plt.subplots(1, 2, figsize=(13, 3.8))
colors = ["tab:blue" if r.type == "Conv2d" else "tab:orange" for r in rows]
a0.bar(names, [r.params / 1e6 for r in rows], color=colors)
a0.set_ylabel("parameters (millions)"); a0.set_title("parameters per layer" + note, fontsize=10)
a1.bar(names, [r.madds / 1e9 for r in rows], color=colors)
a1.set_ylabel("multiply-adds per image (G)"); a1.set_title("arithmetic per layer (blue: conv, orange: FC)")
for ax in (a0, a1):
    ax.tick_params(axis="x", rotation=70, labelsize=8)
plt.tight_layout()
plt.show()
conv_p = sum(r.params for r in rows if r.type == "Conv2d")
conv_m = sum(r.madds for r in rows if r.type == "Conv2d")
print(f"conv layers: {conv_p / s16.total_params:.0%} of the parameters, "
      f"{conv_m / s16.total_madds:.0%} of the multiply-adds")

# %% [markdown]
# The picture is lopsided in two opposite ways: the **fully connected layers hold most of the
# parameters** (fc6 alone, a 25088 → 4096 matrix, has 103 M of VGG-16's 138 M), while the
# **convolutions do almost all of the arithmetic**. That arithmetic is spread evenly over the
# first four stages: each max-pool quarters the number of pixels while the doubled width
# quadruples the weights per layer, so a stage's convolutions cost the same at every resolution
# (stage 5 keeps 512 channels and costs less). Notebook 2's im2col is where that arithmetic
# happens.
#
# ## 3. Why 3×3: a stack of small filters vs one large filter
#
# Sec. 2.3: a stack of three 3×3 conv layers (stride 1) has the same **receptive field** as one
# 7×7 layer, but with $C$ channels in and out it has $3 \cdot 3^2 C^2 = 27C^2$ weights instead of
# $7^2 C^2 = 49C^2$, and three ReLUs instead of one, making the function more discriminative.
# Counted from real layers, without biases:

# %%
C = 64
stack = nn.Sequential(nn.Conv2d(C, C, 3, padding=1, bias=False), nn.ReLU(),
                      nn.Conv2d(C, C, 3, padding=1, bias=False), nn.ReLU(),
                      nn.Conv2d(C, C, 3, padding=1, bias=False), nn.ReLU())
single = nn.Sequential(nn.Conv2d(C, C, 7, padding=3, bias=False), nn.ReLU())
p_stack, p_single = stack.num_parameters(), single.num_parameters()
print(f"C = {C}: three 3x3 layers {p_stack:,} weights = {p_stack // C**2} C^2;  "
      f"one 7x7 layer {p_single:,} = {p_single // C**2} C^2  ({p_single / p_stack - 1:.0%} more)")
rf_stack = models.summary(stack, (C, 16, 16)).rows[-1].receptive_field
rf_single = models.summary(single, (C, 16, 16)).rows[-1].receptive_field
print("receptive field (from summary): stack", rf_stack, " single 7x7", rf_single)

# %% [markdown]
# The receptive field can also be **seen** with one backward pass: take a single output pixel,
# back-propagate from it, and look at which input pixels get a non-zero gradient. Below, one,
# two and three stacked 3×3 convolutions (all weights 1, no ReLU, so every path counts once)
# and a single 7×7. The stacks reach 3×3, 5×5 and 7×7 pixels, but unlike the 7×7 filter they
# weigh the **centre** most: many more paths lead through the middle pixels.

# %%
def input_gradient(layers, size=15):
    """|d out[centre] / d input| for a stack of conv layers with all-ones weights."""
    net = nn.Sequential(*layers)
    for p in net.parameters():
        p.data[...] = 1.0
    x = Tensor(np.zeros((1, 1, size, size), dtype=np.float32), requires_grad=True)
    y = net(x)
    y[0, 0, size // 2, size // 2].backward()
    return x.grad.numpy()[0, 0]


conv3 = lambda: nn.Conv2d(1, 1, 3, padding=1, bias=False)
panels = [("one 3x3", [conv3()]), ("two 3x3", [conv3(), conv3()]),
          ("three 3x3", [conv3(), conv3(), conv3()]),
          ("one 7x7", [nn.Conv2d(1, 1, 7, padding=3, bias=False)])]
fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, (title, layers) in zip(axes, panels):
    g = input_gradient(layers)
    ax.imshow(g, cmap="magma")
    support = np.argwhere(g > 0)
    h, w = support.max(0) - support.min(0) + 1
    ax.set_title(f"{title}: sees {h}x{w}")
    for (r, c), v in np.ndenumerate(g):
        if v:
            ax.text(c, r, int(v), ha="center", va="center", fontsize=6,
                    color="w" if v < g.max() / 2 else "k")
    ax.set_xticks([]); ax.set_yticks([])
plt.suptitle("gradient of one output pixel w.r.t. the input (number of paths)")
plt.tight_layout(rect=(0, 0, 1, 0.92))
plt.show()

# %% [markdown]
# ## 4. Local Response Normalisation: A vs A-LRN
#
# A-LRN adds AlexNet's LRN after the first layer. Each activation is divided by a power of the
# energy of its neighbours across $n=5$ channels:
#
# $$ b_c = a_c \Big/ \Big(k + \alpha \sum_{c' = c-2}^{c+2} a_{c'}^2\Big)^{\beta}, \qquad n=5,\ k=2,\ \alpha=10^{-4},\ \beta=0.75 . $$
#
# (minigrad follows the paper: PyTorch's `LocalResponseNorm` divides $\alpha$ by $n$ and defaults
# to $k=1$.) LRN has no parameters, so A and A-LRN have the same count:

# %%
a, a_lrn = models.create("vgg11", init=None), models.create("vgg11_lrn", init=None)
print(f"A: {a.num_parameters():,} parameters   A-LRN: {a_lrn.num_parameters():,}")
print("A-LRN stage 1:", [type(m).__name__ for m in list(a_lrn.features)[:4]])
del a, a_lrn

# %% [markdown]
# What does it do to real responses? We run the first conv layer and ReLU of a (randomly
# initialised, He) A-LRN net on a real image preprocessed as in the paper (the mean RGB value
# subtracted, pixels in 0..255) and compare each activation before and after LRN:

# %%
CIFAR_DIR = Path(os.environ.get("MINIGRAD_CIFAR10_DIR", ROOT.parent / "shared" / "data" / "cifar-10-batches-py"))
if (CIFAR_DIR / "test_batch").exists():
    from minigrad.data import CIFAR10
    dataset, source = CIFAR10(str(CIFAR_DIR), train=False), "CIFAR-10 test set"
else:
    from minigrad.data import SyntheticImages
    dataset, source = SyntheticImages(n=16, seed=0), "synthetic images"


def image_chw(i):
    """Image i as float32 (3, 32, 32) in 0..255."""
    img = np.asarray(dataset[i][0], dtype=np.float32)
    if img.shape[0] != 3:
        img = img.transpose(2, 0, 1)
    return img * 255.0 if img.max() <= 1.5 else img


img = image_chw(3)
x = Tensor((img - img.mean(axis=(1, 2), keepdims=True))[None])        # mean RGB subtracted
vgg_lrn = models.create("vgg11_lrn", width=8 if QUICK else 64, hidden=16, num_classes=10)
first = list(vgg_lrn.features)[:2]                                     # conv1_1, relu1_1
lrn = vgg_lrn.features.lrn1
with minigrad.no_grad():
    act = nn.Sequential(*first)(x)
    out = lrn(act)
a_np, b_np = act.numpy().ravel(), out.numpy().ravel()
fig, ax = plt.subplots(figsize=(5, 4))
ax.plot(a_np[::7], b_np[::7], ".", ms=2, alpha=0.5)
lim = a_np.max()
ax.plot([0, lim], [0, lim * 2 ** -0.75], "k--", lw=1, label="b = a / 2^0.75 (no neighbours)")
ax.set_xlabel("activation a (after ReLU)"); ax.set_ylabel("b = LRN(a)")
ax.set_title(f"LRN after conv1_1 ({source})", fontsize=10); ax.legend()
plt.show()
print(f"mean b/a over active units: {np.mean(b_np[a_np > 0] / a_np[a_np > 0]):.3f} "
      f"(2^-0.75 = {2 ** -0.75:.3f})")

# %% [markdown]
# For small activations the denominator is close to $k^{\beta} = 2^{0.75}$ and LRN is just a
# constant scale (the dashed line). But on the paper's input scale (pixels 0..255 with the mean
# subtracted) the first layer's activations reach the hundreds, and then the sum of squares
# over the 5 neighbouring channels dominates: strong responses are **squashed**, the more so the
# stronger their neighbours, which is the "lateral inhibition" LRN was designed for. Whether
# that helps is an empirical question, and the paper's answer was no: A-LRN's top-1 error was
# 29.7% vs 29.6% for A (Table 3), so LRN was dropped from the deeper nets B-E.
#
# ## 5. Dense evaluation: the net as one big convolution
#
# At test time (Sec. 3.2) VGG runs on the **whole** rescaled image, of any size $\ge 224$: the
# first FC layer, which looks at the whole 7×7×512 map, becomes a **7×7 convolution**, and the
# other two FC layers become **1×1 convolutions**. The net is then fully convolutional and
# outputs a **class score map**, one score vector per 224×224 window (32 pixels apart), which is
# averaged over space. `models.to_fully_convolutional` does the conversion with **shared
# weights** (each conv kernel is a reshaped view of the FC weight matrix):

# %%
width = 8 if QUICK else 64              # quick mode: a thin VGG-A with the same layout
vgg = models.create("vgg11", width=width)
vgg.eval()
dense = models.to_fully_convolutional(vgg)
print(dense.classifier)
print("fc6 weight", tuple(vgg.classifier.fc6.weight.shape), "-> conv kernel",
      tuple(dense.classifier.fc6.weight.shape))

# %% [markdown]
# On a 224×224 image the two nets compute the same thing: a 1×1 score map equal to the logits.

# %%
big = np.kron(img, np.ones((1, 7, 7), dtype=np.float32))          # 32x32 -> 224x224, nearest
x224 = Tensor((big - big.mean(axis=(1, 2), keepdims=True))[None] / 64.0)
with minigrad.no_grad():
    t0 = time.perf_counter()
    logits = vgg(x224).numpy()
    scores = dense(x224).numpy()
print(f"VGG-A{'' if width == 64 else f' (width {width})'} at 224: {time.perf_counter() - t0:.1f} s for both")
print("logits", logits.shape, " score map", scores.shape,
      " max |difference| =", np.abs(logits - scores[:, :, 0, 0]).max())

# %% [markdown]
# On a larger image the score map is larger: for $S\times S$ input, the last feature map is
# $S/32$ and the 7×7 conv leaves $S/32 - 6$ positions a side. We upsample the image to
# 256 (quick) or 320 pixels, look at the map of the top class, and let `models.dense_predict`
# average the map and the horizontally flipped image's map into posteriors, as the paper does.
# (The network is untrained, so the scores mean nothing yet: this shows the mechanics.)

# %%
S = 256 if QUICK else 320
big = np.kron(img, np.ones((1, S // 32, S // 32), dtype=np.float32))
xS = Tensor((big - big.mean(axis=(1, 2), keepdims=True))[None] / 64.0)
t0 = time.perf_counter()
with minigrad.no_grad():
    score_map = dense(xS).numpy()[0]                                  # (classes, h, w)
probs = models.dense_predict(vgg, xS).numpy()[0]
print(f"{S}x{S} image -> score map {score_map.shape} in {time.perf_counter() - t0:.1f} s")
top = int(probs.argmax())

fig, (a0, a1) = plt.subplots(1, 2, figsize=(9, 4))
a0.imshow(np.clip(big.transpose(1, 2, 0) / 255, 0, 1))
step = 32
for i in range(score_map.shape[1]):
    for j in range(score_map.shape[2]):
        a0.add_patch(plt.Rectangle((j * step, i * step), 224, 224, fill=False, ec="yellow", lw=0.6, alpha=0.6))
a0.set_title(f"{S}x{S} input; each yellow square is one\n224x224 window of the score map", fontsize=10)
im = a1.imshow(score_map[top], cmap="viridis")
a1.set_title(f"score map of class {top} ({score_map.shape[1]}x{score_map.shape[2]})", fontsize=10)
fig.colorbar(im, ax=a1, shrink=0.8)
plt.tight_layout()
plt.show()
print("posteriors (spatial mean + flip, soft-max): top class", top, f"p = {probs[top]:.4f}",
      f"(uniform would be {1 / len(probs):.4f})")

# %% [markdown]
# Dense evaluation is cheap: the windows overlap, and their shared computation is done once,
# instead of once per crop. The paper combines it with multi-crop evaluation for its best
# numbers (Table 5).
#
# **Next:** notebook 4 asks why *even deeper* plain networks get worse, and how residual
# connections fix it.
