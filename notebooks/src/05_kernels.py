# %% [markdown]
# # 5 · GPU kernels: a 3×3 convolution in CUDA C and in Numba, side by side
#
# VGG and the CIFAR ResNets spend nearly all their time in 3×3 convolutions (notebook 3: 99%
# of VGG-16's arithmetic). Notebook 2 computed them as im2col + one matrix product, which copies
# every input pixel 9 times. On a GPU, minigrad can instead run **hand-written kernels** that
# compute the convolution *directly*, tile by tile, from fast on-chip shared memory:
#
# * `kernels/conv3x3.cu`: the forward pass and both gradients in **CUDA C** (compiled at run
#   time by CuPy);
# * `kernels/numba_cuda.py`: **the same algorithm** in Python syntax with **Numba CUDA**.
#
# This notebook reads the two sources next to each other, draws how threads and blocks cover
# the image, runs the Numba kernels (on the GPU if there is one, otherwise in Numba's **CUDA
# simulator**, which executes every GPU thread as a Python thread on the CPU) and checks them
# against im2col. With a GPU it also times CUDA C vs Numba vs im2col + cuBLAS.
#
# (The VGG paper trained on four GPUs with a modified Caffe, Sec. 3.3; ResNet's CIFAR nets were
# trained on two GPUs, Sec. 4.2. Kernels like these are what made such training practical.)

# %%
import os
import sys
from pathlib import Path


def gpu_present():
    """A CUDA GPU that CuPy can use?"""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


GPU = gpu_present()
if not GPU:
    # Numba's CUDA simulator must be switched on BEFORE numba is first imported
    if "numba" in sys.modules:
        print("warning: numba was imported before this cell; restart the kernel for the simulator")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minigrad" / "__init__.py").exists())
sys.path.insert(0, str(ROOT))
QUICK = os.environ.get("MINIGRAD_NOTEBOOK_QUICK", "0") == "1"

import html
import re
import shutil
import subprocess
import time

import numpy as np
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

import minigrad
from minigrad.ops.conv import im2col, col2im, conv2d_forward_gemm, conv2d_backward_gemm
from minigrad.kernels import numba_cuda as nk, source_path

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
print("GPU:", "yes" if GPU else "no: Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)")
print("quick mode" if QUICK else "full mode")

# %% [markdown]
# ## 1. What one thread block does
#
# Both versions use the same decomposition of the forward pass $y = x \star w$:
#
# * a **block** of 8×8×4 = 256 threads computes an **8×8 tile of output pixels** for **16 output
#   channels** of one image; thread $(t_x, t_y, t_z)$ owns pixel $(o_{y0}+t_y, o_{x0}+t_x)$ and
#   the 4 output channels $4t_z \ldots 4t_z+3$ (four running sums in registers);
# * the **grid** has one block per (tile, group of 16 output channels, image);
# * the block walks the input channels 8 at a time. For each chunk all 256 threads first copy,
#   together, the **input patch the tile needs, with its halo** (10×10 pixels at stride 1, 17×17
#   at stride 2; zeros where it falls in the padding) and the 16×8×9 weights into **shared
#   memory**, wait at a barrier, and then every thread does its 8·9·4 multiply-adds from shared
#   memory. Each input value fetched from global memory is reused up to 9 × 16 times.
#
# The picture: a 32×32 CIFAR-sized output split into 8×8 tiles (16 blocks per image per 16
# channels); one tile and the input patch it stages.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
for ax, stride in zip(axes, (1, 2)):
    H = 32
    Ho = nk.out_size(H, stride, 1)
    ax.set_xlim(-2, H + 1); ax.set_ylim(H + 1, -2); ax.set_aspect("equal")
    ax.add_patch(plt.Rectangle((-1.5, -1.5), H + 2, H + 2, fc="0.92", ec="0.6", label="padding"))
    ax.add_patch(plt.Rectangle((-0.5, -0.5), H, H, fc="white", ec="k", label="input image 32x32"))
    tile_y, tile_x = 1, 1                      # the highlighted block
    oy0, ox0 = tile_y * nk.TILE, tile_x * nk.TILE
    side = (nk.TILE - 1) * stride + 3
    iy0, ix0 = oy0 * stride - 1, ox0 * stride - 1
    ax.add_patch(plt.Rectangle((ix0 - 0.5, iy0 - 0.5), side, side, fc="tab:orange", alpha=0.35,
                               label=f"staged input patch {side}x{side}"))
    # the input pixels at the centre of the 8x8 output tile
    ax.add_patch(plt.Rectangle((ox0 * stride - 0.5, oy0 * stride - 0.5), (nk.TILE - 1) * stride + 1,
                               (nk.TILE - 1) * stride + 1, fill=False, ec="tab:blue", lw=2,
                               label="centres of the 8x8 output tile"))
    for t in range(0, Ho + 1, nk.TILE):          # tile boundaries in input coordinates
        ax.axhline(t * stride - 0.5, color="tab:blue", lw=0.4, alpha=0.5)
        ax.axvline(t * stride - 0.5, color="tab:blue", lw=0.4, alpha=0.5)
    tiles = -(-Ho // nk.TILE)
    ax.set_title(f"stride {stride}: output {Ho}x{Ho} = {tiles}x{tiles} tiles (blocks)", fontsize=10)
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9)
plt.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# ## 2. The two sources, next to each other
#
# The forward kernel as it is in the repository (read from the files now, so it is never out of
# date). The structure is line-for-line the same; the vocabulary differs:
#
# | CUDA C | Numba CUDA |
# |---|---|
# | `extern "C" __global__ void f(...)` | `@cuda.jit` `def f(...)` |
# | `blockIdx.x`, `threadIdx.y` | `cuda.blockIdx.x`, `cuda.threadIdx.y` |
# | `__shared__ float s[8][17][17];` | `s = cuda.shared.array((8, 17, 17), float32)` |
# | `float acc[4];` (registers) | `acc = cuda.local.array(4, float32)` |
# | `__syncthreads();` | `cuda.syncthreads()` |
# | raw pointers and index arithmetic `x[((n*C + c)*H + iy)*W + ix]` | multi-dimensional arrays `x[n, c, iy, ix]` |
# | launch `kernel<<<grid, block>>>(...)` (here: `cupy.RawKernel`) | `kernel[grid, block](...)` |

