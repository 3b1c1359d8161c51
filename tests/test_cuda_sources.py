"""Every CUDA C kernel in kernels/ compiles to PTX with nvcc, for Volta (sm_70),
Ampere (sm_80) and Hopper (sm_90); warnings count as errors.

CuPy compiles the same sources at run time with NVRTC, so this catches syntax and
type errors on machines without a GPU.  Skipped where nvcc is absent.  An
architecture this nvcc no longer supports (CUDA 13 dropped Volta) is skipped with
nvcc's own message.  All compilations run in parallel, once per session.
"""
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"
SOURCES = sorted(p.name for p in KERNEL_DIR.glob("*.cu"))
ARCHS = ["sm_70", "sm_80", "sm_90"]
NVCC = shutil.which("nvcc")


def _nvcc(*args, timeout=120):
    return subprocess.run([NVCC, *args], capture_output=True, text=True, timeout=timeout)


def _unsupported_reason(arch):
    """nvcc's message when it cannot target ``arch`` (also tried as compute_XX), else None."""
    listed = _nvcc("--list-gpu-arch").stdout.split()
    virtual = arch.replace("sm_", "compute_")
    if virtual in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:   # try it on an empty kernel
        src = Path(tmp) / "probe.cu"
        src.write_text('extern "C" __global__ void probe() {}\n')
        probe = _nvcc(f"-arch={virtual}", "-ptx", str(src), "-o", str(Path(tmp) / "probe.ptx"))
    if probe.returncode == 0:
        return None
    msg = (probe.stderr or probe.stdout).strip().splitlines()
    return msg[-1] if msg else f"{virtual} is not in `nvcc --list-gpu-arch`"


@pytest.fixture(scope="session")
def compiled(tmp_path_factory):
    """{(source, arch): (returncode, output)} for every supported pair, compiled in parallel."""
    if NVCC is None:
        pytest.skip("nvcc not found on PATH")
    out_dir = tmp_path_factory.mktemp("ptx")
    skipped = {arch: _unsupported_reason(arch) for arch in ARCHS}
    jobs = [(src, arch) for src in SOURCES for arch in ARCHS if skipped[arch] is None]
    # -arch=sm_XX when nvcc lists the architecture, else the virtual compute_XX it accepted
    listed = _nvcc("--list-gpu-arch").stdout.split()
    flag = {a: a if a.replace("sm_", "compute_") in listed else a.replace("sm_", "compute_")
            for a in ARCHS}

    def build(job):
        src, arch = job
        ptx = out_dir / f"{Path(src).stem}_{arch}.ptx"
        proc = _nvcc(f"-arch={flag[arch]}", "-ptx", "-Werror", "all-warnings",
                     str(KERNEL_DIR / src), "-o", str(ptx))
        ok = proc.returncode == 0 and ptx.stat().st_size > 0
        return job, (ok, proc.stdout + proc.stderr, ptx)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(build, jobs))
    return results, skipped


def test_kernel_sources_exist():
    assert {"conv3x3.cu", "im2col.cu", "maxpool.cu", "lrn.cu"} <= set(SOURCES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_compiles_to_ptx(compiled, source, arch):
    results, skipped = compiled
    if skipped[arch] is not None:
        pytest.skip(f"this nvcc cannot target {arch}: {skipped[arch]}")
    ok, log, ptx = results[(source, arch)]
    assert ok, f"nvcc -arch={arch} -ptx {source} failed:\n{log}"
    text = ptx.read_text()
    # every extern "C" __global__ kernel of the source is an unmangled PTX entry
    src = (KERNEL_DIR / source).read_text()
    names = re.findall(r'extern "C" __global__ void (\w+)\(', src)
    assert names, f"{source} defines no extern \"C\" __global__ kernel"
    for name in names:
        assert f".entry {name}(" in text, f"{name} missing from the PTX of {source}"
