"""Build the notebooks (``notebooks/*.ipynb``) from their readable sources.

Each notebook is written as a plain Python file in ``notebooks/src/`` in the
"percent" format that editors (VS Code, Spyder, jupytext) understand::

    # %% [markdown]
    # # A title
    # Some *markdown* text.

    # %%
    x = 1 + 1

``python notebooks/_build.py`` turns every source into an ``.ipynb`` without
outputs; ``python notebooks/_build.py --keep-outputs`` keeps the outputs of code
cells whose code did not change (for edits of the markdown text).  ``python notebooks/run_all.py`` builds *and* executes them, writing
the outputs in place (that is the command to regenerate the committed
notebooks).
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def sources() -> list[Path]:
    """The notebook sources, in order (``src/NN_name.py``)."""
    return sorted(SRC.glob("[0-9][0-9]_*.py"))


def notebook_path(source: Path) -> Path:
    return HERE / (source.stem + ".ipynb")


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Split a percent-format source into ``(kind, text)`` cells.

    ``kind`` is ``"markdown"`` or ``"code"``; markdown lines lose their
    leading ``# `` (or a lone ``#``).  Blank lines around a cell are dropped.
    """
    cells, kind, lines = [], None, []

    def flush():
        if kind is None:
            return
        body = list(lines)
        while body and not body[0].strip():
            body.pop(0)
        while body and not body[-1].strip():
            body.pop()
        if kind == "markdown":
            out = []
            for line in body:
                if line.startswith("# "):
                    out.append(line[2:])
                elif line.strip() == "#":
                    out.append("")
                else:
                    raise ValueError(f"markdown line does not start with '# ': {line!r}")
            body = out
        if body:
            cells.append((kind, "\n".join(body)))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        elif kind is not None:
            lines.append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    flush()
    return cells


def build(source: Path) -> nbformat.NotebookNode:
    """A notebook (no outputs) from one source file."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, text) in enumerate(parse_cells(source.read_text(encoding="utf-8"))):
        cell = (nbformat.v4.new_markdown_cell(text) if kind == "markdown"
                else nbformat.v4.new_code_cell(text))
        cell["id"] = f"{source.stem[:2]}-{i:03d}"   # stable ids: clean diffs
        nb.cells.append(cell)
    return nb


def write_atomic(nb: nbformat.NotebookNode, path: Path):
    """Write ``nb`` to ``path`` through a temporary file and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def keep_outputs(nb: nbformat.NotebookNode, old: nbformat.NotebookNode) -> int:
    """Copy the outputs of ``old``'s code cells into ``nb`` where the code is unchanged.

    For edits of markdown text only: the rebuilt notebook keeps the outputs
    of the last execution.  Returns the number of code cells whose code
    changed (and so have no outputs); run ``run_all.py`` when it is not 0.
    """
    old_code = [c for c in old.cells if c.cell_type == "code"]
    new_code = [c for c in nb.cells if c.cell_type == "code"]
    changed = 0
    for i, cell in enumerate(new_code):
        if i < len(old_code) and old_code[i].source == cell.source:
            cell.outputs = old_code[i].get("outputs", [])
            cell.execution_count = old_code[i].get("execution_count")
        else:
            changed += 1
    nb.metadata.update({k: v for k, v in old.metadata.items() if k not in nb.metadata})
    return changed


def main(argv=None):
    names = list(argv if argv is not None else sys.argv[1:])
    keep = "--keep-outputs" in names
    names = [n for n in names if n != "--keep-outputs"]
    for source in sources():
        if names and not any(n in source.stem for n in names):
            continue
        nb = build(source)
        path = notebook_path(source)
        if keep and path.exists():
            changed = keep_outputs(nb, nbformat.read(path, as_version=4))
            if changed:
                print(f"warning: {changed} code cell(s) of {path.name} changed and have no "
                      "outputs; run python notebooks/run_all.py " + source.stem[:2])
        nbformat.validate(nb)
        write_atomic(nb, notebook_path(source))
        print(f"built {notebook_path(source).relative_to(HERE.parent)} ({len(nb.cells)} cells)")


if __name__ == "__main__":
    main()
