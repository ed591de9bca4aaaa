"""The reference pages of the book, checked from their sources (no book build; a few seconds).

* The API reference renders the docstrings as reStructuredText with Google-style sections (``sphinx.ext.napoleon``),
  so every docstring it shows must be valid reStructuredText after napoleon's conversion, and its formula and
  table blocks must fit the page's text column at 1280 px without a scroll bar.
* The intro's sample figure is the committed grid, and its caption says what the checkpoint README says made it.
* Every bibliography entry links out (a URL or a DOI), and every citation in the book has an entry.
* The Performance page is generated from a Markdown template; the acceptance targets sit in a collapsed
  dropdown at its end, not in the tables a reader sees first.
"""
from __future__ import annotations

import importlib
import inspect
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
MY_PAGES = ("intro", "api", "performance", "references")

docutils = pytest.importorskip("docutils")
pytest.importorskip("sphinx")
yaml = pytest.importorskip("yaml")

from docutils import nodes  # noqa: E402
from docutils.core import publish_doctree  # noqa: E402
from docutils.parsers.rst import roles  # noqa: E402
from sphinx.ext.napoleon import Config  # noqa: E402
from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402

# Characters of a literal block that fit the text column at 1280 px, by how deep the entry is nested
# (measured in Chromium: about 8.9 px per character of the theme's monospace font).
LITERAL_WIDTH = {"module": 76, "object": 73, "member": 69}


# ------------------------------------------------------------------------------------------ the API page
def documented_objects() -> list[tuple[str, str, object]]:
    """(kind, dotted name, object) for everything book/api.md documents, with the members of its classes."""
    api = (BOOK / "api.md").read_text()
    found: list[tuple[str, str, object]] = []

    def add_class_members(name: str, cls) -> None:
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
            if (inspect.isfunction(func) or isinstance(value, property)) and inspect.getdoc(func):
                found.append(("member", f"{name}.{attr}", func))

    for m in re.finditer(r"\.\. automodule:: (\S+)\n(?:   :members:(.*))?", api):
        module = importlib.import_module(m.group(1))
        found.append(("module", m.group(1), module))
        members = [n.strip() for n in (m.group(2) or "").split(",") if n.strip()]
        if not members:
            members = getattr(module, "__all__", None) or [
                n for n, o in vars(module).items()
                if not n.startswith("_") and getattr(o, "__module__", None) == module.__name__]
        for n in members:
            obj = getattr(module, n)
            found.append(("object", f"{m.group(1)}.{n}", obj))
            if inspect.isclass(obj):
                add_class_members(f"{m.group(1)}.{n}", obj)
    for m in re.finditer(r"\.\. auto(?:class|function):: (\S+)", api):
        module_name, _, n = m.group(1).rpartition(".")
        obj = getattr(importlib.import_module(module_name), n)
        found.append(("object", m.group(1), obj))
        if inspect.isclass(obj):
            add_class_members(m.group(1), obj)
    # Data members (a dict, a string) are documented by the ``#:`` comment above them, which autodoc reads;
    # their __doc__ is their type's.
    return [(kind, name, obj) for kind, name, obj in found if isinstance(inspect.getdoc(obj), str)
            and (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj) or isinstance(obj, property))]


def _literal_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    return [nodes.literal(rawtext, text)], []


for _role in ("func", "meth", "class", "mod", "data", "attr", "exc", "obj", "ref", "doc"):
    roles.register_local_role(_role, _literal_role)       # Sphinx's roles, as plain docutils sees them


def as_rst(obj, name: str) -> str:
    what = "module" if inspect.ismodule(obj) else "class" if inspect.isclass(obj) else "function"
    config = Config(napoleon_numpy_docstring=False, napoleon_use_param=True, napoleon_use_rtype=True)
    return str(GoogleDocstring(inspect.getdoc(obj), config, what=what, name=name, obj=obj))


def parse(rst: str):
    return publish_doctree(rst, settings_overrides={"report_level": 5, "halt_level": 5,
                                                    "warning_stream": io.StringIO()})


OBJECTS = documented_objects()


def test_the_api_page_documents_the_public_names():
    names = {name for _, name, _ in OBJECTS}
    for expected in ("minidiff.schedules.NoiseSchedule", "minidiff.forward.q_sample", "minidiff.losses.eps_loss",
                     "minidiff.UNet", "minidiff.samplers.ddpm_sample", "minidiff.samplers.ddim_sample",
                     "minidiff.samplers.ddim_invert", "minidiff.guidance.cfg_combine",
                     "minidiff.oracle.OracleDenoiser", "minidiff.train.TrainConfig", "minidiff.metrics.fd_cls",
                     "minidiff.classifier.Classifier", "minidiff.evaluate.evaluate_model",
                     "minidiff.data.load_fashion_mnist", "minidiff.exercises.check_q_sample",
                     "minidiff.solvers.solver_sample", "minidiff.solvers.sample_dpmpp_2m"):
        assert expected in names, f"book/api.md no longer documents {expected}"


