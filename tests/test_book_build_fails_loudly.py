"""The README's main job fails loudly: a chapter that raises makes ``jupyter-book build`` exit non-zero, naming
the chapter and the error (instead of rendering the traceback into the page and exiting 0).

A two-page book built for real with the repository's execution settings, one page of which raises."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_a_chapter_that_raises_fails_the_build(tmp_path):
    if shutil.which("jupyter-book") is None:
        pytest.skip("jupyter-book is not installed")
    nbformat = pytest.importorskip("nbformat")
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())
    config = {"title": "t", "execute": repo["execute"],
              "sphinx": {"config": {k: v for k, v in repo["sphinx"]["config"].items() if k.startswith("nb_")}}}
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: broken\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken"),
                                         nbformat.v4.new_code_cell("raise FileNotFoundError('no Fashion-MNIST')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "broken.ipynb")
    proc = subprocess.run([shutil.which("jupyter-book"), "build", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    assert "broken.ipynb" in out and "FileNotFoundError" in out and "no Fashion-MNIST" in out
