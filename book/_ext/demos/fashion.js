/*
 * Fashion-MNIST in the page (chapter 7): the shipped class-conditional U-Net, exported to ONNX by
 * minidiff.export, runs in the reader's browser with ONNX Runtime Web (WebAssembly, one thread). The loop
 * around it is DDIM with eta = 0 (Song et al. 2020, eq. 12) and classifier-free guidance (Ho & Salimans 2022),
 * as md.ddim_sample does it; the shipped classifier gives its verdict on the result.
 *
 * Built by the book's `minidiff-demo` directive into <div class="minidiff-demo" data-demo="fashion">. Nothing
 * large is fetched until the reader presses Sample. The container's data-state goes "ready" -> "loading" ->
 * "running" -> "done" (the browser test waits on it); data-ms-per-step and data-verdict hold the last run's.
 * window.minidiffFashion = {load, sample, classify} is what the browser test compares with md.ddim_sample.
 */
(function () {
  "use strict";
  const M = window.minidiff2d;                                  // timesteps() and randomSource()
  const { el, control, select, slider } = window.minidiffControls;
  const BASE = new URL(".", document.currentScript.src).href;   // .../_static/demos/
  const STEP_CHOICES = [5, 10, 20, 50];
  let info = null, runtime = null;

  function getInfo() {
    if (!info) info = fetch(BASE + "models/fashion.json").then((r) => {
      if (!r.ok) throw new Error(`models/fashion.json: HTTP ${r.status}`);
      return r.json();
    });
    return info;
  }

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`could not load ${src}`));
      document.head.append(s);
    });
  }

  // ONNX Runtime Web and the two models, once per page.
  function load() {
    if (!runtime) runtime = (async () => {
      const meta = await getInfo();
      await loadScript(BASE + "ort/ort.wasm.min.js");
      const ort = window.ort;
      ort.env.wasm.wasmPaths = BASE + "ort/";
      ort.env.wasm.numThreads = 1;           // threads need cross-origin isolation, which a static host may not give
      ort.env.logLevel = "error";
      const unet = await ort.InferenceSession.create(BASE + "models/unet.onnx");
      const classifier = await ort.InferenceSession.create(BASE + "models/classifier.onnx");
      return { ort, meta, unet, classifier };
    })();
    return runtime;
  }

  // md.guidance.guided_eps: one call on 2B rows (the label, then "no label" = num_classes) and
  // eps_uncond + s (eps_cond - eps_uncond); one call of the label alone when there is none or s = 1.
  async function guidedEps(rt, x, t, label, scale) {
    const { ort, meta, unet } = rt;
    const n = x.length, noLabel = meta.num_classes;
    const guided = label !== null && scale !== 1;
    const rows = guided ? 2 : 1;
    const xs = new Float32Array(rows * n);
    for (let r = 0; r < rows; r++) xs.set(x, r * n);
    const ys = guided ? [label, noLabel] : [label === null ? noLabel : label];
    const out = await unet.run({
      x: new ort.Tensor("float32", xs, [rows, ...meta.shape]),
      t: new ort.Tensor("int64", BigInt64Array.from(Array(rows).fill(BigInt(t))), [rows]),
      y: new ort.Tensor("int64", BigInt64Array.from(ys.map(BigInt)), [rows]),
    });
    const both = out.eps.data;
    if (!guided) return both;
    const eps = new Float32Array(n);
    for (let i = 0; i < n; i++) eps[i] = both[n + i] + scale * (both[i] - both[n + i]);   // uncond + s (cond - uncond)
    return eps;
  }

  // md.ddim_sample(model, (1, 1, 28, 28), sched, steps=steps, y=label, guidance_scale=scale, x_T=xT), eta = 0, on
  // the "trailing" timesteps. onStep(i, t, x_t, x0hat) after each step. Returns x_0 (Float32Array of 784).
  async function sample({ xT, label = null, scale = 1, steps = 20, onStep = null }) {
    const rt = await load();
    const ab = rt.meta.alpha_bars;
    const ts = M.timesteps(rt.meta.T, steps);
    let x = Float32Array.from(xT);
    const n = x.length;
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i], a = ab[t], aPrev = i + 1 < ts.length ? ab[ts[i + 1]] : 1.0;
      const eps = await guidedEps(rt, x, t, label, scale);
      const x0hat = new Float32Array(n), next = new Float32Array(n);
      for (let k = 0; k < n; k++) {
        x0hat[k] = (x[k] - Math.sqrt(1 - a) * eps[k]) / Math.sqrt(a);               // eq. (9): the predicted x_0
        next[k] = Math.sqrt(aPrev) * x0hat[k] + Math.sqrt(1 - aPrev) * eps[k];      // eq. (12) with sigma = 0
      }
      if (onStep) await onStep(i, t, x, x0hat);
      x = next;
    }
    return x;
  }

  // The shipped classifier on the image clamped to [-1, 1] (as md.evaluate does): logits (10).
  async function classify(x) {
    const rt = await load();
    const clamped = Float32Array.from(x, (v) => Math.min(1, Math.max(-1, v)));
    const out = await rt.classifier.run({ x: new rt.ort.Tensor("float32", clamped, [1, ...rt.meta.shape]) });
    return Array.from(out.logits.data);
  }

  function softmax(logits) {
    const m = Math.max(...logits), e = logits.map((v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  }

  // ------------------------------------------------------------------------------------------ the page
  function paint(canvas, img, side) {
    // img: 784 values in about [-1, 1] -> grey levels, each pixel a (canvas.width / side)-wide square
    const ctx = canvas.getContext("2d"), cell = canvas.width / side;
    for (let r = 0; r < side; r++) for (let c = 0; c < side; c++) {
      const v = Math.round(255 * (Math.min(1, Math.max(-1, img[r * side + c])) + 1) / 2);
      ctx.fillStyle = `rgb(${v},${v},${v})`;
      ctx.fillRect(c * cell, r * cell, cell, cell);
    }
  }

  async function start(root) {
    const picture = root.querySelector("img.minidiff-demo-fallback");
    const meta = await getInfo();
    const classes = meta.classes || Array.from({ length: meta.num_classes }, (_, i) => `class ${i}`);
    const ui = {
      label: select("label", [...classes.map((name, i) => [String(i), name]), ["none", "none (unconditional)"]], "0"),
      guidance: slider("guidance", 0, 8, 0.5, meta.guidance),
      steps: select("steps", STEP_CHOICES.map((s) => [String(s), String(s)]), String(meta.steps)),
      seed: el("input", { type: "number", name: "seed", min: 0, step: 1, value: 0 }),
      run: el("button", { type: "button", name: "sample", text: "Sample" }),
      frame: el("input", { type: "range", name: "frame", min: 0, max: 0, step: 1, value: 0, disabled: "" }),
    };
    const out = { guidance: el("output"), frame: el("output"),
                  status: el("p", { class: "minidiff-demo-status", "aria-live": "polite" }) };
    const side = meta.shape[meta.shape.length - 1];
    const xtCanvas = el("canvas", { width: 224, height: 224, class: "minidiff-demo-canvas minidiff-demo-image",
                                    "aria-label": "x_t, the sample being denoised" });
    const x0Canvas = el("canvas", { width: 224, height: 224, class: "minidiff-demo-canvas minidiff-demo-image",
                                    "aria-label": "the model's prediction of the clean image" });
    const figure = (canvas, caption) => el("figure", { class: "minidiff-demo-panel" }, canvas,
                                           el("figcaption", { text: caption }));
    const verdict = el("p", { class: "minidiff-demo-verdict" });
    const panels = el("div", { class: "minidiff-demo-panels" }, figure(xtCanvas, "x_t, being denoised"),
                      figure(x0Canvas, "x̂₀, the network's guess of the clean image"));
    const scrub = el("div", { class: "minidiff-demo-controls" },
                     control("step shown", el("span", {}, ui.frame, out.frame)));
    panels.hidden = scrub.hidden = true;                   // until the first run, the build's picture shows
    root.replaceChildren(
      el("div", { class: "minidiff-demo-controls" }, control("class", ui.label),
         control("guidance scale", el("span", {}, ui.guidance, out.guidance)), control("DDIM steps", ui.steps),
         control("seed", ui.seed), ui.run),
      ...(picture ? [picture] : []), panels, scrub, verdict, out.status);
    const mb = (meta.download_bytes / 1e6).toFixed(1);
    out.status.textContent = `Above, one sample per class drawn when the book was built. Press Sample to run ` +
      `the U-Net here, in your browser: the page then loads ONNX Runtime Web and the two models (${mb} MB, once).`;
    let frames = [];
    const labels = () => {
      out.guidance.textContent = ` ${Number(ui.guidance.value).toFixed(1)}`;
      ui.guidance.disabled = ui.label.value === "none";
    };
    const show = () => {
      const f = frames[Number(ui.frame.value)];
      if (!f) return;
      paint(xtCanvas, f.x, side);
      paint(x0Canvas, f.x0hat, side);
      out.frame.textContent = f.t < 0 ? " x₀, the sample" : ` ${Number(ui.frame.value) + 1} of ${frames.length - 1} (t = ${f.t})`;
    };

    async function run() {
      ui.run.disabled = true;
      frames = [];
      ui.frame.disabled = true;
      verdict.textContent = "";
      const label = ui.label.value === "none" ? null : Number(ui.label.value);
      const scale = Number(ui.guidance.value), steps = Number(ui.steps.value);
      const rng = M.randomSource(Number(ui.seed.value) || 0);
      const xT = Float32Array.from({ length: side * side * meta.shape[0] }, () => rng.normal());
      if (picture) picture.remove();
      panels.hidden = scrub.hidden = false;
      try {
        if (!runtime) {
          root.dataset.state = "loading";
          out.status.textContent = `Loading ONNX Runtime Web and the models (${mb} MB)...`;
        }
        await load();
        root.dataset.state = "running";
        const began = performance.now();
        const x0 = await sample({ xT, label, scale, steps, onStep: async (i, t, x, x0hat) => {
          frames.push({ t, x, x0hat });
          paint(xtCanvas, x, side);
          paint(x0Canvas, x0hat, side);
          out.status.textContent = `DDIM step ${i + 1} of ${steps} (t = ${t})`;
          await new Promise(requestAnimationFrame);                   // let the page show this step
        } });
        const msPerStep = (performance.now() - began) / steps;
        frames.push({ t: -1, x: x0, x0hat: x0 });
        ui.frame.max = String(frames.length - 1);
        ui.frame.value = String(frames.length - 1);
        ui.frame.disabled = false;
        show();
        const p = softmax(await classify(x0));
        const best = p.indexOf(Math.max(...p));
        verdict.textContent = `The classifier says: ${classes[best]} (p = ${p[best].toFixed(2)}).` +
          (label === null ? "" : best === label ? " That is the class asked for." : ` The class asked for was ${classes[label]}.`);
        root.dataset.verdict = classes[best];
        root.dataset.msPerStep = msPerStep.toFixed(1);
        const rows = label === null || scale === 1 ? "one row" : "two rows, with and without the label";
        out.status.textContent = `DDIM with ${steps} steps, guidance scale ${label === null ? "—" : scale.toFixed(1)}: ` +
          `${msPerStep.toFixed(0)} ms per step in this browser (one U-Net call a step, on ${rows}).`;
        root.dataset.state = "done";
      } catch (e) {
        out.status.textContent = `The demo failed: ${e.message}`;
        root.dataset.state = "failed";
        throw e;
      } finally {
        ui.run.disabled = false;
      }
    }

    ui.label.addEventListener("input", labels);
    ui.guidance.addEventListener("input", labels);
    ui.frame.addEventListener("input", show);
    ui.run.addEventListener("click", run);
    labels();
    root.dataset.state = "ready";
  }

  function init() {
    for (const root of document.querySelectorAll('.minidiff-demo[data-demo="fashion"]')) {
      start(root).catch((e) => {
        root.dataset.state = "failed";
        const note = root.querySelector(".minidiff-demo-note");
        if (note) note.textContent = `The demo could not start (${e.message}); above, one run drawn at build time.`;
        throw e;
      });
    }
  }
  window.minidiffFashion = { load, sample, classify };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
