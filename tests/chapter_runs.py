"""Each chapter runs once per test session: nbval executes it, and the browser test builds the book from that run.

nbval runs every code cell of a chapter in one kernel and keeps what the cell printed and displayed
(``IPyNbCell.test_outputs``). This plugin records those outputs. When every code cell of every chapter passed,
:func:`stage_executed_book` writes the book's sources into a folder under ``_build/`` with each chapter replaced
by its executed copy, and the build there renders those outputs instead of running the chapter again
(``execute.exclude_patterns``); the Markdown pages with code cells (the solutions, the notation page) still run
in that build. When a chapter did not run completely (it failed, or nbval was not part of the session), the
browser test builds the book the README's way, executing everything.

Cells tagged ``skip-execution`` (the widgets) run in nbval but show no output in the book, as in the README's
build.
"""
from __future__ import annotations

import copy
import hashlib
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

NAME = "minidiff-chapter-runs"


class ChapterRuns:
    """A pytest plugin: the outputs of every chapter cell nbval ran in this session, by notebook and cell."""

    def __init__(self):
        self.cells: dict[Path, dict[int, list | None]] = {}    # notebook -> code-cell number -> outputs
        self.digests: dict[Path, str] = {}                      # the notebook's bytes when it ran

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "call" or type(item).__name__ != "IPyNbCell":
            return
        path = Path(str(item.parent.fspath)).resolve()
        if path not in self.digests:                             # the notebook as it was when it ran
            self.digests[path] = _digest(path)
        passed = outcome.get_result().passed and item.test_outputs is not None
        self.cells.setdefault(path, {})[item.cell_num] = copy.deepcopy(item.test_outputs) if passed else None

    def pytest_collection_modifyitems(self, items):
        """The browser test goes last, after nbval has run the chapters it builds from."""
        items.sort(key=lambda item: Path(str(item.fspath)).name == "test_site.py")

    def executed(self, path: Path):
        """The notebook at ``path`` with the outputs of this session's run, or None when it did not run
        completely (a cell failed or was not run) or the file changed since."""
        path = path.resolve()
        nb = nbformat.read(path, as_version=4)
        runs = self.cells.get(path, {})
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        if self.digests.get(path) != _digest(path) or any(runs.get(i) is None for i in range(len(code))):
            return None
        for i, cell in enumerate(code):
            skipped = "skip-execution" in cell.metadata.get("tags", [])
            cell.outputs = [] if skipped else [_output(out, i + 1) for out in runs[i]]
            cell.execution_count = None if skipped else i + 1
        nbformat.validate(nb)
        return nb


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _output(out, count: int):
    """An nbformat output from one of nbval's recorded kernel messages."""
    kind = out["output_type"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=out["name"], text=out["text"])
    if kind == "error":
        return nbformat.v4.new_output("error", ename=out["ename"], evalue=out["evalue"], traceback=out["traceback"])
    fields = dict(data=out["data"], metadata=out.get("metadata", {}))
    if kind == "execute_result":
        fields["execution_count"] = count
    return nbformat.v4.new_output(kind, **fields)


def stage_executed_book(root: Path, chapters: list[Path], runs: ChapterRuns | None, stage: Path) -> Path | None:
    """Write the book's sources to ``stage`` with every chapter replaced by its executed copy; return ``stage``,
    or None (and write nothing) when some chapter has no complete run in this session.

    Everything else at the top of ``root`` is linked, not copied, so the pages, the package and the checkpoints
    are the repository's own; ``_config.yml`` is the repository's with the chapters excluded from execution.
    """
    if runs is None:
        return None
    executed = {path.name: runs.executed(path) for path in chapters}
    if any(nb is None for nb in executed.values()):
        return None
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "notebooks").mkdir(parents=True)
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name in ("_build", "notebooks", "_config.yml"):
            continue
        (stage / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    for entry in (root / "notebooks").iterdir():
        if entry.name in executed:
            nbformat.write(executed[entry.name], stage / "notebooks" / entry.name)
        elif not entry.name.startswith("."):
            (stage / "notebooks" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["exclude_patterns"] = ["notebooks/*"]
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return stage
