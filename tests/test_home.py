"""The one home setting (minidiff/home.py) and every file that points a reader at the project agree."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from minidiff import home
from minidiff.colab import COLAB_METADATA, colab_link, first_cell, pip_spec

ROOT = Path(__file__).resolve().parents[1]
# Repositories the book cites on purpose (references, the parity library); anything else must be our home.
CITED = {"https://github.com/huggingface/diffusers"}


def _tool():
    spec = importlib.util.spec_from_file_location("set_home", ROOT / "tools" / "set_home.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_file_agrees_with_the_home_setting():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "set_home.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_and_pyproject_name_the_home():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"] == {"url": home.REPO_URL, "branch": home.BRANCH}
    assert config["html"]["baseurl"] == home.BOOK_URL
    assert config["launch_buttons"]["colab_url"] == home.COLAB_URL
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'Source = "{home.REPO_URL}"' in pyproject and f'Homepage = "{home.BOOK_URL}"' in pyproject
    assert f'name = "{home.PYPI_NAME}"' in pyproject


def test_no_other_repository_is_linked():
    files = [ROOT / p for p in ("README.md", "_config.yml", "pyproject.toml")]
    files += sorted((ROOT / "book").glob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
    files += sorted((ROOT / "minidiff").glob("*.py")) + sorted((ROOT / ".github").rglob("*.yml"))
    for path in files:
        for url in set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", path.read_text())):
            assert url == home.REPO_URL or url in CITED, f"{path.relative_to(ROOT)} links {url}, not {home.REPO_URL}"


def test_notebooks_start_with_the_install_cell_and_ask_for_a_gpu():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert "".join(code["source"]) == first_cell(), f"{path.name}: first cell differs from colab.first_cell()"
        markdown = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
        assert f"({colab_link(f'notebooks/{path.name}')})" in "".join(markdown["source"]), f"{path.name}: badge"
        assert nb["metadata"]["accelerator"] == "GPU", f"{path.name}: Colab would open it on a CPU"
        assert nb["metadata"]["colab"]["gpuType"] == COLAB_METADATA["colab"]["gpuType"]


def test_the_install_cell_installs_this_release_or_the_repository():
    import minidiff

    cell = first_cell()
    assert f'%pip install --quiet "{home.PYPI_NAME}=={minidiff.__version__}"' in cell
    assert f'git+{home.REPO_URL}@{home.BRANCH}' in cell and pip_spec("repository") in cell
    setup_page = (ROOT / "book" / "setup.md").read_text()
    assert pip_spec() in setup_page and pip_spec("repository") in setup_page, "the setup page shows another cell"


def test_the_tool_moves_every_use_to_a_new_home(tmp_path, monkeypatch):
    """A publisher's fork: set another repository in home.py, run the tool, and no old address is left."""
    for part in ("_config.yml", "pyproject.toml", "README.md", "book", "notebooks"):
        src = ROOT / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / part)
    tool = _tool()
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    new = "https://github.com/someone/diffusion-course"
    for name, value in (("GITHUB_REPOSITORY", "someone/diffusion-course"), ("OWNER", "someone"),
                        ("NAME", "diffusion-course"), ("REPO_URL", new),
                        ("BOOK_URL", "https://someone.github.io/diffusion-course/")):
        monkeypatch.setattr(home, name, value)
    assert tool.main([]) == 0
    assert tool.main(["--check"]) == 0
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        text = path.read_text(errors="ignore")
        assert "minidiff-book" not in text, f"{path.relative_to(tmp_path)} still names the old home"
    assert f"url: {new}" in (tmp_path / "_config.yml").read_text()
    nb = json.loads((tmp_path / "notebooks" / "04_unet.ipynb").read_text())
    assert "github/someone/diffusion-course/blob/main/notebooks/04_unet.ipynb" in "".join(nb["cells"][0]["source"])
    assert f"git+{new}@main" in "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
