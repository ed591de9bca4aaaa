"""Small Sphinx hooks for the book.

* The API reference page shows docstrings verbatim, as ``help()`` does. The package's docstrings are plain
  text written for the terminal (Google-style sections, ASCII formulas, aligned tables); preformatted, they
  appear exactly as written and never turn a line of prose into broken reStructuredText.
* Each inline script is emitted once per page. With Jupyter Book 1.0.4, sphinx-thebe registers its
  configuration script twice, and the second copy fails in the browser ("THEBE_JS_URL has already been
  declared").
* MathJax loads on every page, not only on pages whose body has math: chapter titles with math appear in
  every page's navigation.
* Pages written as MyST Markdown with code cells (the solutions) get no "Colab" launch button: Colab opens
  only .ipynb files, so the theme's link to the .md source would end on an error page. Their "Download"
  button still offers the executed notebook.
"""

from pathlib import Path


def _verbatim(app, what, name, obj, options, lines):
    if not any(line.strip() for line in lines):
        return
    body = [("    " + line) if line.strip() else "" for line in lines]
    lines[:] = ["::", ""] + body + [""]


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


def setup(app):
    app.set_html_assets_policy("always")
    app.connect("autodoc-process-docstring", _verbatim)
    app.connect("html-page-context", _unique_scripts, priority=1000)   # after every other extension
    app.connect("html-page-context", _no_colab_for_markdown, priority=1000)   # after the theme's launch buttons
    return {"parallel_read_safe": True, "parallel_write_safe": True}
