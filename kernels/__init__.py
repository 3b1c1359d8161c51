"""Hand-written kernels for minigrad's hot paths (installed as ``minigrad.kernels``).

CUDA C sources (``*.cu``) are loaded at run time with ``cupy.RawModule``; the
Numba kernels are plain Python modules in this folder.
"""
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    """Path of a kernel source file shipped in this folder."""
    return KERNEL_DIR / name
