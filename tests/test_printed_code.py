"""The package code the chapters print (``literalinclude``) is the textbook version: no argument checks.

Each public function checks its arguments in one call and then runs a math-only function; the chapters include
the math-only functions. Here every listing is read as the book shows it (Sphinx's own reader, with the
directive's options) and must contain no ``raise`` and no call to a ``check_*`` / ``_check*`` helper.
"""
import ast
import json
import re
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
from sphinx.config import Config  # noqa: E402
from sphinx.directives.code import LiteralInclude, LiteralIncludeReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"```\{literalinclude\} (\S+)\n((?::[\w-]+:.*\n)*)```")


def listings() -> list[tuple[str, Path, dict]]:
    """(id, included file, options) for every literalinclude of package code in the chapters and book pages."""
    found = []
    pages = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md"))
    for page in pages:
        texts = (["".join(c["source"]) for c in json.loads(page.read_text())["cells"]] if page.suffix == ".ipynb"
                 else [page.read_text()])
        for text in texts:
            for m in INCLUDE.finditer(text):
                path = (page.parent / m.group(1)).resolve()
                if "minidiff" not in path.parts:
                    continue
                options = {}
                for line in m.group(2).splitlines():
                    key, _, value = line[1:].partition(":")
                    convert = LiteralInclude.option_spec.get(key, lambda v: v)       # as Sphinx reads the option
                    options[key] = convert(value.strip() or None)
                found.append((f"{page.stem}:{options.get('pyobject', path.name)}", path, options))
    return found


LISTINGS = listings()


def test_the_chapters_print_package_code():
    assert len(LISTINGS) >= 8, "the chapters no longer include the package's functions?"


def _assert_no_checks(text: str) -> None:
    tree = ast.parse(textwrap.dedent(text))
    raises = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Raise)]
    assert not raises, f"the listing raises (lines {raises} of what the book prints): show the math-only function"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            assert not name.startswith(("check_", "_check")), (
                f"the listing calls the argument check {name}() at line {node.lineno}: include the function "
                "that the checked one calls")


@pytest.mark.parametrize("path,options", [entry[1:] for entry in LISTINGS], ids=[entry[0] for entry in LISTINGS])
def test_a_printed_listing_has_no_argument_checks(path, options):
    text, _ = LiteralIncludeReader(str(path), options, Config()).read()
    _assert_no_checks(text)


GETSOURCE = re.compile(r"inspect\.getsource\(md\.([\w.]+)\)")
PRINTED = sorted({m.group(1) for page in (ROOT / "notebooks").glob("*.ipynb")
                  for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "code"
                  for m in GETSOURCE.finditer("".join(c["source"]))})


def test_the_chapters_print_package_code_with_getsource():
    assert PRINTED, "no chapter prints package code with inspect.getsource any more?"


@pytest.mark.parametrize("name", PRINTED)
def test_code_printed_with_getsource_has_no_argument_checks(name):
    """Cells that print package code with ``inspect.getsource(md.<name>)`` obey the same rule."""
    import inspect

    import minidiff as md

    obj = md
    for part in name.split("."):
        obj = getattr(obj, part)
    _assert_no_checks(inspect.getsource(obj))
