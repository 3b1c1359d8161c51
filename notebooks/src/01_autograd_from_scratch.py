# %% [markdown]
# # 1 · Autograd from scratch: every gradient, by hand and by the engine
#
# Both papers train their networks the same way: mini-batch stochastic gradient descent on the
# multinomial logistic loss, with the gradients computed by **back-propagation** (VGG, Sec. 3.1;
# ResNet, Sec. 3.4). Everything else minigrad does rests on that one algorithm, so this notebook
# takes it apart:
#
# 1. a tiny graph differentiated **by hand**, the chain rule written out line by line;
# 2. the same graph differentiated by **minigrad's engine**, and the two compared;
# 3. **every intermediate gradient** made visible (`minigrad.retain_grads()`, `retain_grad()`,
#    `register_hook`) and the graph printed (`minigrad.format_graph`);
# 4. the chain rule with **matrices** (a two-layer network), the form every layer of VGG and
#    ResNet uses;
# 5. **your own operation**: a `Function` with forward and backward, checked by
#    `minigrad.gradcheck`, and a deliberately broken backward caught by its report.
#
# Runs in seconds on a laptop CPU. Set `MINIGRAD_NOTEBOOK_QUICK=1` for the (even) quicker mode the
# tests use.

# %%
import os
import sys
from pathlib import Path

# the repository root: the first folder upwards that holds minigrad/
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "minigrad" / "__init__.py").exists())
sys.path.insert(0, str(ROOT))
QUICK = os.environ.get("MINIGRAD_NOTEBOOK_QUICK", "0") == "1"

import numpy as np
import matplotlib.pyplot as plt

import minigrad
from minigrad import Tensor

plt.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80})
np.set_printoptions(precision=4, suppress=True)
minigrad.manual_seed(0)
print("minigrad", minigrad.__version__, "| quick mode" if QUICK else "| full mode")

# %% [markdown]
# ## 1. A tiny graph, differentiated by hand
#
# One neuron with a squared-error loss:
#
# $$ z = \sum_i w_i x_i + b, \qquad a = \tanh(z), \qquad L = (a - t)^2 . $$
#
# The chain rule walks **backwards** from $L$, multiplying one local derivative per step:
#
# | step | local derivative | gradient of $L$ |
# |---|---|---|
# | $L = (a-t)^2$ | $\partial L/\partial a = 2(a-t)$ | $\bar a = 2(a-t)$ |
# | $a = \tanh z$ | $\partial a/\partial z = 1 - a^2$ | $\bar z = \bar a\,(1-a^2)$ |
# | $z = w\cdot x + b$ | $\partial z/\partial w_i = x_i,\ \partial z/\partial b = 1,\ \partial z/\partial x_i = w_i$ | $\bar w = \bar z\,x,\ \bar b = \bar z,\ \bar x = \bar z\,w$ |
#
# ($\bar v$ is shorthand for $\partial L/\partial v$.) First with plain NumPy:

# %%
x_np = np.array([1.0, -2.0, 0.5])
w_np = np.array([0.3, 0.1, -0.4])
b_np = 0.2
t_np = 1.0

# forward pass, keeping every intermediate
z_np = (w_np * x_np).sum() + b_np
a_np = np.tanh(z_np)
L_np = (a_np - t_np) ** 2

# backward pass: one line per row of the table above
a_bar = 2 * (a_np - t_np)
z_bar = a_bar * (1 - a_np ** 2)
w_bar = z_bar * x_np
b_bar = z_bar
x_bar = z_bar * w_np

print(f"z = {z_np:.6f}   a = {a_np:.6f}   L = {L_np:.6f}")
print(f"dL/da = {a_bar:.6f}   dL/dz = {z_bar:.6f}")
print("dL/dw =", w_bar, "  dL/db =", round(b_bar, 6), "  dL/dx =", x_bar)

# %% [markdown]
# ## 2. The same graph through minigrad
#
# A `Tensor` with `requires_grad=True` is a **leaf** the engine differentiates with respect to.
# Every operation on it records a node (a `Function`) that knows its own local derivative;
# `L.backward()` visits the nodes from $L$ back to the leaves in topological order and applies
# exactly the chain rule above. We use float64 so the comparison is exact to rounding.

# %%
x = Tensor(x_np, requires_grad=True, name="x")
w = Tensor(w_np, requires_grad=True, name="w")
b = Tensor(np.array(b_np), requires_grad=True, name="b")

z = (w * x).sum() + b
a = z.tanh()
L = (a - t_np) ** 2
L.backward()

for name, engine, hand in [("w", w.grad, w_bar), ("b", b.grad, b_bar), ("x", x.grad, x_bar)]:
    err = np.abs(engine.numpy() - hand).max()
    print(f"dL/d{name}: engine {engine.numpy()}   by hand {np.asarray(hand)}   max |diff| = {err:.1e}")

# %% [markdown]
# Only the **leaves** kept a `.grad`. The intermediates `z` and `a` had gradients too (the engine
# needed them on the way), but it throws them away to save memory, like PyTorch:

