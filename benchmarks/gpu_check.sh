#!/usr/bin/env bash
# gpu_check.sh -- minigrad's whole GPU path on a machine with an NVIDIA GPU, in one go.
#
#   benchmarks/gpu_check.sh [OUTDIR]        (run from anywhere; works in the repository root)
#
# Writes its logs and a one-screen summary into OUTDIR (default: $OUT, else
# gpu_check-<date>-<time>/ in the repository) and prints the summary last:
#
#   env        nvidia-smi, driver, CUDA, Python, CuPy, Numba / numba-cuda, PyTorch versions
#   install    pip install --no-deps --no-build-isolation -e .  (offline: nothing is fetched)
#   gpu-tests  python -m pytest -m gpu tests   (every GPU test of the suite: the kernels
#              against NumPy, the large shapes against im2col + cuBLAS -- N up to 256,
#              224x224 inputs, stride 2, weight gradients cut into several slices --,
#              every op in float64, dense evaluation, a checkpoint round trip, ...)
#   kernels    python -m pytest tests/kernels  (the Numba kernels on the real GPU, the CUDA C
#              emulation, the dispatch); a skipped test there fails the stage
#   train      a short --device cuda run of examples/train_cifar_resnet.py (synthetic data):
#              the loss falls; stopped after 2 of 3 epochs and resumed, it ends exactly where
#              an uninterrupted run ends (the same loss at every iteration, the same weights)
#   dense      a small VGG trained on the GPU, evaluated densely on the GPU and on the CPU
#              (these two stages: benchmarks/gpu_check.py)
#   bench      benchmarks/gpu_bench.py: CUDA C / Numba / im2col + cuBLAS / cuDNN (PyTorch)
#              3x3 convolutions at the CIFAR ResNet shapes (batch 128) and ResNet-20 epochs
#              over 50,000 CIFAR-shaped images, with the targets
#
# Finishes within 8 minutes: each stage runs under `timeout` with its own limit, and no
# limit reaches past one budget of 470 s for the whole script (the benchmark gets what the
# stages before it left; a stage with no time left is reported, not run).  Needs only
# what such a machine has: python3 with CuPy, numba-cuda, pytest (PyTorch for the cuDNN
# column).  On a machine without a usable GPU it stops at once with one line and exit code 3.
# Exit code: 0 when every stage passed, 1 otherwise.
set -u
cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)
PY=${PYTHON:-python3}

if ! command -v nvidia-smi >/dev/null 2>&1 \
   || ! "$PY" -c 'import sys, cupy; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)' >/dev/null 2>&1; then
    echo "gpu_check: no usable NVIDIA GPU here (needs nvidia-smi and CuPy seeing a CUDA device); nothing was run" >&2
    exit 3
fi

