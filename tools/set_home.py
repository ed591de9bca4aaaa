"""Write the project's home (minidiff/home.py) into every file that points a reader at it.

    python tools/set_home.py           # rewrite the files from minidiff/home.py
    python tools/set_home.py --check   # exit 1 and list the files that disagree (what tests/test_home.py runs)

A publisher who forks the project sets GITHUB_REPOSITORY (and PYPI_NAME) in minidiff/home.py, runs this tool
and commits the result. It rewrites: the repository, branch and site address in _config.yml; the links in
pyproject.toml; every chapter's "Open in Colab" badge, first code cell and Colab metadata (GPU runtime); and
the previous addresses wherever the README and the book's pages mention them.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minidiff import home  # noqa: E402
from minidiff.colab import COLAB_METADATA, colab_link, first_cell, pip_spec  # noqa: E402

PAGES = ["README.md", "book/setup.md", "book/intro.md"]     # prose that may mention the addresses
BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/[^)\s]*\)")


def _config(text: str) -> str:
    text = re.sub(r"(?m)^(repository:\n  url: ).*\n(  branch: ).*$", rf"\g<1>{home.REPO_URL}\n\g<2>{home.BRANCH}",
                  text)
    return re.sub(r"(?m)^(  baseurl: ).*$", rf"\g<1>{home.BOOK_URL}", text)


def _pyproject(text: str) -> str:
    for key, value in (("Homepage", home.BOOK_URL), ("Source", home.REPO_URL), ("Issues", f"{home.REPO_URL}/issues")):
        text = re.sub(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
    return text


def _notebook(name: str, text: str) -> str:
    nb = json.loads(text)
    markdown = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    badge = BADGE.sub(f"({colab_link(f'notebooks/{name}')})", "".join(markdown["source"]))
    markdown["source"] = badge.splitlines(keepends=True)
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"] = first_cell().splitlines(keepends=True)
    nb["metadata"].update(json.loads(json.dumps(COLAB_METADATA)))
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def _previous_home(config: str) -> tuple[str, str]:
    """The repository URL and branch the files were last written with (from _config.yml)."""
    url = re.search(r"(?m)^repository:\n  url: (\S+)\n  branch: (\S+)$", config)
    return (url.group(1), url.group(2)) if url else (home.REPO_URL, home.BRANCH)


def _page(text: str, old_url: str, old_branch: str) -> str:
    owner, name = old_url.removeprefix("https://github.com/").split("/")
    for old, new in ((f"git+{old_url}@{old_branch}", pip_spec("repository")), (old_url, home.REPO_URL),
                     (f"https://{owner}.github.io/{name}/", home.BOOK_URL)):
        text = text.replace(old, new)
    return text


def rewritten() -> dict[Path, tuple[str, str]]:
    """Each file this tool writes, with its text now and the text it should have."""
    config = (ROOT / "_config.yml").read_text()
    old_url, old_branch = _previous_home(config)
    files = {ROOT / "_config.yml": _config, ROOT / "pyproject.toml": _pyproject}
    files.update({ROOT / p: (lambda t: _page(t, old_url, old_branch)) for p in PAGES})
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        files[path] = lambda t, n=path.name: _notebook(n, t)
    out = {}
    for path, rewrite in files.items():
        text = path.read_text()
        out[path] = (text, rewrite(text))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any file disagrees")
    args = parser.parse_args(argv)
    plan = rewritten()                     # computed once: _config.yml names the previous home
    stale = [path for path, (now, should) in plan.items() if now != should]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} disagrees with minidiff/home.py (run python tools/set_home.py)")
        return 1 if stale else 0
    for path in stale:
        path.write_text(plan[path][1])
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
