"""The project's public home, set in this one place.

Everything that points a reader somewhere is derived from :data:`GITHUB_REPOSITORY` and :data:`PYPI_NAME`:
the package's links, the book's repository and launch buttons (``_config.yml``), every chapter's
"Open in Colab" badge and first cell, and the links in ``pyproject.toml``, the README and the setup page.
``tools/set_home.py`` rewrites those files from the values here, and ``tests/test_home.py`` fails when any
of them disagrees. A publisher who forks the project edits the two names below and runs the tool.

The names were checked before use: no public GitHub repository ``minidiff-book/minidiff`` and no PyPI
project ``minidiff`` existed when they were chosen (``MiniDiff/MiniDiff``, an unrelated project, holds the
GitHub name ``minidiff/minidiff``, which is case-insensitive).
"""
from __future__ import annotations

#: ``owner/name`` of the repository on GitHub.
GITHUB_REPOSITORY = "minidiff-book/minidiff"
#: The branch the book is built from.
BRANCH = "main"
#: The project's name on the Python Package Index.
PYPI_NAME = "minidiff"

OWNER, NAME = GITHUB_REPOSITORY.split("/")
#: The repository's address.
REPO_URL = f"https://github.com/{GITHUB_REPOSITORY}"
#: The published book (GitHub Pages, built by ``.github/workflows/book.yml``).
BOOK_URL = f"https://{OWNER}.github.io/{NAME}/"
PYPI_URL = f"https://pypi.org/project/{PYPI_NAME}/"
COLAB_URL = "https://colab.research.google.com"
