"""Finding ``mpiexec`` to start ranks from Python (tests, benchmarks).

``pip install mpich`` into a virtual environment puts ``mpiexec`` in that
environment's ``bin/`` folder, which is on ``PATH`` only when the environment
is activated; a program run as ``venv/bin/python ...`` finds it beside
``sys.executable``.  The ``mpiexec`` next to the Python is preferred because it
belongs to the MPI that this Python's mpi4py loads (an ``mpiexec`` of another
MPI would start N unrelated processes of one rank each).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def find_mpiexec() -> str | None:
    """Path of the ``mpiexec`` (or ``mpirun``) beside the running Python, else
    the first on ``PATH``; None when there is none."""
    here = Path(sys.executable).parent       # not resolved: a venv's bin/ holds links
    for name in ("mpiexec", "mpirun"):
        candidate = here / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("mpiexec") or shutil.which("mpirun")


def mpiexec_command(n: int, args, python: str | None = None) -> list:
    """``[mpiexec, "-n", n, python, *args]``: run ``python args`` as ``n``
    ranks (``python`` defaults to this interpreter)."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError("mpiexec not found beside this Python or on PATH; "
                           "`pip install \"minigrad[distributed]\"` installs one (MPICH)")
    return [mpiexec, "-n", str(int(n)), python or sys.executable, *map(str, args)]
