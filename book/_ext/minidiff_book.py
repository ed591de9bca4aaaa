"""Small Sphinx hooks for the book.

* Figures with the class ``pixelated`` (small generated images shown enlarged) keep sharp pixels.
* Pages fit a phone's screen: inline code in the text, and signatures in the API reference, may wrap (Sphinx
  keeps every word of code on one line, so a long name like ``minidiff.exercises.check_timestep_embedding``
  would push the page sideways), with a line break preferred right after a module prefix. Signatures
  longer than ``maximum_signature_line_length`` (``_config.yml``) already put one parameter per line.
* nbval's test markers (``# NBVAL_CHECK_OUTPUT`` and the like) are dropped from the code cells readers see.
* Docstrings may refer to a public name by its short path, as readers import it (``:func:`minidiff.q_sample```
  for ``minidiff.forward.q_sample``): such references link to the entry where the API page documents it.
* Each inline script is emitted once per page. With Jupyter Book 1.0.4, sphinx-thebe registers its
  configuration script twice, and the second copy fails in the browser ("THEBE_JS_URL has already been
  declared").
* MathJax loads on every page, not only on pages whose body has math: chapter titles with math appear in
  every page's navigation.
* Pages written as MyST Markdown with code cells (the solutions) get no "Colab" launch button: Colab opens
  only .ipynb files, so the theme's link to the .md source would end on an error page. Their "Download"
  button still offers the executed notebook.
"""

import re
from pathlib import Path

from docutils import nodes

CSS_FILE = "minidiff_book.css"
CSS = Path(__file__).with_name(CSS_FILE)          # the stylesheet, beside this file


def _add_css(app):
    if app.builder.format == "html":
        app.add_css_file(CSS_FILE)


def _write_css(app, exception):
    if exception is None and app.builder.format == "html":
        static = Path(app.outdir) / "_static"
        static.mkdir(parents=True, exist_ok=True)
        (static / CSS_FILE).write_text(CSS.read_text())


def _top_level_alias(app, env, node, contnode):
    """Resolve ``minidiff.<name>`` (or a bare ``<name>``) to the module that defines it, when no entry has that
    path: the public names are importable from the top level, but documented where they are defined."""
    target = node.get("reftarget", "")
    name = target[len("minidiff."):] if target.startswith("minidiff.") else target
    if node.get("refdomain") != "py" or not name or "." in name:
        return None
    import minidiff

    obj = getattr(minidiff, name, None)
    module = getattr(obj, "__module__", None)
    if not (isinstance(module, str) and module.startswith("minidiff.")):
        return None
    full = f"{module}.{getattr(obj, '__qualname__', name)}"
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], full, node,
                                             contnode)


def _unique_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attributes = getattr(js, "attributes", {})
        key = (getattr(js, "filename", str(js)) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _no_colab_for_markdown(app, pagename, templatename, context, doctree):
    if Path(app.env.doc2path(pagename)).suffix == ".ipynb":
        return
    groups = [b for b in context.get("header_buttons", []) if b.get("label") == "launch-buttons"]
    for group in groups:
        group["buttons"] = [b for b in group["buttons"] if b.get("text") != "Colab"]
        if not group["buttons"]:
            context["header_buttons"].remove(group)


TEST_MARKER = re.compile(r"^[ \t]*# NBVAL_[A-Z_]+[ \t]*\n?", re.MULTILINE)


def _hide_test_markers(app, doctree):
    """Readers do not see nbval's cell markers (``# NBVAL_CHECK_OUTPUT`` ...): the notebooks keep them for the
    tests, the code cells of the pages drop those lines."""
    for block in doctree.findall(nodes.literal_block):
        parent = block.parent
        if parent is None or "cell_input" not in parent.get("classes", []):
            continue
        text = block.astext()
        clean = TEST_MARKER.sub("", text)
        if clean != text:
            block.children = [nodes.Text(clean)]
            block.rawsource = clean


def setup(app):
    app.connect("doctree-read", _hide_test_markers)
    app.set_html_assets_policy("always")
    app.connect("builder-inited", _add_css)
    app.connect("build-finished", _write_css)
    app.connect("missing-reference", _top_level_alias)
    app.connect("html-page-context", _unique_scripts, priority=1000)   # after every other extension
    app.connect("html-page-context", _no_colab_for_markdown, priority=1000)   # after the theme's launch buttons
    return {"parallel_read_safe": True, "parallel_write_safe": True}
