"""minigrad: a from-scratch NumPy/CuPy deep-learning engine for learning VGG and ResNet."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

linux_x86_64 = 'platform_system == "Linux" and platform_machine == "x86_64"'
CUDA12 = ["cupy-cuda12x[ctk]>=14", "numba-cuda[cu12]>=0.30"]

setup(
    name="minigrad",
    version="0.1.0",
    description="A small define-by-run deep-learning engine on NumPy/CuPy that trains VGG and ResNet",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    # the hand-written CUDA C and Numba kernels live in the top-level kernels/
    # folder and are installed as the sub-package minigrad.kernels
    packages=find_packages(include=["minigrad", "minigrad.*"]) + ["minigrad.kernels"],
    package_dir={"minigrad.kernels": "kernels"},
    package_data={"minigrad.kernels": ["*.cu", "*.cuh", "*.md"]},
    install_requires=[
        "numpy>=1.23",
        "numba>=0.58",
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "threadpoolctl>=3.1",     # keeps the BLAS on one thread inside minigrad's conv threads
    ],
    extras_require={
        # GPU support on a host that has only the NVIDIA driver: CuPy with the CUDA
        # headers and NVRTC it compiles kernels/*.cu with ([ctk]), numba-cuda with
        # NVVM ([cu12] / [cu13]).  Pick the CUDA major version `nvidia-smi` reports;
        # CUDA 12 also runs on a CUDA 13 driver.  "cuda" is the CUDA 12 set.
        "cuda12": CUDA12,
        "cuda13": ["cupy-cuda13x[ctk]>=14", "numba-cuda[cu13]>=0.30"],
        "cuda": CUDA12,
        # data-parallel training (minigrad.distributed): mpi4py and an MPI from the package
        # index, MPICH, whose mpiexec lands beside the Python that installs it (on Windows
        # mpi4py uses Microsoft MPI, installed separately)
        "distributed": ["mpi4py>=4", 'mpich; platform_system != "Windows"'],
        "dev": [
            "pytest>=7",
            # the suite on every core (pyproject.toml: -n auto, at most 4 workers)
            "pytest-xdist>=3",
            "hypothesis>=6",
            "nbclient>=0.7",
            "nbformat>=5",
            "ipykernel>=6",
            # NVRTC from CUDA 12 (the compiler CuPy uses at run time) checks that the
            # CUDA C kernels compile for Volta, which CUDA 13's nvcc no longer targets
            f"nvidia-cuda-nvrtc-cu12; {linux_x86_64}",
            # Numba's real CUDA compiler (numba-cuda with NVVM from CUDA 12) checks that
            # every Numba CUDA kernel compiles for Hopper; no GPU is needed for that
            f"numba-cuda[cu12]>=0.30; {linux_x86_64}",
            # the multi-rank tests run under MPICH's mpiexec (tests/test_distributed.py)
            f"mpi4py>=4; {linux_x86_64}",
            f"mpich; {linux_x86_64}",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Intended Audience :: Education",
    ],
)
