/*
 * minidiff in the browser, 2-D: the noise schedules of chapter 2, the exact denoiser of a point set (chapter 3),
 * DDPM (chapter 5), DDIM (chapter 6) and classifier-free guidance (chapter 7), in float64 like the package.
 * Each function mirrors the package function named beside it; tests/test_web_demos.py runs this file in Node
 * on noise written from Python and checks every result against the package.
 */
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.minidiff2d = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  // md.NoiseSchedule.linear / .cosine: the betas and alpha_bar_t = prod_{s <= t} (1 - beta_s), length T.
  function schedule(name, T) {
    const betas = new Float64Array(T);
    if (name === "linear") {                                 // Ho et al. 2020: 1e-4 to 0.02
      for (let i = 0; i < T; i++) betas[i] = 1e-4 + (0.02 - 1e-4) * (T === 1 ? 0 : i / (T - 1));
    } else if (name === "cosine") {                          // Nichol & Dhariwal 2021, eq. 17, capped at 0.999
      const f = (i) => Math.cos(((i / T + 0.008) / 1.008) * Math.PI / 2) ** 2;
      for (let i = 0; i < T; i++) betas[i] = Math.min(1 - f(i + 1) / f(i), 0.999);
    } else {
      throw new Error(`schedule name must be "linear" or "cosine", got ${JSON.stringify(name)}`);
    }
    const alphaBars = new Float64Array(T);
    let prod = 1;
    for (let i = 0; i < T; i++) { prod *= 1 - betas[i]; alphaBars[i] = prod; }
    return { name, T, betas, alphaBars };
  }

  // md.ddim_timesteps(T, steps, "trailing"): round(T (steps - k) / steps) - 1, ties to even, k = 0..steps-1.
  function timesteps(T, steps) {
    if (!Number.isInteger(steps) || steps < 1 || steps > T)
      throw new Error(`steps must be an integer in [1, ${T}], got ${steps}`);
    const ts = [];
    for (let k = 0; k < steps; k++) {
      const num = T * (steps - k);
      let q = Math.floor(num / steps);
      const r2 = 2 * (num - q * steps);
      if (r2 > steps || (r2 === steps && q % 2 === 1)) q += 1;
      ts.push(q - 1);
    }
    return ts;
  }

  // md.OracleDenoiser: eps*(x_t, t, y) = (x_t - sqrt(a) E[x_0 | x_t, y]) / sqrt(1 - a), the posterior over the
  // points a softmax of -||x_t - sqrt(a) p_n||^2 / (2 (1 - a)). points: [[x, y], ...]; labels optional;
  // y = numClasses (or null) means no label.
  function oracle(points, labels) {
    const N = points.length;
    const px = new Float64Array(N), py = new Float64Array(N), sq = new Float64Array(N);
    for (let n = 0; n < N; n++) {
      px[n] = points[n][0]; py[n] = points[n][1]; sq[n] = px[n] * px[n] + py[n] * py[n];
    }
    const numClasses = labels ? Math.max(...labels) + 1 : null;
    const logits = new Float64Array(N);
    // x: Float64Array (2B), a = alpha_bar at the step, y: class index or null; writes eps and x0 (2B each).
    function predict(x, a, y, eps, x0) {
      const sa = Math.sqrt(a), s1 = Math.sqrt(1 - a);
      const masked = labels && y !== null && y !== undefined && y !== numClasses;
      for (let b = 0; b < x.length / 2; b++) {
        const xb = x[2 * b], yb = x[2 * b + 1];
        let top = -Infinity;
        for (let n = 0; n < N; n++) {
          const l = masked && labels[n] !== y ? -Infinity : (sa * (xb * px[n] + yb * py[n]) - 0.5 * a * sq[n]) / (1 - a);
          logits[n] = l;
          if (l > top) top = l;
        }
        let total = 0, mx = 0, my = 0;
        for (let n = 0; n < N; n++) {
          const w = Math.exp(logits[n] - top);
          total += w; mx += w * px[n]; my += w * py[n];
        }
        x0[2 * b] = mx / total; x0[2 * b + 1] = my / total;
        eps[2 * b] = (xb - sa * x0[2 * b]) / s1; eps[2 * b + 1] = (yb - sa * x0[2 * b + 1]) / s1;
      }
    }
    return { predict, numClasses };
  }

  // md.guided_eps with md.cfg_lerp: eps_uncond + s (eps_cond - eps_uncond); one call without a label or at s = 1.
  function guidedEps(model, x, a, y, scale) {
    const eps = new Float64Array(x.length), x0 = new Float64Array(x.length);
    if (y === null || y === undefined || scale === 1) { model.predict(x, a, y, eps, x0); return eps; }
    const epsU = new Float64Array(x.length);
    model.predict(x, a, y, eps, x0);
    model.predict(x, a, null, epsU, x0);
    for (let i = 0; i < x.length; i++) eps[i] = epsU[i] + scale * (eps[i] - epsU[i]);
    return eps;
  }

  // md.ddim_sample (eta >= 0, Song et al. 2020, eq. 12 and 16) and md.ddpm_sample (Ho et al. 2020, Algorithm 2,
  // on the chain respaced to `steps` timesteps). opts: {sched, sampler: "ddim" | "ddpm", steps, eta, y,
  // guidance, xT (Float64Array, 2B), normal (() -> one N(0, 1) draw)}. Yields {i, t, x, x0hat} after each step
  // (x is the state the step started from) and returns x_0; `sample` runs it to the end.
  function* sampleSteps(model, opts) {
    const { sched, sampler = "ddim", steps = 50, eta = 0, y = null, guidance = 1, normal } = opts;
    if (sampler !== "ddim" && sampler !== "ddpm") throw new Error(`sampler must be "ddim" or "ddpm", got ${sampler}`);
    if (!(eta >= 0)) throw new Error(`eta must be >= 0, got ${eta}`);
    const ts = timesteps(sched.T, steps);
    let x = Float64Array.from(opts.xT);
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i], tPrev = i + 1 < ts.length ? ts[i + 1] : -1;
      const a = sched.alphaBars[t], aPrev = tPrev < 0 ? 1 : sched.alphaBars[tPrev];
      const eps = guidedEps(model, x, a, y, guidance);
      const x0 = new Float64Array(x.length), next = new Float64Array(x.length);
      for (let k = 0; k < x.length; k++) x0[k] = (x[k] - Math.sqrt(1 - a) * eps[k]) / Math.sqrt(a);   // eq. 15
      if (sampler === "ddim") {
        const sigma = eta * Math.sqrt((1 - aPrev) / (1 - a) * (1 - a / aPrev));                     // eq. 16
        const c = Math.sqrt(1 - aPrev - sigma * sigma);
        for (let k = 0; k < x.length; k++) next[k] = Math.sqrt(aPrev) * x0[k] + c * eps[k];
        if (sigma > 0) for (let k = 0; k < x.length; k++) next[k] += sigma * normal();
      } else {
        const beta = 1 - a / aPrev;                          // the respaced chain's beta (one step: beta_t)
        const cx0 = Math.sqrt(aPrev) * beta / (1 - a), cxt = Math.sqrt(1 - beta) * (1 - aPrev) / (1 - a);
        for (let k = 0; k < x.length; k++) next[k] = cx0 * x0[k] + cxt * x[k];                      // eq. 7
        if (tPrev >= 0) {
          const sd = Math.sqrt(beta * (1 - aPrev) / (1 - a));                                      // beta_tilde
          for (let k = 0; k < x.length; k++) next[k] += sd * normal();
        }
      }
      yield { i, t, x, x0hat: x0 };
      x = next;
    }
    return x;
  }

  function sample(model, opts) {
    const it = sampleSteps(model, opts);
    for (;;) {
      const r = it.next();
      if (r.done) return r.value;
      if (opts.onStep) opts.onStep(r.value.i, r.value.t, r.value.x, r.value.x0hat);
    }
  }

  // The 2-D data of md.toy_2d ("moons": two half circles, "8gaussians": a ring of 8 modes), n points with two
  // classes (the upper and lower moon; even and odd modes), drawn from `rng` (not torch's generator).
  function toy2d(name, n, rng) {
    const points = [], labels = [];
    for (let i = 0; i < n; i++) {
      if (name === "moons") {
        const upper = rng.uniform() < 0.5, angle = Math.PI * rng.uniform();
        let px = Math.cos(angle), py = Math.sin(angle);
        if (!upper) { px = 1 - px; py = 0.5 - py; }
        points.push([(px + 0.1 * rng.normal() - 0.5) / 0.7, (py + 0.1 * rng.normal() - 0.25) / 0.7]);
        labels.push(upper ? 0 : 1);
      } else if (name === "8gaussians") {
        const k = Math.floor(8 * rng.uniform()), angle = k * Math.PI / 4;
        points.push([1.4 * Math.cos(angle) + 0.15 * rng.normal(), 1.4 * Math.sin(angle) + 0.15 * rng.normal()]);
        labels.push(k % 2);
      } else {
        throw new Error(`data name must be "moons" or "8gaussians", got ${JSON.stringify(name)}`);
      }
    }
    return { points, labels };
  }

  // A seeded source of U(0, 1) and N(0, 1) draws for the page (mulberry32 and Box-Muller); not torch's generator.
  function randomSource(seed) {
    let s = seed >>> 0, spare = null;
    const uniform = () => {
      s = (s + 0x6d2b79f5) >>> 0;
      let r = Math.imul(s ^ (s >>> 15), 1 | s);
      r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
      return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
    };
    const normal = () => {
      if (spare !== null) { const v = spare; spare = null; return v; }
      let u = 0;
      while (u === 0) u = uniform();
      const rad = Math.sqrt(-2 * Math.log(u)), ang = 2 * Math.PI * uniform();
      spare = rad * Math.sin(ang);
      return rad * Math.cos(ang);
    };
    return { uniform, normal };
  }

  return { schedule, timesteps, oracle, guidedEps, sampleSteps, sample, toy2d, randomSource };
});