OUTDIR=${1:-${OUT:-$REPO/gpu_check-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
RUNS=$(mktemp -d)                       # training runs: fresh folders, outside OUTDIR
trap 'rm -rf "$RUNS"' EXIT
SUMMARY=$OUTDIR/summary.txt
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MINIGRAD_CUDASIM=0
START=$(date +%s)
DEADLINE=$(( START + 470 ))
STATUS=0
: >"$SUMMARY"

note() { echo "$*" >>"$SUMMARY"; }

# stage NAME SECONDS LOG CMD...: run CMD under timeout (SECONDS, or less where the budget
# ends sooner), appending to LOG; record the outcome
stage() {
    local name=$1 limit=$2 log=$3 t0 rc left
    shift 3
    t0=$(date +%s)
    left=$(( DEADLINE - t0 ))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        note "$(printf '%-10s NOT RUN        (the 8-minute budget is spent)' "$name")"
        STATUS=1
        return 1
    fi
    echo "=== $name: $* (limit ${limit}s)" >>"$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 ))
    if [ $rc -eq 0 ]; then
        note "$(printf '%-10s PASS     %4ss' "$name" "$took")"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        note "$(printf '%-10s TIMEOUT  %4ss  (limit %ss; see %s)' "$name" "$took" "$limit" "$(basename "$log")")"
        STATUS=1
    else
        note "$(printf '%-10s FAIL     %4ss  (exit %s; see %s)' "$name" "$took" "$rc" "$(basename "$log")")"
        STATUS=1
    fi
    return $rc
}

# --- env ------------------------------------------------------------------------------------
ENV=$OUTDIR/env.txt
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    timeout 30 nvidia-smi
    timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    timeout 60 "$PY" - <<'EOF'
import platform, sys
print("python", sys.version.split()[0], sys.executable)
import cupy
rt = cupy.cuda.runtime
props = rt.getDeviceProperties(0)
name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
print(f"GPU: {name}, compute capability {props['major']}.{props['minor']}")
print(f"CuPy {cupy.__version__}, CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}")
try:
    print("NVRTC", cupy.cuda.nvrtc.getVersion())
except Exception as exc:
    print("NVRTC: ?", exc)
import numba
print("numba", numba.__version__)
try:
    import numba_cuda
    print("numba-cuda", getattr(numba_cuda, "__version__", "?"))
except ImportError:
    print("numba-cuda: not installed (numba's own CUDA target)")
try:
    import torch
    print("torch", torch.__version__, "CUDA", torch.version.cuda, "cuDNN",
          torch.backends.cudnn.version(), "available", torch.cuda.is_available())
except ImportError:
    print("torch: not installed (no cuDNN column)")
try:
    import pytest
    print("pytest", pytest.__version__)
except ImportError:
    print("pytest: NOT INSTALLED")
EOF
} >"$ENV" 2>&1
note "minigrad GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
note "$(grep -m1 '^GPU:' "$ENV")"
note "$(grep -m1 '^CuPy' "$ENV");  $(grep -m1 '^numba-cuda' "$ENV");  $(grep -m1 '^torch' "$ENV")"
note ""

# the last line of LOG that matches PATTERN, else LOG's last line (the error, usually)
result_line() {
    local line
    line=$(grep -E "$2" "$1" | tail -1)
    [ -n "$line" ] || line=$(tail -1 "$1")
    echo "$line" | cut -c1-100
}

# --- install ---------------------------------------------------------------------------------
TESTS=$OUTDIR/tests-gpu.log
KTESTS=$OUTDIR/tests-kernels.log
: >"$TESTS"
: >"$KTESTS"
if ! stage install 60 "$TESTS" "$PY" -m pip install --no-deps --no-build-isolation --no-index -e "$REPO"; then
    note "           minigrad could not be installed: nothing else was run"
    cat "$SUMMARY"
    exit 1
fi

# --- the GPU tests, then tests/kernels with nothing skipped -------------------------------------
PYTEST_END='(passed|failed|error).* in [0-9.]+s'
# (-o addopts=: one process on the one GPU, and no need for pytest-xdist there)
stage gpu-tests 170 "$TESTS" "$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider -o addopts=
note "           $(result_line "$TESTS" "$PYTEST_END")"
stage kernels 100 "$KTESTS" "$PY" -m pytest tests/kernels -q -rs -p no:cacheprovider -o addopts=
KLINE=$(result_line "$KTESTS" "$PYTEST_END")
note "           $KLINE"
if echo "$KLINE" | grep -q skipped; then
    note "           FAIL: tests/kernels skipped tests on the GPU (see tests-kernels.log, 'SKIPPED')"
    STATUS=1
fi

# --- a short --device cuda training run, stopped and resumed; dense evaluation ----------------------
TRAIN=$OUTDIR/train.log
: >"$TRAIN"
stage train 80 "$TRAIN" "$PY" benchmarks/gpu_check.py train "$RUNS"
note "           $(result_line "$TRAIN" '^RESULT train')"
stage dense 50 "$TRAIN" "$PY" benchmarks/gpu_check.py dense "$RUNS"
note "           $(result_line "$TRAIN" '^RESULT dense')"

# --- the GPU benchmark ------------------------------------------------------------------------------
BENCH=$OUTDIR/bench.log
stage bench 470 "$BENCH" "$PY" benchmarks/gpu_bench.py --out "$OUTDIR/gpu_bench.md"
if [ -s "$OUTDIR/gpu_bench.md" ]; then
    note ""
    note "benchmark against the targets (all figures in gpu_bench.md):"
    grep -E '^\| (target|CUDA C /|Numba /|ResNet-20 epoch)' "$OUTDIR/gpu_bench.md" >>"$SUMMARY"
else
    note "           (no benchmark report: see bench.log)"
fi

note ""
note "total $(( $(date +%s) - START ))s; logs in $OUTDIR (env.txt tests-gpu.log tests-kernels.log train.log bench.log gpu_bench.md)"
[ $STATUS -eq 0 ] && note "ALL PASSED" || note "SOME STAGES FAILED"
cat "$SUMMARY"
exit $STATUS
