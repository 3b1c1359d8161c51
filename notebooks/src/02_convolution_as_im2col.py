# %% [markdown]
# # 2 · Convolution as a matrix product: im2col, col2im and their gradients
#
# VGG is built almost entirely from **3×3 convolutions with stride 1 and padding 1** (VGG,
# Sec. 2.1), and so are the CIFAR ResNets (ResNet, Sec. 4.2); these layers do nearly all the
# arithmetic of both networks. This notebook opens up how minigrad computes them:
#
# 1. convolution as **loops**, the definition;
# 2. **im2col**: copy every patch into a column, drawn for a tiny image;
# 3. the whole convolution of the whole batch as **one matrix product**;
# 4. the **backward pass**: two more matrix products and **col2im**, the adjoint of im2col,
#    compared with minigrad's engine and checked with `minigrad.gradcheck`;
# 5. what a convolution does to a **real image**;
# 6. the naive loops, im2col and minigrad's `F.conv2d` **timed on your machine**.
#
# Everything here uses `minigrad/ops/conv.py`, where the functions `im2col`, `col2im`,
# `conv2d_forward_gemm` and `conv2d_backward_gemm` live next to each other.

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
from minigrad import Tensor
import minigrad.nn.functional as F
from minigrad.ops.conv import im2col, col2im, conv_output_size

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
np.set_printoptions(precision=3, suppress=True, linewidth=110)
minigrad.manual_seed(0)
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. The definition, as loops
#
# With input $x$ of shape $(N, C, H, W)$, weights $w$ of shape $(K, C, k_h, k_w)$ and padding $p$,
# stride $s$, output channel $k$ at pixel $(o_y, o_x)$ is a dot product of the kernel with the
# patch under it:
#
# $$ y[n, k, o_y, o_x] = b[k] + \sum_{c, i, j} w[k, c, i, j]\; x_{\text{pad}}[n, c,\; o_y s + i,\; o_x s + j], \qquad H_o = \left\lfloor \frac{H + 2p - k_h}{s} \right\rfloor + 1 .$$
#
# (Deep-learning "convolution" does not flip the kernel: it is a cross-correlation.) Written
# as loops, this is short and slow:

