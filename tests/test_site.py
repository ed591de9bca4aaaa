"""The built book, checked in a real browser: every page loads offline and shows what a reader needs.

Builds the book with ``jupyter-book build --all -W --keep-going``, unless ``_build/html`` already holds a build of
exactly the current sources (a content hash written after a successful build). In ``python -m pytest`` nbval has
run every chapter before this test, and the build renders that run's outputs instead of executing the chapters
a second time (tests/chapter_runs.py); run alone, this test builds the README's way, executing them. It then
serves it on localhost and drives headless Chromium through every page in ``_toc.yml``:

* no console errors, no page errors, no failed or non-local requests (nothing may come from a CDN);
* every formula rendered by MathJax, and no raw ``$$`` / ``\\[`` left in the text;
* every image loaded;
* on chapters with animations, the player (slider and buttons) is there and steps frames with no kernel;
* on chapters with an in-page demo (``{minidiff-demo}``), the demo replaces its picture, finishes a run, draws it,
  and runs again with other settings; with JavaScript off, its picture shows instead;
* Colab links only to notebooks: each chapter has one, no page points Colab at a Markdown source;
* at 1280 px nothing is cut at the right edge (code, outputs, formulas, tables), no nbval marker shows, every
  chapter figure has a caption and every image shows at 70% of its size or more (its labels stay readable);
* at 390 px no page is wider than the screen.

Screenshots of a few pages go to a temporary folder, or to ``$MINIDIFF_SCREENSHOTS`` when it is set.
Skips when Chromium (``/usr/bin/chromium``) or the ``playwright`` package is missing; CI installs both.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

import chapter_runs

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
STAMP = ROOT / "_build" / ".minidiff-build-hash"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
BUILD_TIMEOUT_S = 1800

if not CHROMIUM.exists():
    pytest.skip(f"browser test skipped: {CHROMIUM} not found (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: pip install playwright")
yaml = pytest.importorskip("yaml")


def toc_pages() -> list[str]:
    """The pages of the book in ``_toc.yml`` order, as paths like ``notebooks/01_forward_process``."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [entry["file"] for entry in part.get("chapters", [])]
    return [str(Path(p).with_suffix("")) for p in pages]


def source_of(page: str) -> Path:
    for ext in (".ipynb", ".md"):
        if (ROOT / (page + ext)).exists():
            return ROOT / (page + ext)
    raise FileNotFoundError(page)


