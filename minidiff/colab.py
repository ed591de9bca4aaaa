"""Running the chapters anywhere: the repository's address and the first cell of every notebook.

The repository URL is written here once. The book's ``_config.yml`` (launch buttons), each chapter's
"Open in Colab" badge and its install cell must agree with :data:`REPO_URL`; a test checks that they do.
"""
from __future__ import annotations

import sys

import torch

from .runtime import default_device, quick_mode

REPO_URL = "https://github.com/minidiff/minidiff"
BRANCH = "main"
COLAB_URL = "https://colab.research.google.com"


def _repo_path() -> str:
    """``owner/name`` of :data:`REPO_URL`."""
    return REPO_URL.removeprefix("https://github.com/").strip("/")


def pip_spec() -> str:
    """What ``pip install`` takes to install minidiff straight from the repository."""
    return f"git+{REPO_URL}@{BRANCH}"


def colab_link(notebook: str) -> str:
    """The "Open in Colab" address of a chapter, e.g. ``colab_link("notebooks/01_forward_process.ipynb")``."""
    return f"{COLAB_URL}/github/{_repo_path()}/blob/{BRANCH}/{notebook}"


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
