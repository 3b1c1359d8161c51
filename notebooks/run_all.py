"""Regenerate every notebook with its outputs.

    python notebooks/run_all.py              # full run (what is committed)
    python notebooks/run_all.py --quick      # tiny sizes, as the tests run them
    python notebooks/run_all.py 03 05        # only the notebooks whose name contains 03 or 05
    python notebooks/run_all.py --no-write   # execute, check for errors, write nothing
    python notebooks/run_all.py --threads 1  # one BLAS/Numba thread (a busy, shared machine)

Each notebook is rebuilt from ``notebooks/src/NN_name.py`` (see ``_build.py``),
executed top to bottom in a fresh ``python3`` kernel with ``notebooks/`` as the
working directory, and written back in place with its outputs.  A cell that
raises stops the run with the error and leaves the old file untouched.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

import _build  # noqa: E402

QUICK_ENV = "MINIGRAD_NOTEBOOK_QUICK"


THREAD_ENVS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def execute(nb, timeout=600, quick=False, threads=None):
    """Execute ``nb`` in place in a fresh kernel (cwd ``notebooks/``).

    ``threads``: if given, the kernel's BLAS / OpenMP / Numba thread counts
    (one thread is the most robust choice on a machine shared with other jobs).
    """
    saved = {k: os.environ.get(k) for k in (QUICK_ENV,) + THREAD_ENVS}
    os.environ[QUICK_ENV] = "1" if quick else "0"
    if threads:
        for k in THREAD_ENVS:
            os.environ[k] = str(threads)
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}},
                                record_timing=False)
        client.execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="run only notebooks whose file name contains one of these")
    ap.add_argument("--quick", action="store_true", help=f"quick mode ({QUICK_ENV}=1): tiny sizes")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    ap.add_argument("--no-write", action="store_true", help="execute only; do not write the notebooks")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/OpenMP/Numba threads of the kernels (default: their own defaults)")
    args = ap.parse_args(argv)

    total = time.perf_counter()
    for source in _build.sources():
        if args.names and not any(n in source.stem for n in args.names):
            continue
        path = _build.notebook_path(source)
        nb = _build.build(source)
        t0 = time.perf_counter()
        print(f"running {path.name} ({'quick' if args.quick else 'full'} mode) ...", flush=True)
        execute(nb, timeout=args.timeout, quick=args.quick, threads=args.threads)
        seconds = time.perf_counter() - t0
        if args.no_write:
            print(f"  ok in {seconds:.1f} s (not written)")
            continue
        nbformat.validate(nb)
        _build.write_atomic(nb, path)
        print(f"  wrote {path.relative_to(HERE.parent)} in {seconds:.1f} s, "
              f"{path.stat().st_size / 1e6:.2f} MB")
    print(f"all done in {time.perf_counter() - total:.1f} s")


if __name__ == "__main__":
    main()
