"""Demos that run in the reader's browser, with no kernel and no server.

A chapter embeds one in a Markdown cell::

    ```{minidiff-demo} playground2d
    ```

The directive writes ``<div class="minidiff-demo" data-demo="playground2d">`` holding a picture of one run, drawn
with the package when the book is built (what a reader with JavaScript off sees), and adds the demo's scripts to
that page only. The scripts, in ``book/_ext/demos/``, are copied to ``_static/demos/`` of the built site; each
replaces the picture with the live demo. A demo may also write assets there (``"assets"``): the Fashion-MNIST
demo writes the shipped U-Net and classifier as ONNX files (:mod:`minidiff.export`) and copies ONNX Runtime
Web's WebAssembly build from ``node_modules`` (``npm ci`` installs it from the committed ``package-lock.json``),
which its script loads only when the reader presses Sample. To add a demo: write its scripts there, add an entry
to ``DEMOS`` with the function that draws its picture, and give ``tests/test_site.py`` what to click (the setup
page explains).
"""
from __future__ import annotations

import contextlib
import io
import json
import posixpath
import shutil
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

SOURCE = Path(__file__).with_name("demos")
# ONNX Runtime Web, installed by `npm ci` from the repository's package-lock.json: the WebAssembly build only
# (the page loads ort.wasm.min.js, which loads the other two).
ORT_DIST = Path(__file__).resolve().parents[2] / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
FASHION = dict(checkpoint="fashion-mnist-cond.pt", steps=20, guidance=3.0)   # the demo's defaults, and its picture