# %%
def conv2d_naive(x, w, b=None, stride=1, padding=0):
    """The definition: one dot product per output pixel (four Python loops)."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (wd + 2 * padding - kw) // stride + 1
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    y = np.zeros((n, k, ho, wo), dtype=x.dtype)
    for ni in range(n):
        for ki in range(k):
            for oy in range(ho):
                for ox in range(wo):
                    patch = xpad[ni, :, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
                    y[ni, ki, oy, ox] = (patch * w[ki]).sum()
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y

# %% [markdown]
# ## 2. im2col, drawn
#
# **im2col** ("image to columns") copies the patch under every output position into one
# **column** of a matrix. For a $C$-channel input and a $k_h\times k_w$ kernel, a column has
# $C k_h k_w$ entries, ordered (channel, row, column) exactly like a flattened kernel
# `w[k].reshape(-1)`; there is one column per output pixel of every image:
#
# $$ \text{cols}\big[(c,i,j),\ (n,o_y,o_x)\big] = x_{\text{pad}}[n, c, o_y s + i, o_x s + j],
# \qquad \text{cols} \in \mathbb{R}^{C k_h k_w \times N H_o W_o}. $$
#
# A tiny single-channel 4×4 image with the pixels numbered 1..16, a 3×3 kernel, padding 1:

# %%
x_tiny = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
cols = im2col(x_tiny, 3, 3, stride=(1, 1), padding=(1, 1))
print("image", x_tiny.shape, "-> cols", cols.shape, "(C*3*3 rows, N*Ho*Wo columns)")
print(cols.astype(int))

# %%
def show_im2col(x, cols, column, kh=3, kw=3, pad=1):
    """Left: the padded image with the patch of one output pixel; right: the column matrix."""
    xpad = np.pad(x[0, 0], pad)
    wo = x.shape[3] + 2 * pad - kw + 1
    oy, ox = divmod(column, wo)
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2.4]})
    a0.imshow(xpad, cmap="Blues", vmin=-4, vmax=20)
    for (r, c), v in np.ndenumerate(xpad):
        a0.text(c, r, int(v), ha="center", va="center", fontsize=9, color="k" if v else "gray")
    a0.add_patch(plt.Rectangle((ox - 0.5, oy - 0.5), kw, kh, fill=False, ec="red", lw=3))
    a0.set_title(f"padded image; patch of output pixel ({oy}, {ox})")
    a0.set_xticks([]); a0.set_yticks([])
    a1.imshow(cols, cmap="Blues", vmin=-4, vmax=20, aspect="auto")
    for (r, c), v in np.ndenumerate(cols):
        a1.text(c, r, int(v), ha="center", va="center", fontsize=8, color="k" if v else "gray")
    a1.add_patch(plt.Rectangle((column - 0.5, -0.5), 1, cols.shape[0], fill=False, ec="red", lw=3))
    a1.set_xlabel("column = output pixel (oy, ox), row-major")
    a1.set_ylabel("row = kernel tap (i, j)")
    a1.set_yticks(range(kh * kw), [f"({i},{j})" for i in range(kh) for j in range(kw)])
    a1.set_title("cols = im2col(x): one patch per column")
    plt.tight_layout()
    plt.show()


show_im2col(x_tiny, cols, column=6)

# %% [markdown]
# Each pixel appears in up to $k_h k_w = 9$ columns: im2col **duplicates** the input (9× for a
# 3×3 kernel at stride 1). That memory is the price of turning the convolution into the one
# operation computers do fastest, a big matrix product.
#
# ## 3. The convolution is one matrix product
#
# Flatten the weights to $W_m$ of shape $(K, C k_h k_w)$: row $k$ is kernel $k$, in the same
# (c, i, j) order as a column. Then
#
# $$ Y_m = W_m\,\text{cols} \in \mathbb{R}^{K \times N H_o W_o}, $$
#
# and reshaping $Y_m$ to $(K, N, H_o, W_o)$ and moving the channel axis gives $y$. Let's check it
# against the loops and against minigrad's `F.conv2d`, on a batch of 2 three-channel images:

# %%
rng = np.random.default_rng(0)
N, C, H, W, K = 2, 3, 6, 5, 4
x = rng.standard_normal((N, C, H, W))
w = rng.standard_normal((K, C, 3, 3))
b = rng.standard_normal(K)
stride, pad = 1, 1

cols = im2col(x, 3, 3, (stride, stride), (pad, pad))                # (C*9, N*Ho*Wo)
Ho, Wo = conv_output_size(H, 3, stride, pad), conv_output_size(W, 3, stride, pad)
Wm = w.reshape(K, -1)                                               # (K, C*9)
Ym = Wm @ cols + b[:, None]                                         # (K, N*Ho*Wo)
y_gemm = Ym.reshape(K, N, Ho, Wo).transpose(1, 0, 2, 3)

y_loop = conv2d_naive(x, w, b, stride, pad)
y_mg = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride=stride, padding=pad).numpy()
print(f"Wm {Wm.shape} @ cols {cols.shape} = Ym {Ym.shape} -> y {y_gemm.shape}")
print("max |gemm - loops|    =", np.abs(y_gemm - y_loop).max())
print("max |F.conv2d - loops| =", np.abs(y_mg - y_loop).max())

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3), gridspec_kw={"width_ratios": [27, 60, 60]})
for ax, m, title in [(axes[0], Wm, f"Wm {Wm.shape}"), (axes[1], cols, f"cols {cols.shape}"),
                     (axes[2], Ym, f"Ym = Wm @ cols {Ym.shape}")]:
    ax.imshow(m, cmap="RdBu_r", aspect="auto", vmin=-3, vmax=3)
    ax.set_title(title)
axes[0].set_xlabel("(c, i, j)"); axes[0].set_ylabel("output channel k")
axes[1].set_xlabel("(n, oy, ox)"); axes[1].set_ylabel("(c, i, j)")
axes[2].set_xlabel("(n, oy, ox)"); axes[2].set_ylabel("output channel k")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The backward pass: two matrix products and col2im
#
# Given $\bar Y_m = \partial L/\partial Y_m$ (the output gradient, same layout as $Y_m$), the
# matrix-product rule of notebook 1 gives
#
# $$ \bar W_m = \bar Y_m\, \text{cols}^\top, \qquad \overline{\text{cols}} = W_m^\top\, \bar Y_m, \qquad \bar b = \textstyle\sum_{\text{columns}} \bar Y_m . $$
#
# $\overline{\text{cols}}$ is the gradient of the *copies*. Since a pixel was copied into several
# columns, its gradient is the **sum** of the gradients of all its copies: that is **col2im**,
# which adds every column back onto the pixels it came from. By hand, then compared with the
# engine:

# %%
gy = rng.standard_normal(y_gemm.shape)                              # dL/dy
gYm = gy.transpose(1, 0, 2, 3).reshape(K, -1)                       # same layout as Ym

gW_hand = (gYm @ cols.T).reshape(w.shape)
gb_hand = gYm.sum(axis=1)
gx_hand = col2im(Wm.T @ gYm, x.shape, 3, 3, (stride, stride), (pad, pad))

xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
F.conv2d(xt, wt, bt, stride=stride, padding=pad).backward(gy)
for name, hand, engine in [("x", gx_hand, xt.grad), ("w", gW_hand, wt.grad), ("b", gb_hand, bt.grad)]:
    print(f"dL/d{name}: max |by hand - minigrad| = {np.abs(hand - engine.numpy()).max():.2e}")

# %% [markdown]
# ### col2im is the adjoint of im2col
#
# "Adjoint" means: for any image $x$ and any column matrix $G$,
# $\langle \text{im2col}(x), G\rangle = \langle x, \text{col2im}(G)\rangle$. That identity is *why*
# col2im is the backward of im2col: the gradient of $L = \langle \text{im2col}(x), G\rangle$ with
# respect to $x$ is col2im($G$). A one-line test:

# %%
G = rng.standard_normal(cols.shape)
lhs = (im2col(x, 3, 3, (1, 1), (1, 1)) * G).sum()
rhs = (x * col2im(G, x.shape, 3, 3, (1, 1), (1, 1))).sum()
print(f"<im2col(x), G> = {lhs:.10f}\n<x, col2im(G)> = {rhs:.10f}")

# %% [markdown]
# col2im of a matrix of **ones** counts how many patches cover each pixel, i.e. how many terms
# each input gradient sums. With padding 1 and stride 1, an interior pixel is in 9 patches, an
# edge pixel in 6, a corner in 4; with stride 2 the pattern is uneven, which is why strided
# convolutions can leave a checkerboard in their gradients:

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
x_shape = (1, 1, 8, 8)
for ax, s in zip(axes, (1, 2)):
    ones = np.ones((9, conv_output_size(8, 3, s, 1) ** 2))
    count = col2im(ones, x_shape, 3, 3, (s, s), (1, 1))[0, 0]
    ax.imshow(count, cmap="viridis", vmin=0, vmax=9)
    for (r, c), v in np.ndenumerate(count):
        ax.text(c, r, int(v), ha="center", va="center", color="k" if v >= 7 else "w", fontsize=9)
    ax.set_title(f"col2im(ones): patches per pixel\n3x3 kernel, padding 1, stride {s}")
    ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Gradient check
#
# Finally `minigrad.gradcheck` compares the analytic gradients of input, weight and bias with
# finite differences, for a stride-2 convolution with padding (the case that is easiest to get
# wrong):

# %%
xs = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
ws = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
bs = Tensor(rng.standard_normal(3), requires_grad=True)
ok = minigrad.gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [xs, ws, bs])
print("conv2d (stride 2, padding 1) passes gradcheck:", ok)

# %% [markdown]
# ## 5. What a convolution does to a real image
#
# A photo from the CIFAR-10 test set (when the subset is present; a synthetic image otherwise),
# convolved with three hand-made 3×3 kernels: a blur and two edge detectors (Sobel), and the
# edge strength $\sqrt{g_x^2 + g_y^2}$ built from the two. A trained network's first layer learns
# kernels much like these. (The image's mean is subtracted first, so the zero padding does not
# draw a frame around it.)

# %%
CIFAR_DIR = Path(os.environ.get("MINIGRAD_CIFAR10_DIR", ROOT.parent / "shared" / "data" / "cifar-10-batches-py"))
if (CIFAR_DIR / "test_batch").exists():
    from minigrad.data import CIFAR10
    image = CIFAR10(str(CIFAR_DIR), train=False)[7][0]
    source = "CIFAR-10 test image #7"
else:
    from minigrad.data import SyntheticImages
    image = SyntheticImages(n=8, seed=0)[7][0]
    source = "synthetic image"
image = np.asarray(image, dtype=np.float32)
if image.shape[0] != 3:                      # (H, W, 3) -> (3, H, W)
    image = image.transpose(2, 0, 1)
image = image / 255.0 if image.max() > 1.5 else image
gray = image.mean(axis=0, keepdims=True)[None]           # (1, 1, 32, 32)
gray = gray - gray.mean()

kernels = np.array([
    np.full((3, 3), 1 / 9),                                     # blur
    [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],                       # vertical edges (d/dx)
    [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],                       # horizontal edges (d/dy)
], dtype=np.float32)[:, None]                                   # (3, 1, 3, 3)

responses = F.conv2d(Tensor(gray), Tensor(kernels), padding=1).numpy()[0]     # (3, 32, 32)
strength = np.sqrt(responses[1] ** 2 + responses[2] ** 2)

fig, axes = plt.subplots(1, 5, figsize=(13, 3))
axes[0].imshow(np.clip(image.transpose(1, 2, 0), 0, 1)); axes[0].set_title(source, fontsize=9)
axes[1].imshow(responses[0], cmap="gray"); axes[1].set_title("blur")
lim = np.abs(responses[1:]).max()
for ax, r, t in zip(axes[2:4], responses[1:], ["vertical edges", "horizontal edges"]):
    ax.imshow(r, cmap="RdBu_r", vmin=-lim, vmax=lim); ax.set_title(t)
axes[4].imshow(strength, cmap="magma"); axes[4].set_title("edge strength")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 6. Timing: loops vs im2col vs minigrad's two CPU paths
#
# The same convolutions four ways, forward pass only, float32, on **this machine** (your numbers
# will differ; the ratios are the point):
#
# * **naive loops**: the definition above, one Python-level dot product per output pixel;
# * **im2col + GEMM**: the code of section 3, 9 strided copies and one matrix product through BLAS;
# * **F.conv2d, reference**: minigrad's op on its reference path (`minigrad/ops/conv.py`: the same
#   im2col + GEMM, plus the bookkeeping of the autograd graph);
# * **F.conv2d, fast**: minigrad's default CPU fast path (Numba kernels on its own thread pool, from
#   `kernels/cpu_numba.py`, switched with `minigrad.config.set_fast` / `reference_mode()`).

# %%
from minigrad import config


def best_of(fn, repeat=3):
    fn()                                  # warm up (the fast path compiles on first use)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def conv_im2col(x, w, pad):
    n, _, h, wd = x.shape
    cols = im2col(x, 3, 3, (1, 1), (pad, pad))
    y = w.reshape(w.shape[0], -1) @ cols
    return y.reshape(w.shape[0], n, h, wd).transpose(1, 0, 2, 3)


def op_reference(x, w):
    with config.reference_mode():
        return F.conv2d(Tensor(x), Tensor(w), padding=1)


def op_fast(x, w):
    with config.fast_mode():
        return F.conv2d(Tensor(x), Tensor(w), padding=1)


# (N, C, H, W, K): a ResNet stage-1 layer on CIFAR, and a deeper, narrower-map one
cases = [(2, 4, 8, 8, 4), (4, 16, 16, 16, 16)] if QUICK else \
        [(8, 16, 32, 32, 16), (8, 64, 8, 8, 64), (32, 16, 32, 32, 16), (32, 64, 8, 8, 64)]
rows = []
for (n, c, h, wd, k) in cases:
    xb = np.random.default_rng(1).standard_normal((n, c, h, wd)).astype(np.float32)
    wb = np.random.default_rng(2).standard_normal((k, c, 3, 3)).astype(np.float32)
    small = n * k * h * wd <= 2e5             # the loops take seconds beyond that
    t_naive = best_of(lambda: conv2d_naive(xb, wb, None, 1, 1), repeat=1) if small else float("nan")
    rows.append(((n, c, h, wd, k), t_naive, best_of(lambda: conv_im2col(xb, wb, 1)),
                 best_of(lambda: op_reference(xb, wb)), best_of(lambda: op_fast(xb, wb))))

lines = ["| input (N, C, H, W) -> K | naive loops | im2col + GEMM | F.conv2d, reference | F.conv2d, fast | loops / im2col |",
         "|---|---|---|---|---|---|"]
for shape, t1, t2, t3, t4 in rows:
    naive, ratio = (f"{t1 * 1e3:.1f} ms", f"{t1 / t2:.0f}x") if t1 == t1 else ("skipped", "-")
    lines.append(f"| {shape[:4]} -> {shape[4]} | {naive} | {t2 * 1e3:.2f} ms | {t3 * 1e3:.2f} ms | "
                 f"{t4 * 1e3:.2f} ms | {ratio} |")
display(Markdown("\n".join(lines)))

# %% [markdown]
# The loops spend their time in the Python interpreter, one small dot product at a time;
# im2col hands the same arithmetic to an optimised matrix-multiply library in one call, which
# is hundreds of times faster at realistic sizes. For these 3×3 layers with padding 1 the fast path
# goes one step further and builds no column matrix at all: its direct kernel
# (`kernels/cpu_conv3x3.py`) lays out each input channel in three copies shifted by one column,
# reads each of the nine taps from one of them at a fixed offset (three copies instead of
# im2col's nine) and vectorises the multiply-adds itself, chunk by chunk of the batch on each
# thread; other layers keep im2col and the matrix product. Compare the last two columns on your
# machine. (The committed outputs were computed with one thread on a shared 2-core machine.)
# GPU libraries often compute convolutions as matrix products too; notebook 5 shows hand-written
# GPU kernels that skip the im2col copy in the same way.
#
# **Next:** notebook 3 stacks these 3×3 convolutions into the VGG networks.
