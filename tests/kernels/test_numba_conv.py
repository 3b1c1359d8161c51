"""The Numba CUDA 3x3 convolution kernels (forward, grad_x, grad_w) against NumPy.

Runs anywhere: on a GPU for real, otherwise in Numba's CUDA simulator (see
conftest.py).  If numba.cuda was imported before the simulator could be switched
on, all cases run once in a subprocess with NUMBA_ENABLE_CUDASIM=1.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import _numba_conv_checks as checks

HERE = Path(__file__).resolve().parent


def _numba_cuda_usable_here() -> bool:
    from numba import cuda   # the conftest has set up the simulator when needed
    from numba.core import config
    return bool(config.ENABLE_CUDASIM) or cuda.is_available()


@pytest.fixture(scope="module")
def run_case():
    """A function case -> error message or None, in-process or via one subprocess."""
    if _numba_cuda_usable_here():
        return checks.check
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, str(HERE / "_numba_conv_checks.py")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return results.__getitem__


@pytest.mark.parametrize("name", [c[0] for c in checks.CASES])
def test_numba_conv3x3_matches_numpy(run_case, name):
    problem = run_case(name)
    assert problem is None, problem


def test_reference_is_a_convolution():
    """The oracle itself: a one-hot kernel shifts the image, and the naive-loop
    gradients agree with the shifted-product forward (adjoint identity)."""
    import numpy as np
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 4, 5))
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0                          # picks x[iy-1, ix-1]
    y = checks.reference_forward(x, w, 1, 1)
    assert np.allclose(y[0, 0, 1:, 1:], x[0, 0, :-1, :-1]) and np.allclose(y[0, 0, 0], 0)
    x = rng.standard_normal((2, 3, 5, 7))
    w = rng.standard_normal((2, 3, 3, 3))
    for s in (1, 2):
        y = checks.reference_forward(x, w, s, 1)
        gy = rng.standard_normal(y.shape)
        gx, gw = checks.reference_backward(x, w, gy, s, 1)
        # <conv(x, w), gy> is linear in x and in w: <gx, x> = <gw, w> = <y, gy>
        assert np.isclose((gx * x).sum(), (y * gy).sum())
        assert np.isclose((gw * w).sum(), (y * gy).sum())
