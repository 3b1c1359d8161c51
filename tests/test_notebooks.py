"""Execute every notebook in notebooks/ top to bottom, in quick mode.

Each notebook runs in a fresh ``python3`` kernel (nbclient + ipykernel) with
``notebooks/`` as the working directory and ``MINIGRAD_NOTEBOOK_QUICK=1``
(tiny sizes and step counts).  A cell that raises fails the test with
nbclient's ``CellExecutionError`` (the cell and the traceback).  Nothing is
written back: the committed notebooks keep their full-mode outputs.

A second, instant test checks that each committed ``.ipynb`` has the same cells
as its readable source ``notebooks/src/NN_name.py`` (``python notebooks/_build.py``
or ``python notebooks/run_all.py`` rebuilds them).
"""
import copy
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import _build  # noqa: E402

SOURCES = _build.sources()
IDS = [s.stem for s in SOURCES]
CELL_TIMEOUT = 240     # seconds per cell; quick mode needs a few at most


def test_every_notebook_has_a_source():
    assert SOURCES, f"no notebook sources in {NOTEBOOKS / 'src'}"
    built = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert built == {s.stem for s in SOURCES}, "run python notebooks/_build.py"


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_matches_source(source):
    path = _build.notebook_path(source)
    assert path.exists(), f"{path.name} missing: run python notebooks/run_all.py"
    committed = nbformat.read(path, as_version=4)
    expected = _build.build(source)
    got = [(c.cell_type, c.source) for c in committed.cells]
    want = [(c.cell_type, c.source) for c in expected.cells]
    assert got == want, (f"{path.name} differs from src/{source.name}: "
                         "run python notebooks/run_all.py to regenerate it")


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_notebook_runs(source, monkeypatch):
    monkeypatch.setenv("MINIGRAD_NOTEBOOK_QUICK", "1")
    # one thread each: the suite shares a few cores, where BLAS/Numba thread pools
    # competing with other processes are many times slower than one thread
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
    path = _build.notebook_path(source)
    nb = nbformat.read(path, as_version=4)
    nb = copy.deepcopy(nb)
    for cell in nb.cells:                      # start from a clean slate
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}},
                                     record_timing=False)
    client.execute()        # raises nbclient.exceptions.CellExecutionError on a failing cell
    errors = [o for c in nb.cells if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    # the written file is untouched: tests never write outputs back
