"""Starting N ranks of a Python script under ``mpiexec`` from a test: a
subprocess with a timeout (a dead rank cannot hang the suite), skipped where
mpi4py or mpiexec is missing."""
import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import minigrad.distributed as dist
from minigrad.distributed.process_group import _LAUNCHER_VARIABLES

REPO = Path(__file__).resolve().parents[1]


def launch(n, args, timeout, cwd=REPO, **extra_env):
    """Run ``python args`` as ``n`` ranks; (returncode, output, seconds)."""
    if importlib.util.find_spec("mpi4py") is None:       # (not imported in this process)
        pytest.skip("mpi4py is not installed (pip install -e \".[distributed]\")")
    if dist.find_mpiexec() is None:
        pytest.skip("no mpiexec beside this Python or on PATH "
                    "(pip install -e \".[distributed]\" installs MPICH's)")
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                   [str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p]), **extra_env)
    start = time.monotonic()
    proc = subprocess.Popen(dist.mpiexec_command(n, args), cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)         # mpiexec and every rank
        out, _ = proc.communicate()
        pytest.fail(f"{n} ranks of {args} did not finish within {timeout} s:\n{out}")
    return proc.returncode, out, time.monotonic() - start