def _draw_playground2d(path: Path) -> None:
    """One run of the playground's defaults, computed with the package: DDIM, 20 steps, on two moons."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import minidiff as md
    from minidiff.data import toy_2d

    sched = md.NoiseSchedule.linear(T=1000)
    points = toy_2d("moons", 400, generator=torch.Generator().manual_seed(0)).double()
    oracle = md.OracleDenoiser(points, sched)
    x_T = torch.randn(400, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path_points = []
    x0 = md.ddim_sample(oracle, x_T.shape, sched, steps=20, x_T=x_T,
                        callback=lambda i, t, x, x0_hat: path_points.append(x[:40].clone()))
    paths = torch.stack(path_points + [x0[:40]])                        # (21, 40, 2)
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], s=3, color="0.6", alpha=0.5)
    ax.plot(paths[:, :, 0], paths[:, :, 1], color="C0", alpha=0.2, lw=1)
    ax.scatter(x0[:, 0], x0[:, 1], s=4, color="C0")
    ax.set(xlim=(-2.6, 2.6), ylim=(-2.6, 2.6), xticks=[], yticks=[], aspect="equal")
    ax.set_title("DDIM, 20 steps, exact denoiser of two moons", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _draw_fashion(path: Path) -> None:
    """The Fashion-MNIST demo's defaults, computed with the package: one sample per class, DDIM, 20 steps,
    guidance scale 3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import minidiff as md
    from minidiff.cli import class_names

    model, sched, config = md.load_model(md.pretrained(FASHION["checkpoint"]), device="cpu")
    names = class_names(config, model.num_classes)
    y = torch.arange(model.num_classes)
    x_T = torch.randn(len(y), *config["sample_shape"], generator=torch.Generator().manual_seed(0))
    x0 = md.ddim_sample(model, x_T.shape, sched, steps=FASHION["steps"], y=y, guidance_scale=FASHION["guidance"],
                        x_T=x_T)
    fig, axes = plt.subplots(1, len(y), figsize=(1.0 * len(y), 1.35), dpi=100)
    for ax, image, name in zip(axes, x0.clamp(-1, 1), names):
        ax.imshow(image[0], cmap="gray", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"DDIM, {FASHION['steps']} steps, guidance scale {FASHION['guidance']:g}: one sample per class",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fashion_assets(out: Path) -> None:
    """ONNX Runtime Web from node_modules, and the shipped models as ONNX files with what the page's sampler needs
    (the schedule's alpha-bars, the class names, the image shape)."""
    import minidiff as md
    from minidiff.cli import class_names
    from minidiff.export import export_classifier, export_denoiser

    missing = [name for name in ORT_FILES if not (ORT_DIST / name).is_file()]
    if missing:
        raise ExtensionError(f"the Fashion-MNIST demo needs ONNX Runtime Web, which is not installed "
                             f"({', '.join(missing)} not in {ORT_DIST}): run `npm ci` in the repository")
    (out / "ort").mkdir(exist_ok=True)
    for name in ORT_FILES:
        shutil.copyfile(ORT_DIST / name, out / "ort" / name)
    models = out / "models"
    models.mkdir(exist_ok=True)
    model, sched, config = md.load_model(md.pretrained(FASHION["checkpoint"]), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        export_denoiser(model, models / "unet.onnx", sample_shape=tuple(config["sample_shape"]))
        export_classifier(md.load_classifier(device="cpu"), models / "classifier.onnx")
    weight = sum(f.stat().st_size for f in [*(out / "ort").iterdir(), models / "unet.onnx",
                                            models / "classifier.onnx"])
    info = {"T": sched.T, "alpha_bars": sched.alpha_bars.double().tolist(), "num_classes": model.num_classes,
            "classes": class_names(config, model.num_classes), "shape": list(config["sample_shape"]),
            "steps": FASHION["steps"], "guidance": FASHION["guidance"], "download_bytes": weight,
            "checkpoint": FASHION["checkpoint"]}
    (models / "fashion.json").write_text(json.dumps(info))


DEMOS = {
    "playground2d": {
        "scripts": ["controls.js", "diffusion2d.js", "playground2d.js"],
        "draw": _draw_playground2d,
        "alt": "Samples of the exact denoiser of two moons with DDIM, 20 steps, and the paths of 40 of them",
    },
    "fashion": {
        "scripts": ["controls.js", "diffusion2d.js", "fashion.js"],
        "assets": _fashion_assets,
        "draw": _draw_fashion,
        "alt": "One sample of the shipped class-conditional U-Net per Fashion-MNIST class: DDIM, 20 steps, "
               "guidance scale 3",
    },
}


class demo_node(nodes.General, nodes.Element):
    """Where a demo goes; ``node["demo"]`` is its name in :data:`DEMOS`."""


class DemoDirective(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        name = self.arguments[0]
        if name not in DEMOS:
            raise self.error(f"minidiff-demo: unknown demo {name!r}; the demos are {', '.join(sorted(DEMOS))}")
        return [demo_node(demo=name)]


def _visit_html(self, node):
    name = node["demo"]
    static = posixpath.relpath("_static/demos", posixpath.dirname(self.builder.current_docname) or ".")
    self.body.append(
        f'<div class="minidiff-demo" data-demo="{name}">'
        f'<img class="minidiff-demo-fallback" src="{static}/{name}.png" alt="{DEMOS[name]["alt"]}">'
        '<p class="minidiff-demo-note">This demo runs in your browser with JavaScript on; here, one run of it '
        'drawn when the book was built.</p></div>')
    raise nodes.SkipNode


def _skip(self, node):
    raise nodes.SkipNode


def _add_scripts(app, pagename, templatename, context, doctree):
    if doctree is None:
        return
    for name in sorted({n["demo"] for n in doctree.findall(demo_node)}):
        for script in DEMOS[name]["scripts"]:
            app.add_js_file(f"demos/{script}")


def _write_assets(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / "demos"
    out.mkdir(parents=True, exist_ok=True)
    for name, demo in DEMOS.items():
        if "assets" in demo:
            demo["assets"](out)
        for script in demo["scripts"]:
            shutil.copyfile(SOURCE / script, out / script)
        demo["draw"](out / f"{name}.png")


def setup(app):
    app.add_node(demo_node, html=(_visit_html, None), latex=(_skip, None), text=(_skip, None),
                 man=(_skip, None), texinfo=(_skip, None))
    app.add_directive("minidiff-demo", DemoDirective)
    app.connect("html-page-context", _add_scripts)
    app.connect("build-finished", _write_assets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