# %%
def c_function(path, name):
    """The text of the CUDA C kernel ``name``: from its signature to the closing brace."""
    text = path.read_text()
    start = text.index(f"void {name}(")
    start = text.rfind("\n", 0, start) + 1
    depth, i = 0, text.index("{", start)
    while True:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
        i += 1


def py_function(path, name):
    """The text of the Python function ``name`` with its decorator, up to the next top-level line."""
    lines = path.read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"def {name}("))
    if start and lines[start - 1].startswith("@"):
        start -= 1
    end = start + 2
    while end < len(lines) and (not lines[end] or lines[end][0] in " \t#"):
        end += 1
    return "\n".join(lines[start:end]).rstrip()


cu_src = c_function(source_path("conv3x3.cu"), "conv3x3_forward")
nb_src = py_function(source_path("numba_cuda.py"), "conv3x3_forward_kernel")
style = "font-size:11px; line-height:1.25; text-align:left; vertical-align:top; white-space:pre"
table = (f"<table><tr><th>kernels/conv3x3.cu ({cu_src.count(chr(10)) + 1} lines)</th>"
         f"<th>kernels/numba_cuda.py ({nb_src.count(chr(10)) + 1} lines)</th></tr><tr>"
         f"<td style='{style}'><pre>{html.escape(cu_src)}</pre></td>"
         f"<td style='{style}'><pre>{html.escape(nb_src)}</pre></td></tr></table>")
display(HTML(table))

# %% [markdown]
# The two backward kernels follow the same pattern. `conv3x3_backward_input` runs the forward
# "in reverse": a block owns a tile of **input** pixels and *gathers* every output gradient
# $\bar y[o_y, o_x]$ whose window covered it ($o_y s - p + k_y = i_y$), so no two threads ever
# write the same value (no atomics). `conv3x3_backward_weight` gives each block one output channel
# and 4 input channels; its 256 threads each sum over a strided share of the $N H_o W_o$ positions
# and the 256 partial sums are then reduced across the block (CUDA C: warp shuffles
# `__shfl_down_sync`, then shared memory; Numba: shared memory only). The header comments of the two
# files explain the mappings in full:

# %%
header = source_path("conv3x3.cu").read_text().split("#define")[0]
print(header.strip())

# %% [markdown]
# ### What the compiler makes of the CUDA C
#
# `nvcc` can compile the CUDA C to GPU machine code without a GPU and report what each kernel
# uses per thread (registers) and per block (shared memory). Shared memory and registers limit
# how many blocks fit on a streaming multiprocessor at once, so this is the first thing to look
# at when tuning a kernel. (Skipped when `nvcc` is not installed.)

# %%
nvcc = shutil.which("nvcc")
if nvcc is None:
    print("nvcc not found: skipped")
else:
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([nvcc, "-cubin", "-arch=sm_80", "--resource-usage", "-o",
                               os.path.join(tmp, "conv3x3.cubin"), str(source_path("conv3x3.cu"))],
                              capture_output=True, text=True, timeout=300)
    usage = [l.strip() for l in (proc.stdout + proc.stderr).splitlines()
             if "Function properties" in l or "Used" in l or "Compiling entry" in l]
    print("\n".join(usage) if usage else (proc.stdout + proc.stderr)[-2000:])

# %% [markdown]
# ## 3. Running the Numba kernels and checking them against im2col
#
# Without a GPU the simulator runs the very same kernel code, with real shared memory arrays and
# real barriers, one Python thread per GPU thread: slow (seconds for a tiny input), but every
# index is checked exactly as on a GPU. The references are notebook 2's im2col functions.

# %%
if GPU:
    import cupy as cp
    to_dev, to_host = cp.asarray, cp.asnumpy
    empty = lambda shape: cp.zeros(shape, dtype=cp.float32)
else:
    to_dev, to_host = np.asarray, np.asarray
    empty = lambda shape: np.zeros(shape, dtype=np.float32)

