"""Run chapter notebooks and store only the outputs that nbval compares.

Usage:  python tools/refresh_checked_outputs.py notebooks/01_forward_process.ipynb [...]
        python tools/refresh_checked_outputs.py notebooks/01_forward_process.ipynb --executed RUN.ipynb

The second form takes the outputs from a copy already executed (``jupyter nbconvert --execute``) instead of
running the chapter again; its cells must be those of the notebook, source for source.

Every cell is executed. Cells marked ``# NBVAL_CHECK_OUTPUT`` keep their text output (what
``python -m pytest`` compares with a fresh run); every other output, figures included, is removed, so the
repository holds no stale figures — the book build executes the notebooks and draws them anew.
Run it after a change that legitimately changes a checked output, and review the diff.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK = "# NBVAL_CHECK_OUTPUT"


def refresh(path: Path, timeout: int = 600, executed: Path | None = None) -> None:
    nb = nbformat.read(path, as_version=4)
    if executed is None:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    else:
        run = nbformat.read(executed, as_version=4)
        if [c.source for c in run.cells] != [c.source for c in nb.cells]:
            raise SystemExit(f"{executed} was executed from other sources than {path}; run it again")
        for cell, ran in zip(nb.cells, run.cells):
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if CHECK not in cell.source:
            cell.outputs = []
            cell.execution_count = None
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "error":
                raise RuntimeError(f"{path}: a checked cell raised {out.ename}: {out.evalue}")
            if out.output_type == "stream" and out.name == "stdout":
                if kept and kept[-1].output_type == "stream":      # one block per cell, as nbval compares it
                    kept[-1].text += out.text
                else:
                    kept.append(out)
            elif out.output_type == "execute_result" and "text/plain" in out.data:
                out.data = {"text/plain": out.data["text/plain"]}
                out.metadata = {}
                kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"{path}: stored the outputs of {sum(CHECK in c.source for c in nb.cells if c.cell_type == 'code')} checked cells")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--executed" in args:
        k = args.index("--executed")
        if len(args) != 3 or k != 1:
            raise SystemExit("usage: refresh_checked_outputs.py NOTEBOOK --executed EXECUTED_COPY")
        refresh(Path(args[0]), executed=Path(args[2]))
    else:
        for arg in args:
            refresh(Path(arg))