@pytest.mark.parametrize("kind,name,obj", OBJECTS, ids=[name for _, name, _ in OBJECTS])
def test_docstring_is_valid_restructuredtext(kind, name, obj):
    doctree = parse(as_rst(obj, name))
    problems = [m.astext() for m in doctree.findall(nodes.system_message) if m["level"] >= 2]
    assert not problems, f"{name}: the API page would show reStructuredText errors:\n" + "\n".join(problems)


@pytest.mark.parametrize("kind,name,obj", OBJECTS, ids=[name for _, name, _ in OBJECTS])
def test_docstring_blocks_fit_the_page(kind, name, obj):
    doctree = parse(as_rst(obj, name))
    limit = LITERAL_WIDTH[kind]
    for block in doctree.findall(nodes.literal_block):
        for line in block.astext().splitlines():
            assert len(line) <= limit, (f"{name}: a line of {len(line)} characters in a literal block scrolls "
                                        f"sideways on the API page (at most {limit}): {line!r}")


@pytest.mark.parametrize("kind,name,obj", [o for o in OBJECTS if o[0] != "module"],
                         ids=[name for kind, name, _ in OBJECTS if kind != "module"])
def test_documented_parameters_name_real_parameters(kind, name, obj):
    """An ``Args:`` entry must name a parameter (napoleon turns a stray line into a bogus one)."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    if isinstance(func, property) or not callable(func):
        return
    try:
        params = set(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return
    rst = as_rst(obj, name)
    for documented in re.findall(r"^:param ([^:]+):", rst, flags=re.M):
        for one in (p.strip().lstrip("*") for p in documented.split(",")):
            assert one in params, f"{name}: Args documents {one!r}, which is not a parameter of {sorted(params)}"


def test_api_page_renders_docstrings_with_napoleon_not_verbatim():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx.ext.napoleon" in config["sphinx"]["extra_extensions"]
    extension = (BOOK / "_ext" / "minidiff_book.py").read_text()
    assert "autodoc-process-docstring" not in extension, "docstrings must not be turned into literal blocks"


# ------------------------------------------------------------------------------------------ figures
def test_images_on_these_pages_are_numbered_figures():
    for page in MY_PAGES:
        text = (BOOK / f"{page}.md").read_text()
        assert not re.search(r"!\[|\{image\}|<img", text), f"book/{page}.md: use a figure with a caption"
        for block in re.findall(r":::\{figure\}(.*?):::", text, flags=re.S):
            path = block.split("\n", 1)[0].strip()
            assert (BOOK / path).resolve().is_file(), f"book/{page}.md: figure {path} does not exist"
            assert re.search(r"^:name: \S+", block, flags=re.M), f"book/{page}.md: figure {path} has no :name:"
            caption = block.split("\n\n", 1)[1].strip() if "\n\n" in block else ""
            assert caption, f"book/{page}.md: figure {path} has no caption"


def test_intro_sample_figure_caption_matches_how_the_grid_was_made():
    intro = (BOOK / "intro.md").read_text()
    figure = re.search(r":::\{figure\} (\S+)\n(.*?):::", intro, flags=re.S)
    assert figure, "the intro shows no figure"
    assert Path(figure.group(1)).name == "fashion-mnist-cond-samples.png"
    readme = (ROOT / "checkpoints" / "README.md").read_text()
    command = re.search(r"`fashion-mnist-cond-samples\.png`: `(.*?)`", readme, flags=re.S).group(1)
    caption = " ".join(figure.group(2).split())
    assert "--sampler ddim" in command and "DDIM" in caption
    steps = re.search(r"--steps (\d+)", command).group(1)
    guidance = re.search(r"--guidance (\S+)", command).group(1)
    seed = re.search(r"--seed (\d+)", command).group(1)
    assert f"{steps} steps" in caption and f"guidance scale {guidance}" in caption and f"seed {seed}" in caption


def test_intro_states_prerequisites_and_what_runs_it():
    intro = (BOOK / "intro.md").read_text()
    assert "## Prerequisites" in intro
    for topic in ("Python", "PyTorch", "Gaussian", "expectation", "gradient"):
        assert topic in intro, f"the intro's prerequisites do not mention {topic}"
    assert "quick mode" in intro and "Colab" in intro and "GPU" in intro


# ------------------------------------------------------------------------------------------ references
def bib_entries() -> dict[str, str]:
    text = (BOOK / "references.bib").read_text()
    return {m.group(1): m.group(0) for m in re.finditer(r"@\w+\{([^,]+),.*?\n\}", text, flags=re.S)}


def test_every_reference_links_to_the_paper():
    for key, entry in bib_entries().items():
        url = re.search(r"\burl\s*=\s*\{(https://arxiv\.org/abs/\d{4}\.\d{4,5})\}", entry)
        doi = re.search(r"\bdoi\s*=\s*\{(10\.\d{4,}/\S+)\}", entry)
        assert url or doi, f"references.bib: {key} has neither an arXiv url nor a doi"


def test_every_citation_has_an_entry():
    keys = set(bib_entries())
    sources = [*BOOK.glob("*.md"), *(ROOT / "notebooks").glob("*.ipynb")]
    for source in sources:
        for cited in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", source.read_text()):
            for key in cited.split(","):
                assert key.strip() in keys, f"{source.name} cites {key.strip()!r}, which references.bib lacks"


def test_reference_labels_are_author_and_year_as_the_text_cites():
    """The references page labels entries as the citations read ("Ho et al., 2020"), not with numbers."""
    import sys

    from pybtex.database import parse_file
    from pybtex.plugin import find_plugin

    sys.path.insert(0, str(BOOK / "_ext"))
    try:
        import author_year_labels
    finally:
        sys.path.remove(str(BOOK / "_ext"))
    author_year_labels.setup(app=None)
    assert ":style: author_year" in (BOOK / "references.md").read_text()
    style = find_plugin("pybtex.style.formatting", "author_year")()
    labels = {e.key: e.label for e in style.format_entries(parse_file(BOOK / "references.bib").entries.values())}
    assert labels["ho2020denoising"] == "Ho et al., 2020"                  # three or more authors
    assert labels["ho2022classifier"] == "Ho and Salimans, 2022"          # two
    assert labels["efron2011tweedie"] == "Efron, 2011"                     # one
    assert labels["kynkaanniemi2019improved"].startswith("Kynk\u00e4\u00e4nniemi")   # LaTeX accents decoded
    assert labels["theis2016note"] == "Theis et al., 2016"
    assert sorted([labels["lu2022dpmsolver"], labels["lu2022dpmsolverpp"]]) == ["Lu et al., 2022a", "Lu et al., 2022b"]
    assert len(set(labels.values())) == len(labels), "two references share a label"


# ------------------------------------------------------------------------------------------ performance
def test_performance_page_keeps_acceptance_verdicts_in_a_dropdown_at_the_end():
    page = (BOOK / "performance.md").read_text()
    headings = re.findall(r"^## (.+)$", page, flags=re.M)
    assert headings[-1] == "Acceptance details", headings
    body, details = page.split("## Acceptance details", 1)
    assert "| target |" not in body and "| met |" not in body, "targets belong in the acceptance details"
    assert details.lstrip().split(":::{dropdown}", 1)[0].count("|") == 0, "the verdicts must sit in the dropdown"
    assert ":::{dropdown}" in details and ":open:" not in details


def test_performance_targets_come_from_their_data_file():
    """benchmarks/targets.json holds the targets; the acceptance details show each one the results measure."""
    import json

    targets = json.loads((ROOT / "benchmarks" / "targets.json").read_text())
    details = (BOOK / "performance.md").read_text().split("## Acceptance details", 1)[1]
    bench = (ROOT / "benchmarks" / "bench.py").read_text()
    assert re.search(r'^TARGETS = json\.loads\(.*"targets\.json"', bench, flags=re.M), "bench.py has targets of its own"
    for device in ("cpu", "cuda"):
        for key, target in targets[device].items():
            wanted = f"at most {target}× diffusers' memory" if key == "train_peak_memory" else \
                f"{target}× as fast as diffusers"
            assert wanted in details, f"the acceptance details lack the {device} target {key} = {target}"


def test_performance_page_prose_lives_in_the_template():
    template = (ROOT / "benchmarks" / "performance_template.md").read_text()
    page = (BOOK / "performance.md").read_text()
    assert "{{" not in page and "{%" not in page
    for sentence in ("## On your machine", "## Where the time goes", "## Acceptance details"):
        assert sentence in template
    report = (ROOT / "benchmarks" / "report.py").read_text()
    for phrase in ("layers per block", "as fast as diffusers", "Fashion-MNIST model", "the memory", "NCHW;"):
        assert phrase not in report, f"benchmarks/report.py still writes the page's words: {phrase!r}"