def sources_hash() -> str:
    """A hash of everything the built site depends on: config, pages, chapters, the package, its shipped models
    and the npm lock file (the in-page demos bundle ONNX Runtime Web and the exported models)."""
    files = [ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "package-lock.json"]
    files += sorted((ROOT / "checkpoints").glob("*"))
    files += sorted((ROOT / "book").rglob("*")) + sorted((ROOT / "notebooks").rglob("*.ipynb"))
    files += sorted((ROOT / "minidiff").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts and ".ipynb_checkpoints" not in f.parts:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def site(request) -> Path:
    """The built book: from nbval's run of the chapters in this session when there is a complete one
    (tests/chapter_runs.py), else the README's build, which executes every chapter."""
    digest = sources_hash()
    if HTML.is_dir() and STAMP.exists() and STAMP.read_text().strip() == digest:
        return HTML                                   # built from exactly these sources
    STAMP.unlink(missing_ok=True)
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    runs = request.config.pluginmanager.get_plugin(chapter_runs.NAME)
    source = chapter_runs.stage_executed_book(ROOT, chapters, runs, ROOT / "_build" / "executed-chapters") or ROOT
    jb = shutil.which("jupyter-book") or "jupyter-book"
    proc = subprocess.run([jb, "build", str(source), "--all", "-W", "--keep-going", "--path-output", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build of {source} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n"
                    f"{proc.stderr[-3000:]}")
    STAMP.write_text(digest)
    return HTML


@pytest.fixture(scope="session")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("page", toc_pages())
def test_page_fits_a_phone(page, server, browser, shots):
    """At 390 px (a phone) the page reflows: nothing makes the page itself scroll sideways (wide code, tables
    and formulas scroll inside their own boxes)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    try:
        p = context.new_page()
        p.goto(f"{server}/{page}.html", wait_until="load")
        p.wait_for_load_state("networkidle")
        p.evaluate(MATH_JS)
        width = p.evaluate("() => document.documentElement.scrollWidth")
        wide = p.evaluate("""() => Array.from(document.querySelectorAll('main *'))
          .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null
                       && !e.closest('pre, table, mjx-container, .highlight, div.math, .table-wrapper, .toggle-hidden, .bd-sidebar-secondary'))
          .slice(0, 5).map(e => e.tagName.toLowerCase() + '.' + e.className)""")
        if page in SCREENSHOT_PAGES:
            p.screenshot(path=str(shots / (page.replace("/", "__") + "__390.png")), full_page=False)
        assert width <= 390, f"{page}: the page is {width} px wide at a 390 px viewport: {wide}"
        assert not wide, f"{page}: cut at the right edge of a 390 px viewport: {wide}"
    finally:
        context.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("MINIDIFF_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the book: {path}", file=sys.stderr)
    return path


# Text of the page outside code, scripts and rendered math: raw LaTeX there means MathJax did not run.
VISIBLE_TEXT_JS = """() => {
  const body = document.querySelector('main') || document.body;
  const clone = body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea').forEach(e => e.remove());
  return clone.innerText;
}"""

IMAGES_JS = """async () => {
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = 'eager'; }
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(r => { img.onload = img.onerror = r; })));
  return imgs.map(img => ({src: img.currentSrc.slice(0, 80), ok: img.complete && img.naturalWidth > 0}));
}"""

MATH_JS = """async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const math = Array.from(document.querySelectorAll('.math'));
  return {count: math.length, unrendered: math.filter(m => !m.querySelector('mjx-container')).length,
          containers: document.querySelectorAll('mjx-container').length};
}"""

# What a reader would notice at a desktop width: code, outputs or formulas cut at the right edge (wider than their
# box, or reaching past the text column), nbval's markers, and chapter figures without a caption.
LAYOUT_JS = """() => {
  const column = document.querySelector('.bd-article') || document.querySelector('main');
  const right = column.getBoundingClientRect().right;
  const boxes = document.querySelectorAll(
    'div.cell_input pre, div.cell_output pre, div.highlight pre, mjx-container[display="true"], div.math, table');
  const cut = [];
  for (const el of boxes) {
    if (el.closest('.toggle-hidden, details:not([open])') || el.offsetParent === null) continue;
    const box = el.getBoundingClientRect();
    if (el.scrollWidth > el.clientWidth + 1 || box.right > right + 1) {
      cut.push(el.tagName.toLowerCase() + ': ' + (el.innerText || el.textContent).trim().slice(0, 60));
    }
  }
  const text = document.body.innerText;
  const uncaptioned = Array.from(document.querySelectorAll('div.cell_output img'))
    .filter(img => !img.closest('div.animation') && !img.closest('figure')?.querySelector('figcaption'))
    .map(img => img.currentSrc.split('/').pop());
  const images = Array.from(document.querySelectorAll('.bd-article img'))
    .filter(img => !img.closest('div.animation') && img.offsetParent !== null)
    .map(img => ({src: img.currentSrc.split('/').pop(), shown: img.getBoundingClientRect().width,
                  natural: img.naturalWidth}));
  return {cut, markers: (text.match(/NBVAL_[A-Z_]+/g) || []), uncaptioned, images};
}"""

SCREENSHOT_PAGES = {"book/intro", "notebooks/01_forward_process", "notebooks/03_eps_objective", "book/notation"}


@pytest.mark.parametrize("page", toc_pages())
def test_page_in_browser(page, server, browser, shots):
    source = source_of(page).read_text()
    expects_math = "$" in source or "{math}" in source
    expects_animation = "figures.jshtml(" in source
    expects_demo = embeds_demo(page)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    origin = urlparse(server).netloc

    def route(r):
        if urlparse(r.request.url).netloc == origin or r.request.url.startswith(("data:", "blob:")):
            r.continue_()
        else:
            problems.append(f"non-local request: {r.request.url}")
            r.abort()

    context.route("**/*", route)
    p = context.new_page()
    p.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    p.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    p.on("requestfailed", lambda r: problems.append(f"failed request: {r.url} ({r.failure})")
         if urlparse(r.url).netloc == origin else None)
    p.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    try:
        response = p.goto(f"{server}/{page}.html", wait_until="load")
        assert response is not None and response.ok, f"{page}.html did not load"
        p.wait_for_load_state("networkidle")

        math = p.evaluate(MATH_JS)
        if expects_math:
            assert math["count"] > 0 and math["containers"] > 0, f"{page}: no rendered math (mjx-container) found"
        assert math["unrendered"] == 0, f"{page}: {math['unrendered']} of {math['count']} formulas not rendered"
        text = p.evaluate(VISIBLE_TEXT_JS)
        for raw in ("$$", "\\[", "\\(", "\\begin{", "![", "](http", "](data:"):
            assert raw not in text, f"{page}: raw LaTeX or Markdown {raw!r} in the page text: ...{text[text.find(raw) - 80:][:200]}..."

        images = p.evaluate(IMAGES_JS)
        broken = [i["src"] for i in images if not i["ok"]]
        assert not broken, f"{page}: images that did not load: {broken}"
        if page.startswith("notebooks/"):
            assert len(images) >= 3, f"{page}: expected the chapter's figures, found {len(images)} images"

        layout = p.evaluate(LAYOUT_JS)
        assert not layout["cut"], f"{page}: cut at the right edge at 1280 px: {layout['cut']}"
        assert not layout["markers"], f"{page}: test markers visible to readers: {set(layout['markers'])}"
        assert not layout["uncaptioned"], f"{page}: figures without a caption: {layout['uncaptioned']}"
        small = [i for i in layout["images"] if i["natural"] > 0 and i["shown"] < 0.7 * i["natural"]]
        assert not small, f"{page}: images shown below 70% of their size (labels unreadable): {small}"

        if page in SCREENSHOT_PAGES:
            p.screenshot(path=str(shots / (page.replace("/", "__") + ".png")), full_page=False)

        # Colab opens notebooks only: chapters (.ipynb) offer it, and no page links Colab to a Markdown source.
        colab = p.eval_on_selector_all("a[href*='colab.research.google.com']", "links => links.map(a => a.href)")
        assert not [c for c in colab if not c.endswith(".ipynb")], f"{page}: Colab links to non-notebooks: {colab}"
        if source_of(page).suffix == ".ipynb":
            assert colab, f"{page}: no Colab link"

        players = p.locator("div.animation")
        if expects_animation:
            assert players.count() >= 1, f"{page}: the animation player is missing"
            for k in range(players.count()):
                player = players.nth(k)
                slider = player.locator("input.anim-slider")
                assert slider.count() == 1, f"{page}: animation {k} has no slider"
                assert player.locator("button").count() >= 9, f"{page}: animation {k} lacks its buttons"
                assert player.locator("img").evaluate("i => i.naturalWidth > 0"), f"{page}: animation {k} shows no frame"
                assert int(slider.get_attribute("max") or slider.evaluate("s => s.max")) >= 5
                before = slider.evaluate("s => Number(s.value)")
                player.locator("button[title='Next frame']").click()
                after = slider.evaluate("s => Number(s.value)")
                assert after == before + 1, f"{page}: 'Next frame' did not advance animation {k}"
                if k == 0:
                    player.screenshot(path=str(shots / (page.replace("/", "__") + "__animation.png")))
        demos = p.locator("div.minidiff-demo")
        assert demos.count() == 0 or expects_demo, f"{page}: a demo div without the directive"
        if expects_demo:
            assert demos.count() >= 1, f"{page}: the in-page demo is missing"
            for k in range(demos.count()):
                run_demo(p, k, page, shots)
        assert not problems, f"{page}:\n" + "\n".join(problems)
    finally:
        context.close()


DEMO_MARK = "{minidiff-demo}"


def embeds_demo(page: str) -> bool:
    """A chapter with an in-page demo (book/setup quotes the directive's syntax but embeds none)."""
    return page.startswith("notebooks/") and DEMO_MARK in source_of(page).read_text()
DEMO_DONE = "k => document.querySelectorAll('div.minidiff-demo')[k].dataset.state === 'done'"
# Pixels of the canvas that are not (nearly) white: the data, the paths and the samples.
INK_JS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] < 600) n++; return n; }"""


def run_demo(p, k: int, page: str, shots: Path) -> None:
    """Demo ``k`` of the page (book/_ext/demos.py) replaced its picture by its controls, finished its first run
    and drew it; then it runs again with other settings and draws again. Its time per step is reported."""
    demo = p.locator("div.minidiff-demo").nth(k)
    name = demo.get_attribute("data-demo")
    if name == "fashion":
        run_fashion_demo(p, demo, k, page, shots)
        return
    p.wait_for_function(DEMO_DONE, arg=k, timeout=60_000)
    assert demo.locator("img.minidiff-demo-fallback").count() == 0, f"{page}: demo {name} still shows its picture"
    canvas = demo.locator("canvas")
    assert canvas.evaluate(INK_JS) > 2000, f"{page}: demo {name} drew (almost) nothing"
    assert name == "playground2d", f"{page}: the browser test does not know how to drive demo {name!r}"
    demo.locator("select[name=sampler]").select_option("ddpm")
    demo.locator("input[name=steps]").fill("5")                              # the 6th choice: 50 steps
    demo.locator("select[name=label]").select_option("1")
    demo.locator("input[name=guidance]").fill("3")
    canvas.evaluate("c => c.getContext('2d').clearRect(0, 0, c.width, c.height)")
    demo.locator("button[name=sample]").click()
    p.wait_for_function(DEMO_DONE, arg=k, timeout=60_000)
    status = demo.locator(".minidiff-demo-status").inner_text()
    assert "DDPM with 50 steps" in status, f"{page}: demo {name} ran something else: {status}"
    assert canvas.evaluate(INK_JS) > 2000, f"{page}: demo {name} drew (almost) nothing on its second run"
    ms = float(demo.get_attribute("data-ms-per-step"))
    assert ms > 0
    print(f"\n{page}: {name}, guided DDPM with 50 steps, {ms:.2f} ms per step in headless Chromium",
          file=sys.stderr)
    demo.screenshot(path=str(shots / (page.replace("/", "__") + f"__demo{k}.png")))


DEMO_STATE = "([k, states]) => states.includes(document.querySelectorAll('div.minidiff-demo')[k].dataset.state)"
# The canvas shows a garment: many dark pixels (the background) and many light ones (the garment).
LIGHT_AND_DARK_JS = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let light = 0, dark = 0; for (let i = 0; i < d.length; i += 4) { if (d[i] > 150) light++; else if (d[i] < 60) dark++; }
  return [light, dark]; }"""
