"""Hand-written kernels for minigrad's hot paths (installed as ``minigrad.kernels``).

CUDA C sources (``*.cu``) are loaded at run time with ``cupy.RawModule``; the
Numba kernels are plain Python modules in this folder.

* ``conv3x3.cu``    direct 3x3 convolution (shared-memory tiles), grad_x, grad_w
* ``im2col.cu``     im2col and its adjoint col2im (gather, no atomics)
* ``maxpool.cu``    max pooling with saved arg-max, and its backward (gather)
* ``lrn.cu``        local response normalisation (running window sum), both passes
* ``numba_cuda.py`` the three conv3x3 kernels again, written with Numba

Each file starts with a comment on how its threads and blocks map onto the data;
:mod:`minigrad.cuda` loads and launches them.
"""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """Path of a kernel source file shipped in this folder."""
    return KERNEL_DIR / name


def cuda_sources() -> list:
    """The CUDA C kernel files shipped here, sorted by name."""
    return sorted(KERNEL_DIR.glob("*.cu"))