# %%
print("z.grad =", z.grad, "  a.grad =", a.grad)
print("z.is_leaf =", z.is_leaf, "  z.grad_fn =", z.grad_fn.name)

# %% [markdown]
# ## 3. Seeing every intermediate gradient
#
# Three ways to keep them:
#
# * `minigrad.retain_grads()`: a context manager; every tensor created inside keeps its `.grad`;
# * `t.retain_grad()`: one tensor keeps its `.grad`;
# * `t.register_hook(fn)`: `fn(grad)` is called the moment the gradient of `t` is known (it may
#   return a replacement gradient).
#
# With `retain_grads()` we can print the whole backward pass next to the hand computation.
# Naming tensors (`t.name = ...`) makes the printed graph readable.

# %%
w.zero_grad(); b.zero_grad(); x.zero_grad()
with minigrad.retain_grads():
    p = w * x;      p.name = "p = w*x"
    s = p.sum();    s.name = "s = sum(p)"
    z = s + b;      z.name = "z = s + b"
    a = z.tanh();   a.name = "a = tanh(z)"
    d = a - t_np;   d.name = "d = a - t"
    L = d ** 2;     L.name = "L = d^2"
L.backward(retain_graph=True)      # keep the graph so we can print it afterwards

for t in [L, d, a, z, s, p, w, b, x]:
    print(f"{t.name:>12}  value {np.array2string(t.numpy(), precision=4):>28}   "
          f"dL/d(.) {np.array2string(t.grad.numpy(), precision=4)}")
print("\nby hand:  dL/da =", round(a_bar, 4), "  dL/dz =", round(z_bar, 4))

# %% [markdown]
# `minigrad.format_graph` prints the graph that ends at a tensor, output first, each node with
# its operation, shape, dtype and the norm of its gradient:

# %%
print(minigrad.format_graph(L))

# %% [markdown]
# A **hook** sees the gradient as it flows past. Here one hook only prints, and a second one
# **changes** the gradient (it doubles it) to show that everything upstream of it (`z`, `w`, `b`,
# `x`) then doubles as well, while `a` and `L` are unaffected. Gradient clipping and the
# "gradient norms per layer" plots of notebook 4 are built on such hooks.

# %%
w.zero_grad(); b.zero_grad(); x.zero_grad()
z = (w * x).sum() + b
a = z.tanh()
L = (a - t_np) ** 2
a.register_hook(lambda g: print("hook on a sees dL/da =", g.numpy()))
handle = z.register_hook(lambda g: g * 2)     # returns the replacement gradient
z.retain_grad()
L.backward()
print("z.grad =", z.grad.numpy(), " (by hand, undoubled:", round(z_bar, 6), ")")
print("w.grad =", w.grad.numpy(), " = 2 x", w_bar)
handle.remove()

# %% [markdown]
# ### Gradients add up where paths meet
#
# When a tensor is used twice, the gradients that arrive along both paths are **summed**
# (the multivariate chain rule). For $f(u) = u\cdot u + 3u$: $f'(u) = 2u + 3$.
# And leaf gradients **accumulate across backward calls**, which is why training loops call
# `zero_grad()` before each step:

# %%
u = Tensor(np.array(2.0), requires_grad=True)
f = u * u + 3 * u
f.backward()
print("df/du =", u.grad.item(), "  (2u + 3 =", 2 * 2.0 + 3, ")")

f = u * u + 3 * u
f.backward()
print("after a second backward without zero_grad:", u.grad.item(), "(accumulated)")
u.zero_grad()

# %% [markdown]
# ## 4. The chain rule with matrices: a two-layer network
#
# Every layer of VGG and ResNet is, at heart, a matrix product followed by an element-wise
# non-linearity. For a batch $X$ of $N$ rows:
#
# $$ H = \tanh(X W_1), \qquad Y = H W_2, \qquad L = \tfrac{1}{N}\sum Y^2 . $$
#
# The backward pass of a matrix product $Y = H W$ is two more matrix products,
# $\bar H = \bar Y W^\top$ and $\bar W = H^\top \bar Y$: the shapes tell you the order.

# %%
rng = np.random.default_rng(0)
N, D, Hdim, K = 8, 5, 6, 3
X_np = rng.standard_normal((N, D))
W1_np = rng.standard_normal((D, Hdim)) * 0.5
W2_np = rng.standard_normal((Hdim, K)) * 0.5

# by hand
H_np = np.tanh(X_np @ W1_np)
Y_np = H_np @ W2_np
Y_bar = 2 * Y_np / N                 # d(1/N sum Y^2)/dY
W2_bar = H_np.T @ Y_bar              # (Hdim, N) @ (N, K)
H_bar = Y_bar @ W2_np.T              # (N, K) @ (K, Hdim)
A_bar = H_bar * (1 - H_np ** 2)      # through tanh
W1_bar = X_np.T @ A_bar              # (D, N) @ (N, Hdim)

