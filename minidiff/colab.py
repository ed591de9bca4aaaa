"""Running the chapters anywhere: the Colab badge and the first cell of every notebook.

The addresses come from :mod:`minidiff.home`, the project's one home setting. Each chapter's "Open in Colab"
badge must equal :func:`colab_link` and its first cell must install :func:`pip_spec`; a test checks that.
"""
from __future__ import annotations

import sys

import torch

from .runtime import default_device, quick_mode

from . import home
from .home import BRANCH, REPO_URL  # noqa: F401  (still importable from here)


def pip_spec(source: str = "release") -> str:
    """What ``pip install`` takes to install minidiff: the release this book was written for
    (``source="release"``, e.g. ``minidiff==0.2.0``) or the repository's branch (``source="repository"``)."""
    from . import __version__

    if source == "release":
        return f"{home.PYPI_NAME}=={__version__}"
    if source == "repository":
        return f"git+{home.REPO_URL}@{home.BRANCH}"
    raise ValueError(f"source must be 'release' or 'repository', got {source!r}")


def colab_link(notebook: str) -> str:
    """The "Open in Colab" address of a chapter, e.g. ``colab_link("notebooks/01_forward_process.ipynb")``."""
    return f"{home.COLAB_URL}/github/{home.GITHUB_REPOSITORY}/blob/{home.BRANCH}/{notebook}"


def first_cell() -> str:
    """The first code cell of every chapter: install minidiff where it is missing (Colab), then set up.

    ``tools/set_home.py`` writes it into each notebook; a test checks that every chapter starts with it.
    """
    return "\n".join([
        "# Colab: install minidiff first (on your own machine it is already installed; see the setup page).",
        "# The first line installs the release this book was written for; the second, the newest code.",
        "import importlib.util",
        'if importlib.util.find_spec("minidiff") is None:',
        f'    %pip install --quiet "{pip_spec()}"',
        f'    # %pip install --quiet "{pip_spec("repository")}"',
        "",
        "import torch",
        "import matplotlib.pyplot as plt",
        "import minidiff as md",
        "from minidiff import figures",
        "from minidiff.colab import setup",
        "",
        "device = setup()",
    ])


#: Notebook metadata that makes Colab open a chapter on a GPU runtime.
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def setup(*, verbose: bool = True) -> torch.device:
    """The chapters' first call: PNG figures, a fixed figure style, and a report of the device in use.

    Returns :func:`minidiff.default_device` (CUDA, then MPS, then CPU). Training lengths in the chapters follow
    :func:`minidiff.quick_mode`, which is on by default when no GPU is present.
    """
    import matplotlib

    matplotlib.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "image.cmap": "gray",
        "axes.titlesize": "medium",
        "animation.embed_limit": 40.0,    # MB; the chapters' animations stay far below
    })
    try:  # PNG, not SVG: SVG output changes text on every run
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - outside IPython
        pass
    device = default_device()
    if verbose:
        where = "Colab" if in_colab() else "local"
        mode = "on (short runs)" if quick_mode() else "off (full runs)"
        print(f"minidiff ready ({where}): device = {device}, torch {torch.__version__}, quick mode {mode}")
    return device
