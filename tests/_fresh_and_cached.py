"""Print digests of what the CPU kernels compute, for tests/test_fast_paths.py
(``test_kernels_compiled_and_cached_give_the_same_numbers``), which runs this
twice with one empty NUMBA_CACHE_DIR: the first run compiles every kernel and
writes the cache, the second loads them from it.

    python tests/_fresh_and_cached.py

Two training steps (SGD with momentum) of a ResNet-20 at batch 8 and of a
CIFAR VGG-11 at batch 2 (with batch norm) from seeded weights and data: the
direct, channels-last and (where the BLAS is as wide as they are)
small-plane convolution kernels, batch norm fused with ReLU and the
shortcut's addition, max-pool, the option-A shortcut and the SGD update,
then an evaluation forward.  One line per model: the
digest of its loss values, weights and evaluation logits; then
``cached <n>``, the number of kernels this run loaded from the cache (a
check that the second run really used it).
"""
import hashlib

import numpy as np

import minigrad
import minigrad.nn.functional as F


def digest(name, batch, steps=2):
    minigrad.manual_seed(0)
    rng = np.random.default_rng(0)
    model = minigrad.models.create(name)
    model.train()
    opt = minigrad.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = minigrad.Tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = rng.integers(0, 10, batch)
    h = hashlib.sha256()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        h.update(np.float32(loss.item()).tobytes())
    for p in model.parameters():
        h.update(np.ascontiguousarray(p.data).tobytes())
    model.eval()                        # and the evaluation forward (running statistics)
    with minigrad.no_grad():
        h.update(np.ascontiguousarray(model(x).data).tobytes())
    return h.hexdigest()[:16]


def cached_kernels():
    from numba.core.registry import CPUDispatcher
    from minigrad.kernels import cpu_conv3x3, cpu_conv3x3_nhwc, cpu_numba
    return sum(sum(f.stats.cache_hits.values())
               for module in (cpu_conv3x3, cpu_conv3x3_nhwc, cpu_numba)
               for f in vars(module).values() if isinstance(f, CPUDispatcher))


if __name__ == "__main__":
    print("resnet20", digest("resnet20", 8))
    print("vgg11_cifar", digest("vgg11_cifar", 2))
    print("cached", cached_kernels())
