"""The real compilers accept every kernel minigrad ships, on machines without a GPU.

CUDA C (kernels/*.cu) compiles for Volta (sm_70), Ampere (sm_80) and Hopper (sm_90);
warnings count as errors.  Two compilers check the sources:

* nvcc, for every architecture it can target (skipped where nvcc is absent);
* NVRTC from CUDA 12 (the ``nvidia-cuda-nvrtc-cu12`` wheel of the ``dev`` extra),
  the very library CuPy's RawModule uses at run time, for all three architectures,
  with the options RawModule passes: minigrad.cuda.NVRTC_OPTIONS plus the
  ``-ftz=true`` CuPy adds, to PTX (``-arch=compute_XX``) and to machine code
  (``-arch=sm_XX``, what CuPy asks for when NVRTC knows the GPU).

CUDA 13's nvcc no longer targets Volta, so on such a machine sm_70 is compiled by
NVRTC 12 alone; an sm_70 check is skipped only when neither compiler can reach it.
All compilations run in parallel, once per session.

Numba CUDA (kernels/numba_cuda.py): every kernel compiles with Numba's real CUDA
compiler (numba-cuda with NVVM, from the ``dev`` extra) for sm_90, with the argument
types minigrad's launchers pass, and ptxas (from the same extra) assembles the PTX.
The simulator tests in tests/kernels/ check the numbers, but run the kernels as
Python: only these compiles show that a GPU would accept them (a shared array whose
shape is not a compile-time constant, say, runs in the simulator and fails here).
"""
import ctypes
import glob
import json
import os
import sys
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from minigrad.cuda import NVRTC_OPTIONS

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


def cupy_options(arch, cubin=False):
    """The options cupy.RawModule hands NVRTC for minigrad's sources on GPU ``arch``."""
    target = arch if cubin else arch.replace("sm_", "compute_")
    return [*NVRTC_OPTIONS, "-ftz=true", f"-arch={target}"]


def nvrtc_compile(source, name, arch, options=None, cubin=False):
    """Compile CUDA C ``source`` for ``arch`` (e.g. "sm_70") with NVRTC, to PTX, or
    with ``cubin`` to machine code.  ``options`` default to ``cupy_options``.

    Returns (ok, log, ptx text or cubin bytes).  Mirrors what cupy.RawModule does."""
    lib = NVRTC
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None) == 0
    opts = [o.encode() for o in (cupy_options(arch, cubin) if options is None else options)]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    get_size, get = (lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if cubin else \
        (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX)
    try:
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, buf)
        log = buf.value.decode(errors="replace")
        out = b"" if cubin else ""
        if status == 0:
            get_size(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            get(prog, buf)
            out = buf.raw[:size.value] if cubin else buf.value.decode(errors="replace")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    # NVRTC 12 warns that pre-Turing targets are deprecated: a fact about the
    # architecture, not the source; any other warning fails the check
    code_warnings = [line for line in log.splitlines()
                     if "warning" in line.lower() and "are deprecated" not in line]
    made = out[:4] == b"\x7fELF" if cubin else ".entry" in out
    ok = status == 0 and made and not code_warnings
    return ok, log, out


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
    """The run-time path: NVRTC with the options cupy.RawModule passes, to PTX and to
    machine code for the GPU."""
    src = (KERNEL_DIR / source).read_text()
    ok, log, text = nvrtc_compile(src, source, arch)
    assert ok, f"NVRTC could not compile {source} for {arch} ({cupy_options(arch)}):\n{log}"
    _check_entries(source, text, "NVRTC", arch)
    ok, log, _ = nvrtc_compile(src, source, arch, cubin=True)
    assert ok, f"NVRTC could not build {arch} code of {source} ({cupy_options(arch, True)}):\n{log}"


def test_nvrtc_reports_errors_loudly():
    """The checker itself can fail: a broken kernel is refused with NVRTC's message."""
    if NVRTC is None:
        pytest.skip("no CUDA 12 NVRTC")
    for cubin in (False, True):
        ok, log, _ = nvrtc_compile('extern "C" __global__ void k(float* x) { x[0] = y; }',
                                   "bad.cu", "sm_80", cubin=cubin)
        assert not ok and "identifier \"y\" is undefined" in log
    # ... and so is a warning (a variable set but never used)
    ok, log, _ = nvrtc_compile('extern "C" __global__ void k(float* x) { int u = 1; x[0] = 2; }',
                               "warn.cu", "sm_80")
    assert not ok and "warning" in log.lower()


# --- Numba CUDA: numba.cuda.compile_ptx for sm_90 -------------------------------------------
NUMBA_SOURCE = KERNEL_DIR / "numba_cuda.py"
NUMBA_KERNELS = re.findall(r"^@cuda\.jit\ndef (\w+)\(", NUMBA_SOURCE.read_text(), re.M)


def _find_ptxas():
    """ptxas of the nvidia-cuda-nvcc wheel (numba-cuda[cu12]) or of a CUDA toolkit."""
    for site in sys.path:
        hit = glob.glob(os.path.join(site, "nvidia", "cuda_nvcc", "bin", "ptxas"))
        if hit:
            return hit[0]
    return shutil.which("ptxas")


@pytest.fixture(scope="session")
def numba_ptx(tmp_path_factory):
    """What tests/kernels/_numba_compile.py reports, run once in a process of its own
    with the simulator off."""
    try:
        import numba_cuda  # noqa: F401  (NVIDIA's numba-cuda: the real CUDA target)
    except ImportError:
        pytest.skip("numba-cuda is not installed (the dev extra installs numba-cuda[cu12])")
    out = tmp_path_factory.mktemp("numba_ptx")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    script = Path(__file__).resolve().parent / "kernels" / "_numba_compile.py"
    proc = subprocess.run([sys.executable, "-W", "ignore", str(script), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if report["no_nvvm"]:
        pytest.skip(f"numba-cuda found no libNVVM: {report['no_nvvm']}")
    return report


def test_every_numba_kernel_is_launched(numba_ptx):
    """The launchers use every kernel of numba_cuda.py, so each one below is compiled
    with the types it really gets."""
    assert NUMBA_KERNELS, "no @cuda.jit kernels found in kernels/numba_cuda.py"
    assert numba_ptx["not_launched"] == []
    compiled = {key.split("(")[0] for key in numba_ptx["kernels"]}
    assert compiled == set(NUMBA_KERNELS)


@pytest.mark.parametrize("kernel", NUMBA_KERNELS)
def test_numba_kernel_compiles_for_sm90(numba_ptx, kernel):
    results = {k: v for k, v in numba_ptx["kernels"].items() if k.split("(")[0] == kernel}
    assert results, f"{kernel} was never launched"
    ptxas = _find_ptxas()
    for key, r in results.items():
        assert r["ok"], f"Numba's CUDA compiler refused {key} for sm_90:\n{r['error']}"
        text = Path(r["ptx"]).read_text()
        assert re.search(r"^\.target\s+sm_90\b", text, re.M), f"{key}: PTX not for sm_90"
        assert re.search(rf"\.entry\s+\S*{kernel}", text), f"{key}: no kernel entry in the PTX"
        if ptxas:   # assemble it, as the driver would on an H100/H200
            proc = subprocess.run([ptxas, "-arch=sm_90", "-Werror", r["ptx"], "-o",
                                   r["ptx"] + ".cubin"], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"ptxas refused {key}:\n{proc.stderr[-3000:]}"