SAMPLE_JS = """async ([xT, label, scale, steps]) =>
  Array.from(await window.minidiffFashion.sample({xT, label, scale, steps}))"""


def run_fashion_demo(p, demo, k: int, page: str, shots: Path) -> None:
    """The Fashion-MNIST demo: it waits for the reader with the build's picture; Sample loads ONNX Runtime Web and
    the exported U-Net and runs guided DDIM in the page. From the same noise, its loop ends where md.ddim_sample
    does; a guided 50-step run of another class follows, and its time per step and the page weight are reported."""
    import torch

    import minidiff as md
    from minidiff.cli import class_names

    p.wait_for_function(DEMO_STATE, arg=[k, ["ready"]], timeout=60_000)
    assert demo.locator("img.minidiff-demo-fallback").count() == 1, f"{page}: the fashion demo hides its picture"
    demo.locator("button[name=sample]").click()                        # defaults: class 0, scale 3, 20 steps
    p.wait_for_function(DEMO_STATE, arg=[k, ["done", "failed"]], timeout=180_000)
    assert demo.get_attribute("data-state") == "done", \
        f"{page}: the fashion demo failed: {demo.locator('.minidiff-demo-status').inner_text()}"
    assert demo.locator("img.minidiff-demo-fallback").count() == 0, f"{page}: the fashion demo still shows its picture"
    model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"), device="cpu")
    names = class_names(config, model.num_classes)
    for canvas in demo.locator("canvas").all():
        light, dark = canvas.evaluate(LIGHT_AND_DARK_JS)
        assert light > 2000 and dark > 2000, f"{page}: the fashion demo drew no garment ({light} light, {dark} dark)"
    assert demo.get_attribute("data-verdict") in names

    # Parity: the page's loop from Python's noise against md.ddim_sample. Each network call agrees to float32
    # tolerance (1e-4 of its scale, tests/test_export.py); ten DDIM steps add at most ten such errors, scaled by
    # the step's coefficients, so the images agree to 1e-3 of their scale. Unguided would be off by far more.
    x_T = torch.randn(1, *config["sample_shape"], generator=torch.Generator().manual_seed(2024))
    want = md.ddim_sample(model, x_T.shape, sched, steps=10, y=torch.tensor([0]), guidance_scale=3.0, x_T=x_T)
    got = torch.tensor(p.evaluate(SAMPLE_JS, [x_T.flatten().tolist(), 0, 3.0, 10])).reshape(want.shape)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3 * float(want.abs().max()),
                               msg=f"{page}: the page's guided DDIM is not md.ddim_sample's")
    unguided = md.ddim_sample(model, x_T.shape, sched, steps=10, y=torch.tensor([0]), x_T=x_T)
    assert float((unguided - want).abs().max()) > 0.1                  # the check tells guidance apart
    got = torch.tensor(p.evaluate(SAMPLE_JS, [x_T.flatten().tolist(), None, 1.0, 5])).reshape(want.shape)
    want = md.ddim_sample(model, x_T.shape, sched, steps=5, y=torch.tensor([model.num_classes]), x_T=x_T)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3 * float(want.abs().max()),
                               msg=f"{page}: the page's unconditional DDIM is not md.ddim_sample's")

    demo.locator("select[name=label]").select_option("1")
    demo.locator("select[name=steps]").select_option("50")
    demo.locator("input[name=guidance]").fill("3")
    demo.evaluate("d => { d.dataset.state = 'clicked'; }")
    demo.locator("button[name=sample]").click()
    p.wait_for_function(DEMO_STATE, arg=[k, ["done", "failed"]], timeout=180_000)
    status = demo.locator(".minidiff-demo-status").inner_text()
    assert demo.get_attribute("data-state") == "done" and "DDIM with 50 steps, guidance scale 3.0" in status, \
        f"{page}: the fashion demo's second run: {status}"
    ms = float(demo.get_attribute("data-ms-per-step"))
    weight = p.evaluate("""() => performance.getEntriesByType('resource')
      .filter(e => e.name.includes('/_static/demos/')).reduce((n, e) => n + e.encodedBodySize, 0)""")
    print(f"\n{page}: fashion, guided DDIM with 50 steps, {ms:.1f} ms per step in headless Chromium "
          f"({50 * ms / 1000:.1f} s a sample); the classifier says {demo.get_attribute('data-verdict')}; "
          f"the demos' files loaded: {weight / 1e6:.1f} MB", file=sys.stderr)
    demo.screenshot(path=str(shots / (page.replace("/", "__") + f"__demo{k}.png")))


def test_demos_show_their_picture_without_javascript(server, browser):
    """With JavaScript off a demo is a picture of one run (drawn by the package at build time) and a note."""
    pages = [page for page in toc_pages() if embeds_demo(page)]
    assert pages, "no chapter embeds an in-page demo"
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        p = context.new_page()
        for page in pages:
            p.goto(f"{server}/{page}.html", wait_until="load")
            pictures = p.locator("div.minidiff-demo img.minidiff-demo-fallback")
            assert pictures.count() >= 1, f"{page}: no picture for readers without JavaScript"
            for k in range(pictures.count()):
                box = pictures.nth(k).bounding_box()
                assert box is not None and box["width"] > 200, f"{page}: the demo's picture is not shown: {box}"
                assert pictures.nth(k).evaluate("i => i.complete && i.naturalWidth > 0"), f"{page}: picture broken"
    finally:
        context.close()
