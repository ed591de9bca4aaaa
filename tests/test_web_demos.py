"""The in-page demos' JavaScript against the package: book/_ext/demos/diffusion2d.js, run in Node on points, labels
and noise written from Python, gives minidiff's schedules, timesteps and DDPM / DDIM samples (with and without
guidance) of the exact denoiser, to float64 rounding."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import minidiff as md
from minidiff.data import toy_2d

ROOT = Path(__file__).resolve().parents[1]
JS = Path(os.environ.get("MINIDIFF_DEMO_JS", ROOT / "book" / "_ext" / "demos" / "diffusion2d.js"))
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (CI installs it)")

RUNNER = r"""
const m = require(process.argv[1]);
const inp = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = {};
if (inp.op === "schedule") out.alphaBars = Array.from(m.schedule(inp.name, inp.T).alphaBars);
if (inp.op === "toy2d") {
  const d = m.toy2d(inp.name, inp.n, m.randomSource(inp.seed));
  out.points = d.points; out.labels = d.labels;
}
if (inp.op === "timesteps") out.ts = inp.steps.map((s) => m.timesteps(inp.T, s));
if (inp.op === "sample") {
  const sched = m.schedule(inp.schedule, inp.T);
  const model = m.oracle(inp.points, inp.labels);
  let used = 0;
  const normal = () => { if (used >= inp.noise.length) throw new Error("ran out of noise"); return inp.noise[used++]; };
  const steps = [];
  const x = m.sample(model, {sched, sampler: inp.sampler, steps: inp.steps, eta: inp.eta, y: inp.y,
                             guidance: inp.guidance, xT: inp.xT, normal,
                             onStep: (i, t, x, x0) => steps.push(t)});
  out.x0 = Array.from(x); out.used = used; out.visited = steps;
}
process.stdout.write(JSON.stringify(out));
"""


def run_js(payload: dict) -> dict:
    proc = subprocess.run([NODE, "-e", RUNNER, str(JS)], input=json.dumps(payload), capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 50])
def test_schedules_match_the_package(name, T):
    got = torch.tensor(run_js({"op": "schedule", "name": name, "T": T})["alphaBars"], dtype=torch.float64)
    want = md.NoiseSchedule.from_name(name, T=T).alpha_bars
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("T", [1000, 37])
def test_timesteps_match_the_package_for_every_step_count(T):
    steps = list(range(1, T + 1))
    got = run_js({"op": "timesteps", "T": T, "steps": steps})["ts"]
    assert got == [md.ddim_timesteps(T, s, "trailing") for s in steps]


CASES = [  # schedule, sampler, steps (None: all T), eta, class, guidance scale
    ("linear", "ddim", 20, 0.0, None, 1.0),
    ("linear", "ddim", 1, 0.0, None, 1.0),
    ("linear", "ddim", 50, 0.7, 1, 3.0),
    ("cosine", "ddim", 10, 1.0, 0, 1.0),
    ("cosine", "ddpm", None, None, None, 1.0),
    ("linear", "ddpm", 25, None, 0, 0.0),
    ("linear", "ddpm", 40, None, 1, 4.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_samples_match_the_package_with_the_same_noise(case):
    name, sampler, steps, eta, cls, scale = case
    T, B = 1000, 64
    sched = md.NoiseSchedule.from_name(name, T=T)
    points = toy_2d("moons", 300, generator=torch.Generator().manual_seed(0)).double()       # (300, 2)
    labels = (points[:, 1] < 0.25 - 0.5 * points[:, 0]).long()                               # two classes
    oracle = md.OracleDenoiser(points, sched, labels=labels)
    x_T = torch.randn(B, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = None if cls is None else torch.full((B,), cls)
    kw = dict(y=y, guidance_scale=scale, x_T=x_T, generator=torch.Generator().manual_seed(2))
    if sampler == "ddim":
        want = md.ddim_sample(oracle, x_T.shape, sched, steps=steps, eta=eta, **kw)
    else:
        want = md.ddpm_sample(oracle, x_T.shape, sched, steps=steps, **kw)
    n_steps = T if steps is None else steps
    g = torch.Generator().manual_seed(2)                  # the sampler's draws, one (B, 2) per noisy step
    noise = torch.cat([torch.randn(B, 2, generator=g, dtype=torch.float64) for _ in range(n_steps)])
    got = run_js({"op": "sample", "schedule": name, "T": T, "points": points.tolist(), "labels": labels.tolist(),
                  "sampler": sampler, "steps": n_steps, "eta": eta or 0.0, "y": cls, "guidance": scale,
                  "xT": x_T.flatten().tolist(), "noise": noise.flatten().tolist()})
    noisy_steps = 0 if sampler == "ddim" and eta == 0 else n_steps - 1            # none at the last step
    assert got["used"] == noisy_steps * B * 2
    assert got["visited"] == md.ddim_timesteps(T, n_steps)
    x0 = torch.tensor(got["x0"], dtype=torch.float64).view(B, 2)
    assert float((x0 - want).abs().max()) < 1e-5 * max(1.0, float(want.abs().max()))


def test_bad_names_are_refused_by_name():
    with pytest.raises(RuntimeError, match='schedule name must be "linear" or "cosine", got "sigmoid"'):
        run_js({"op": "schedule", "name": "sigmoid", "T": 10})


@pytest.mark.parametrize("name", ["moons", "8gaussians"])
def test_the_pages_toy_data_follow_the_packages(name):
    """The page draws its points with its own random numbers, from the same distribution as md.toy_2d: mean and
    covariance agree within 5 standard errors (20,000 points each), and the two classes split the points evenly."""
    n = 20_000
    got = run_js({"op": "toy2d", "name": name, "n": n, "seed": 3})
    x = torch.tensor(got["points"], dtype=torch.float64)                               # (n, 2)
    ref = toy_2d(name, n, generator=torch.Generator().manual_seed(3)).double()
    for stat in (lambda p: p, lambda p: p[:, :, None] * p[:, None, :]):             # first and second moments
        a, b = stat(x).reshape(n, -1), stat(ref).reshape(n, -1)
        se = ((a.var(0) + b.var(0)) / n).sqrt()
        assert bool(((a.mean(0) - b.mean(0)).abs() < 5 * se).all()), name
    share = torch.tensor(got["labels"], dtype=torch.float64).mean()
    assert abs(float(share) - 0.5) < 5 * (0.25 / n) ** 0.5
