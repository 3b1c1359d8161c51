"""Every CUDA C kernel in kernels/ compiles to PTX for Volta (sm_70), Ampere
(sm_80) and Hopper (sm_90); warnings count as errors.

Two compilers check the sources on machines without a GPU:

* nvcc, for every architecture it can target (skipped where nvcc is absent);
* NVRTC from CUDA 12 (the ``nvidia-cuda-nvrtc-cu12`` wheel of the ``dev`` extra),
  the very library CuPy's RawModule uses at run time, for all three architectures.

CUDA 13's nvcc no longer targets Volta, so on such a machine sm_70 is compiled by
NVRTC 12 alone; an sm_70 check is skipped only when neither compiler can reach it.
All compilations run in parallel, once per session.
"""
import ctypes
import glob
import os
import sys
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


def _find_nvrtc():
    """ctypes handle of a CUDA 12 libnvrtc (pip wheel or a CUDA 12 toolkit), else None."""
    candidates = []
    for site in sys.path:
        candidates += glob.glob(os.path.join(site, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so.12"))
    candidates += glob.glob("/usr/local/cuda-12*/lib64/libnvrtc.so.12")
    for path in candidates:
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


NVRTC = _find_nvrtc()


def nvrtc_compile(source, name, arch):
    """Compile CUDA C ``source`` to PTX for ``arch`` (e.g. "sm_70") with NVRTC.

    Returns (ok, log, ptx).  Mirrors what cupy.RawModule does on the GPU."""
    lib = NVRTC
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    opts = [f"--gpu-architecture={arch.replace('sm_', 'compute_')}".encode()]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    try:
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        ptx = ""
        if status == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    # NVRTC 12 warns that pre-Turing targets are deprecated: a fact about the
    # architecture, not the source; any other warning fails the check
    code_warnings = [line for line in log.splitlines()
                     if "warning" in line.lower() and "are deprecated" not in line]
    ok = status == 0 and ".entry" in ptx and not code_warnings
    return ok, log, ptx


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
    """{(source, arch): (ok, log, ptx_text, compiler)} for every pair, compiled in parallel.

    nvcc builds every architecture it can target; NVRTC 12 builds the rest."""
    if NVCC is None and NVRTC is None:
        pytest.skip("neither nvcc nor a CUDA 12 NVRTC was found")
    out_dir = tmp_path_factory.mktemp("ptx")
    if NVCC is not None:
        nvcc_refuses = {arch: _unsupported_reason(arch) for arch in ARCHS}
        listed = _nvcc("--list-gpu-arch").stdout.split()
    else:
        nvcc_refuses = {arch: "nvcc not found on PATH" for arch in ARCHS}
        listed = []
    # -arch=sm_XX when nvcc lists the architecture, else the virtual compute_XX it accepted
    flag = {a: a if a.replace("sm_", "compute_") in listed else a.replace("sm_", "compute_")
            for a in ARCHS}

    def build(job):
        src, arch = job
        if nvcc_refuses[arch] is None:
            ptx = out_dir / f"{Path(src).stem}_{arch}.ptx"
            proc = _nvcc(f"-arch={flag[arch]}", "-ptx", "-Werror", "all-warnings",
                         str(KERNEL_DIR / src), "-o", str(ptx))
            ok = proc.returncode == 0 and ptx.exists() and ptx.stat().st_size > 0
            return job, (ok, proc.stdout + proc.stderr, ptx.read_text() if ok else "", "nvcc")
        if NVRTC is not None:
            ok, log, text = nvrtc_compile((KERNEL_DIR / src).read_text(), src, arch)
            return job, (ok, log, text, "NVRTC 12")
        return job, None

    jobs = [(src, arch) for src in SOURCES for arch in ARCHS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(build, jobs))
    return results, nvcc_refuses


def _check_entries(source, text, compiler, arch):
    # every extern "C" __global__ kernel of the source is an unmangled PTX entry
    src = (KERNEL_DIR / source).read_text()
    names = re.findall(r'extern "C" __global__ void (\w+)\(', src)
    assert names, f"{source} defines no extern \"C\" __global__ kernel"
    target = arch.replace("sm_", "")
    assert re.search(rf"\.target\s+(sm|compute)_{target}\b", text), \
        f"{compiler} PTX of {source} does not target {arch}"
    for name in names:
        assert f".entry {name}(" in text, f"{name} missing from the {compiler} PTX of {source}"


def test_kernel_sources_exist():
    assert {"conv3x3.cu", "im2col.cu", "maxpool.cu", "lrn.cu"} <= set(SOURCES)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_compiles_to_ptx(compiled, source, arch):
    """nvcc where it can target ``arch``; NVRTC 12 where CUDA 13's nvcc dropped it."""
    results, nvcc_refuses = compiled
    if results[(source, arch)] is None:
        pytest.skip(f"this nvcc cannot target {arch} ({nvcc_refuses[arch]}) and no CUDA 12 "
                    "NVRTC is installed (pip install nvidia-cuda-nvrtc-cu12)")
    ok, log, text, compiler = results[(source, arch)]
    assert ok, f"{compiler} could not compile {source} for {arch}:\n{log}"
    _check_entries(source, text, compiler, arch)


@pytest.mark.skipif(NVRTC is None, reason="no CUDA 12 NVRTC (pip install nvidia-cuda-nvrtc-cu12)")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES)
def test_nvrtc_compiles_like_cupy(source, arch):
    """The run-time path: NVRTC, no include paths, exactly as cupy.RawModule compiles."""
    ok, log, text = nvrtc_compile((KERNEL_DIR / source).read_text(), source, arch)
    assert ok, f"NVRTC could not compile {source} for {arch}:\n{log}"
    _check_entries(source, text, "NVRTC", arch)


def test_nvrtc_reports_errors_loudly():
    """The checker itself can fail: a broken kernel is refused with NVRTC's message."""
    if NVRTC is None:
        pytest.skip("no CUDA 12 NVRTC")
    ok, log, _ = nvrtc_compile('extern "C" __global__ void k(float* x) { x[0] = y; }', "bad.cu", "sm_80")
    assert not ok and "identifier \"y\" is undefined" in log