# by the engine
X = Tensor(X_np)
W1 = Tensor(W1_np, requires_grad=True)
W2 = Tensor(W2_np, requires_grad=True)
Y = (X @ W1).tanh() @ W2
loss = (Y * Y).sum() / N
loss.backward()
print("max |dW1 engine - dW1 hand| =", np.abs(W1.grad.numpy() - W1_bar).max())
print("max |dW2 engine - dW2 hand| =", np.abs(W2.grad.numpy() - W2_bar).max())

# %% [markdown]
# A picture of the two gradients of $W_1$: identical (the engine performs the same float64
# operations as the hand-written code, so the difference is exactly zero). Red pixels are weights
# the loss wants smaller, blue ones larger.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
vmax = np.abs(W1_bar).max()
for ax, m, title in [(axes[0], W1_bar, "dL/dW1 by hand"),
                     (axes[1], W1.grad.numpy(), "dL/dW1 by minigrad")]:
    im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    ax.set_title(title); ax.set_xlabel("hidden unit"); ax.set_ylabel("input")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## 5. Write your own operation, and check it
#
# An operation is a `minigrad.Function` subclass with a `forward` and a `backward` on **raw
# arrays**. `forward` saves what `backward` needs; `backward` receives $\bar y$ (the gradient of
# the output) and returns $\bar x$, one gradient per input. Here is **softplus**,
# $y = \log(1 + e^x)$, whose derivative is the logistic sigmoid $\sigma(x) = 1/(1+e^{-x})$:

# %%
from minigrad import Function


class Softplus(Function):
    """y = log(1 + exp(x));  dy/dx = sigmoid(x)."""

    def forward(self, x):
        self.x = x
        return np.logaddexp(0.0, x)          # log(1 + e^x) without overflow

    def backward(self, grad_y):
        return grad_y / (1.0 + np.exp(-self.x))   # chain rule: ybar * dy/dx


def softplus(x):
    return Softplus()(x)


xs = Tensor(np.linspace(-4, 4, 81), requires_grad=True)
softplus(xs).sum().backward()          # d(sum y)/dx_i = dy_i/dx_i
numeric = (np.logaddexp(0, xs.numpy() + 1e-6) - np.logaddexp(0, xs.numpy() - 1e-6)) / 2e-6

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(xs.numpy(), np.logaddexp(0, xs.numpy()), label="softplus(x)")
ax.plot(xs.numpy(), xs.grad.numpy(), label="backward: dy/dx", lw=3, alpha=0.6)
ax.plot(xs.numpy()[::4], numeric[::4], "k.", label="finite differences")
ax.legend(); ax.set_xlabel("x"); ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# `minigrad.gradcheck(fn, inputs)` does the comparison for you, thoroughly: it contracts the
# output with a random direction $r$ (so a backward that mixes up output positions cannot hide),
# then compares the analytic gradient with central differences
# $\big(L(x_j+\varepsilon) - L(x_j-\varepsilon)\big)/2\varepsilon$ for **every** input element,
# in float64. It returns `True`, or raises `minigrad.GradcheckError` with the worst elements.

# %%
x_check = Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
print("softplus passes gradcheck:", minigrad.gradcheck(softplus, [x_check]))

# %% [markdown]
# Now a **broken** backward: the most common bug when writing a layer is to forget the upstream
# gradient, returning only the local derivative $dy/dx$ instead of $\bar y\,dy/dx$. A check with
# `sum()` as the loss ($\bar y = 1$) would *not* notice; gradcheck's random direction does:

# %%
class BrokenSoftplus(Softplus):
    def backward(self, grad_y):
        return 1.0 / (1.0 + np.exp(-self.x))      # BUG: forgot "grad_y *"


def broken_softplus(x):
    return BrokenSoftplus()(x)


# with a plain sum, the bug is invisible: ybar is all ones
xb = Tensor(x_check.numpy().copy(), requires_grad=True)
broken_softplus(xb).sum().backward()
print("sum-loss gradient matches the correct one:",
      np.allclose(xb.grad.numpy(), 1 / (1 + np.exp(-xb.numpy()))))

try:
    minigrad.gradcheck(broken_softplus, [x_check])
except minigrad.GradcheckError as err:
    print("\ngradcheck caught it:\n")
    print(err)

# %% [markdown]
# The report names the input, the element, the analytic and the numeric value: enough to find the
# bug. Note that gradcheck insists on float64: in float32 the difference quotient is swamped by
# rounding (an $\varepsilon$ of $10^{-6}$ is below float32's resolution near 1).

# %%
try:
    minigrad.gradcheck(softplus, [Tensor(np.ones(3, dtype=np.float32), requires_grad=True)])
except TypeError as err:
    print("TypeError:", err)

# %% [markdown]
# ### Your turn
#
# Write `class Swish(Function)` for $y = x\,\sigma(x)$ (its derivative is
# $\sigma(x)\,(1 + x\,(1-\sigma(x)))$), and check it with `minigrad.gradcheck`. Then break it on
# purpose (swap a sign, drop a factor) and read the report.
#
# **Next:** notebook 2 applies the same recipe to convolution, the operation that does almost all
# of VGG's and ResNet's work.
