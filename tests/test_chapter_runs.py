"""tests/chapter_runs.py, run for real: nbval executes a small notebook in a subprocess, and the plugin hands
back that notebook with the outputs of the run, or nothing when a cell failed."""
import subprocess
import sys
from pathlib import Path

import nbformat
HERE = Path(__file__).resolve().parent

CONFTEST = f'''
import sys
sys.path.insert(0, {str(HERE)!r})
from pathlib import Path
import nbformat
from chapter_runs import ChapterRuns

RUNS = ChapterRuns()

def pytest_configure(config):
    config.pluginmanager.register(RUNS, "runs")

def pytest_sessionfinish(session):
    nb = RUNS.executed(Path(__file__).parent / "nb.ipynb")
    (Path(__file__).parent / "out.json").write_text("null" if nb is None else nbformat.writes(nb))
'''


def run(tmp_path, cells):
    nb = nbformat.v4.new_notebook(cells=cells)
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                    "-q", "nb.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    text = (tmp_path / "out.json").read_text()
    return None if text == "null" else nbformat.reads(text, as_version=4)


def test_the_executed_copy_holds_the_run_s_outputs(tmp_path):
    skipped = nbformat.v4.new_code_cell("print('widget')", metadata={"tags": ["skip-execution"]})
    nb = run(tmp_path, [nbformat.v4.new_markdown_cell("# title"), nbformat.v4.new_code_cell("x = 6 * 7\nprint(x)"),
                        skipped, nbformat.v4.new_code_cell("x + 1")])
    nbformat.validate(nb)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert [o["output_type"] for o in code[0]["outputs"]] == ["stream"] and code[0]["outputs"][0]["text"] == "42\n"
    assert code[1]["outputs"] == []                       # ran in nbval, shows nothing, as in the README's build
    assert code[2]["outputs"][0]["data"]["text/plain"] == "43" and code[2]["execution_count"] == 3


def test_a_failed_cell_gives_no_executed_copy(tmp_path):
    assert run(tmp_path, [nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("1 / 0")]) is None
