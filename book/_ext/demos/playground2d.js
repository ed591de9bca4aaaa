/*
 * The 2-D playground (chapters 3 and 5-7): sample a point set's exact denoiser with DDPM or DDIM, in the page.
 * Built by the book's `minidiff-demo` directive into <div class="minidiff-demo" data-demo="playground2d">; the
 * math is diffusion2d.js. The container's data-state goes "ready" -> "running" -> "done" (the browser test
 * waits on it), and data-ms-per-step holds the last run's time per step.
 */
(function () {
  "use strict";
  const M = window.minidiff2d;
  const { el, control, select, slider } = window.minidiffControls;
  const N_POINTS = 400, N_SAMPLES = 400, N_PATHS = 40, EXTENT = 2.6;
  const STEP_CHOICES = [1, 2, 5, 10, 20, 50, 100, 250, 1000];
  const COLOURS = { data: "rgba(120,120,120,0.35)", path: "rgba(31,119,180,0.18)", x: "#1f77b4", x0: "#ff7f0e" };

  function build(root) {
    const ui = {
      data: select("data", [["moons", "two moons"], ["8gaussians", "8 Gaussians"]], "moons"),
      schedule: select("schedule", [["linear", "linear"], ["cosine", "cosine"]], "linear"),
      sampler: select("sampler", [["ddim", "DDIM"], ["ddpm", "DDPM"]], "ddim"),
      steps: slider("steps", 0, STEP_CHOICES.length - 1, 1, 4),
      eta: slider("eta", 0, 1, 0.1, 0),
      label: select("label", [["none", "none"], ["0", "class 0"], ["1", "class 1"]], "none"),
      guidance: slider("guidance", 0, 8, 0.5, 1),
      seed: el("input", { type: "number", name: "seed", min: 0, step: 1, value: 0 }),
      run: el("button", { type: "button", name: "sample", text: "Sample" }),
      frame: slider("frame", 0, 0, 1, 0),
    };
    const out = {
      steps: el("output"), eta: el("output"), guidance: el("output"), frame: el("output"),
      status: el("p", { class: "minidiff-demo-status", "aria-live": "polite" }),
    };
    const canvas = el("canvas", { width: 480, height: 480, class: "minidiff-demo-canvas",
                                   "aria-label": "samples of the exact denoiser" });
    const controls = el("div", { class: "minidiff-demo-controls" },
      control("data", ui.data), control("schedule", ui.schedule), control("sampler", ui.sampler),
      control("steps", el("span", {}, ui.steps, out.steps)), control("η (DDIM)", el("span", {}, ui.eta, out.eta)),
      control("class", ui.label), control("guidance scale", el("span", {}, ui.guidance, out.guidance)),
      control("seed", ui.seed), ui.run);
    const scrub = el("div", { class: "minidiff-demo-controls" },
      control("step shown", el("span", {}, ui.frame, out.frame)));
    const legend = el("p", { class: "minidiff-demo-legend" });
    legend.innerHTML = 'Grey: the data. <span style="color:#1f77b4">Blue</span>: the samples x<sub>t</sub> ' +
      '(lines: the paths of 40 of them). <span style="color:#ff7f0e">Orange</span>: the denoiser\'s ' +
      'x&#770;<sub>0</sub> at the step shown.';
    root.replaceChildren(controls, canvas, scrub, legend, out.status);
    return { ui, out, canvas };
  }

  function start(root) {
    const { ui, out, canvas } = build(root);
    const ctx = canvas.getContext("2d");
    let run = null, token = 0;

    const toPixel = (v, size) => (v / EXTENT + 1) * size / 2;
    function dots(xs, colour, r) {
      ctx.fillStyle = colour;
      for (let k = 0; k < xs.length; k += 2) {
        ctx.beginPath();
        ctx.arc(toPixel(xs[k], canvas.width), toPixel(-xs[k + 1], canvas.height), r, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    function draw() {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      if (!run) return;
      dots(run.data.points.flat(), COLOURS.data, 1.5);
      const shown = Number(ui.frame.value);
      ctx.strokeStyle = COLOURS.path;
      for (let b = 0; b < N_PATHS; b++) {
        ctx.beginPath();
        for (let i = 0; i <= shown; i++) {
          const xs = run.frames[i].x;
          const px = toPixel(xs[2 * b], canvas.width), py = toPixel(-xs[2 * b + 1], canvas.height);
          if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py);
        }
        ctx.stroke();
      }
      const frame = run.frames[shown];
      if (frame.x0hat) dots(frame.x0hat, COLOURS.x0, 1.5);
      dots(frame.x, COLOURS.x, 1.8);
      const last = shown === run.frames.length - 1;
      out.frame.textContent = last ? " x_0, the samples" : ` ${shown + 1} of ${run.frames.length - 1} (t = ${frame.t})`;
    }

    function labels() {
      out.steps.textContent = ` ${STEP_CHOICES[Number(ui.steps.value)]}`;
      out.eta.textContent = ` ${Number(ui.eta.value).toFixed(1)}`;
      out.guidance.textContent = ` ${Number(ui.guidance.value).toFixed(1)}`;
      ui.eta.disabled = ui.sampler.value !== "ddim";
      ui.guidance.disabled = ui.label.value === "none";
    }

    function sampleNow() {
      const my = ++token;
      const rng = M.randomSource(Number(ui.seed.value) || 0);
      const data = M.toy2d(ui.data.value, N_POINTS, rng);
      const model = M.oracle(data.points, data.labels);
      const steps = STEP_CHOICES[Number(ui.steps.value)];
      const xT = new Float64Array(2 * N_SAMPLES).map(() => rng.normal());
      const opts = { sched: M.schedule(ui.schedule.value, 1000), sampler: ui.sampler.value, steps,
                     eta: Number(ui.eta.value), y: ui.label.value === "none" ? null : Number(ui.label.value),
                     guidance: Number(ui.guidance.value), xT, normal: rng.normal };
      const it = M.sampleSteps(model, opts);
      const frames = [];
      root.dataset.state = "running";
      const began = performance.now();
      let busy = 0;
      function chunk() {
        if (my !== token) return;                                  // a newer run replaced this one
        const until = performance.now() + 25;
        let r;
        do {
          const t0 = performance.now();
          r = it.next();
          busy += performance.now() - t0;
          if (!r.done) frames.push({ t: r.value.t, x: r.value.x, x0hat: r.value.x0hat });
        } while (!r.done && performance.now() < until);
        if (!r.done) {
          out.status.textContent = `sampling: step ${frames.length} of ${steps}`;
          requestAnimationFrame(chunk);
          return;
        }
        frames.push({ t: -1, x: r.value, x0hat: null });
        run = { data, frames };
        ui.frame.max = String(frames.length - 1);
        ui.frame.value = String(frames.length - 1);
        draw();
        const perStep = busy / steps;
        root.dataset.msPerStep = perStep.toFixed(3);
        out.status.textContent = `${N_SAMPLES} samples of the exact denoiser of ${N_POINTS} points, ` +
          `${opts.sampler.toUpperCase()} with ${steps} step${steps > 1 ? "s" : ""}: ` +
          `${(performance.now() - began).toFixed(0)} ms in all, ${perStep.toFixed(2)} ms per step, in this browser.`;
        root.dataset.state = "done";
      }
      requestAnimationFrame(chunk);
    }

    for (const k of ["steps", "eta", "guidance", "sampler", "label"]) ui[k].addEventListener("input", labels);
    ui.frame.addEventListener("input", draw);
    ui.run.addEventListener("click", sampleNow);
    labels();
    draw();
    root.dataset.state = "ready";
    sampleNow();
  }

  function init() {
    for (const root of document.querySelectorAll('.minidiff-demo[data-demo="playground2d"]')) start(root);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
