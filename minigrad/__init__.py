"""minigrad: a small define-by-run deep-learning engine on NumPy (and CuPy).

    import minigrad
    x = minigrad.Tensor([[1.0, 2.0]], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    x.grad            # tensor([[2., 4.]])
"""
def _kernels_from_source_checkout():
    """Make ``minigrad.kernels`` importable when minigrad runs from a source
    checkout that was not installed (``python -m benchmarks`` in the repository,
    ``PYTHONPATH=.``): an install maps the top-level ``kernels/`` folder to
    ``minigrad.kernels`` (see setup.py), a bare checkout has to be told."""
    import importlib.util
    import os
    import sys
    if "minigrad.kernels" in sys.modules or importlib.util.find_spec(".kernels", __name__):
        return
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
    init = os.path.join(folder, "__init__.py")
    if not os.path.isfile(init):
        return
    spec = importlib.util.spec_from_file_location(
        "minigrad.kernels", init, submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules["minigrad.kernels"] = module
    spec.loader.exec_module(module)
    globals()["kernels"] = module


_kernels_from_source_checkout()

from . import backend  # noqa: E402
from .backend import cuda_available, get_array_module
from .random import manual_seed, get_rng
from .tensor import (Function, Tensor, enable_grad, is_grad_enabled, no_grad,
                     retain_grads, tensor)
from .gradcheck import GradcheckError, gradcheck
from .graph import format_graph, print_graph, to_dot
from .ops.math import (abs, exp, log, matmul, max, mean, pow, sigmoid, sqrt,  # noqa: A004
                       sum, tanh)
from .ops.shape import cat, concat, flatten, permute, reshape, stack, transpose
from .creation import arange, from_numpy, ones, rand, randn, zeros, zeros_like, ones_like
from .serialization import load, save
from .config import fast_mode, is_fast, reference_mode, set_fast
from . import nn, optim  # noqa: E402  (torch-style: minigrad.nn, minigrad.optim)

__version__ = "0.1.0"

float32 = "float32"
float64 = "float64"


def __getattr__(name):
    """Import the heavier sub-packages on first use: ``minigrad.models``,
    ``minigrad.data``, ``minigrad.training``, ``minigrad.cuda``."""
    if name in ("models", "data", "training", "train", "cuda", "config"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")