rng = np.random.default_rng(0)
N, C, H, W, K = (1, 3, 8, 8, 4) if QUICK or not GPU else (2, 16, 32, 32, 32)
x = rng.standard_normal((N, C, H, W)).astype(np.float32)
w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)

for stride in (1, 2):
    Ho = Wo = nk.out_size(H, stride, 1)
    gy = rng.standard_normal((N, K, Ho, Wo)).astype(np.float32)

    # references: im2col + matrix products (notebook 2)
    cols = im2col(x, 3, 3, (stride, stride), (1, 1))
    y_ref = conv2d_forward_gemm(cols, w, N, Ho, Wo)
    dcols, gw_ref = conv2d_backward_gemm(gy, cols, w)
    gx_ref = col2im(dcols, x.shape, 3, 3, (stride, stride), (1, 1))

    # the Numba CUDA kernels
    t0 = time.perf_counter()
    y = to_host(nk.forward(to_dev(x), to_dev(w), empty((N, K, Ho, Wo)), stride, 1))
    gx = to_host(nk.backward_input(to_dev(gy), to_dev(w), empty(x.shape), stride, 1))
    slices = 2
    gw = to_host(nk.backward_weight(to_dev(x), to_dev(gy), empty((slices, K, C, 3, 3)), stride, 1)).sum(0)
    seconds = time.perf_counter() - t0

    print(f"stride {stride}: x {x.shape} -> y {y.shape}   ({seconds:.1f} s for the three kernels)")
    for name, got, ref in [("forward  y ", y, y_ref), ("backward dx", gx, gx_ref), ("backward dw", gw, gw_ref)]:
        err = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"   {name}: max relative error vs im2col {err:.1e}  {'ok' if err < 1e-5 else 'MISMATCH'}")

# %% [markdown]
# Agreement to float32 rounding (~1e-7): the tiles, halos, padding, stride-2 gathers and the
# weight-gradient reduction all index the right elements.
#
# ## 4. Speed on a GPU
#
# The three ways minigrad can run a 3×3 convolution on a GPU, selected with
# `minigrad.cuda.set_conv_kernel(...)`: the CUDA C kernels (`"cupy"`, the default), the Numba
# kernels (`"numba"`), and im2col + cuBLAS (`"im2col"`), timed forward + both gradients on layer
# shapes of the CIFAR ResNets and of VGG.

# %%
if not GPU:
    display(Markdown("**No GPU on this machine: the benchmark is skipped.** Run this notebook on "
                     "a machine with an NVIDIA GPU and CuPy (`pip install \"minigrad[cuda]\"`) "
                     "to fill this table."))
else:
    from minigrad import cuda as mgcuda
    shapes = [(128, 16, 32, 32, 16, 1), (128, 32, 16, 16, 32, 1), (128, 64, 8, 8, 64, 1),
              (128, 16, 32, 32, 32, 2), (16, 64, 112, 112, 64, 1)]
    if QUICK:
        shapes = shapes[:2]

    def bench(impl, x, w, gy, s, repeat=10):
        def step():
            mgcuda.conv2d_forward(x, w, s, 1, impl=impl)
            mgcuda.conv2d_backward_input(gy, w, x.shape, s, 1, impl=impl)
            mgcuda.conv2d_backward_weight(x, gy, s, 1, impl=impl)
        step(); cp.cuda.Device().synchronize()                  # compile / warm up
        t0 = time.perf_counter()
        for _ in range(repeat):
            step()
        cp.cuda.Device().synchronize()
        return (time.perf_counter() - t0) / repeat * 1e3

    lines = ["| N, C, H, W -> K (stride) | CUDA C | Numba | im2col + cuBLAS |", "|---|---|---|---|"]
    for n, c, h, wd, k, s in shapes:
        xg = cp.asarray(rng.standard_normal((n, c, h, wd)), dtype=cp.float32)
        wg = cp.asarray(rng.standard_normal((k, c, 3, 3)), dtype=cp.float32)
        ho = nk.out_size(h, s, 1)
        gyg = cp.asarray(rng.standard_normal((n, k, ho, ho)), dtype=cp.float32)
        ms = [bench(impl, xg, wg, gyg, s) for impl in ("cupy", "numba", "im2col")]
        lines.append(f"| {n}, {c}, {h}, {wd} -> {k} ({s}) | " + " | ".join(f"{m:.2f} ms" for m in ms) + " |")
    display(Markdown("\n".join(lines)))
    print("device:", cp.cuda.runtime.getDeviceProperties(0)["name"].decode())

# %% [markdown]
# **What to look for in the table.** cuBLAS is a heavily tuned matrix multiply, so im2col +
# cuBLAS is a strong baseline despite the extra memory traffic of the im2col copy. A direct
# kernel saves that copy, which matters most where the copy is large relative to the arithmetic
# (few channels, large images: the first layers); where the matrix product is large (many
# channels) the tuned GEMM has the advantage. Numba compiles to the same GPU instruction set as
# CUDA C, but gives less control over registers and unrolling. Compare the rows above with these
# expectations: measured numbers, not expectations, are what count.
#
# **Next:** notebook 6 puts everything together and trains a network on CIFAR-10.
