"""The ``{chapter-times}`` directive: how long each chapter took to run in the build of the page.

A reader's version of myst-nb's ``nb-exec-table``: one row per executed chapter, in the order of the table of
contents, with its title (linked) and its run time, under a line naming the machine that built the page and
whether quick mode was on. myst-nb's table shows build internals instead (file names, modification times,
the cache method).
"""
from __future__ import annotations

import os
import platform

from docutils import nodes
from myst_nb.ext.execution_tables import METADATA_KEY
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx.addnodes import pending_xref
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective


class ChapterTimesNode(nodes.General, nodes.Element):
    """Replaced by the table once every chapter has run."""


class ChapterTimes(SphinxDirective):
    def run(self):
        # The same flag as nb-exec-table, so myst-nb rewrites this page whenever a chapter is re-executed.
        NbMetadataCollector.set_doc_data(self.env, self.env.docname, METADATA_KEY, True)
        return [ChapterTimesNode()]


def _machine() -> str:
    import torch

    from minidiff.runtime import default_device, quick_mode

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = default_device()
    gpu = f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ", no GPU"
    mode = "quick mode" if quick_mode() else "full mode"
    return f"{cpu} ({os.cpu_count()} logical CPUs){gpu}; {mode}"


def _row(cells):
    row = nodes.row()
    for cell in cells:
        row += nodes.entry("", cell if isinstance(cell, nodes.Node) else nodes.paragraph(text=cell))
    return row


class ChapterTimesTransform(SphinxPostTransform):
    default_priority = 8   # before the references are resolved (10)

    def run(self, **kwargs) -> None:
        data = NbMetadataCollector.get_doc_data(self.env)
        order = {name: i for i, name in enumerate(self._toc_order())}
        for node in self.document.findall(ChapterTimesNode):
            table = nodes.table(classes=["colwidths-auto"])
            group = nodes.tgroup(cols=2)
            table += group
            group += [nodes.colspec(colwidth=70), nodes.colspec(colwidth=30)]
            head = nodes.thead()
            head += _row(["Chapter", "Run time"])
            body = nodes.tbody()
            chapters = sorted((d for d in data if d.startswith("notebooks/") and data[d].get("exec_data")),
                              key=lambda d: order.get(d, len(order)))
            for docname in chapters:
                run = data[docname]["exec_data"]
                link = pending_xref(refdoc=self.env.docname, reftarget="/" + docname, reftype="doc",
                                    refdomain="std", refexplicit=False, refwarn=True)
                link += nodes.inline(text=docname)
                seconds = run.get("runtime")
                took = "failed" if not run.get("succeeded") else "-" if seconds is None else _minutes(seconds)
                body += _row([nodes.paragraph("", "", link), took])
            group += [head, body]
            caption = nodes.paragraph(text=f"Built on: {_machine()}.")
            node.replace_self([caption, table])

    def _toc_order(self) -> list[str]:
        """Documents in reading order (the toctree, depth first from the root)."""
        seen: list[str] = []

        def walk(doc):
            if doc in seen:
                return
            seen.append(doc)
            for child in self.env.toctree_includes.get(doc, []):
                walk(child)

        walk(self.config.root_doc)
        return seen


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def setup(app):
    app.add_node(ChapterTimesNode)
    app.add_directive("chapter-times", ChapterTimes)
    app.add_post_transform(ChapterTimesTransform)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
