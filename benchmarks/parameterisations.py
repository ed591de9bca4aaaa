"""eps, x_0 and v targets, with and without min-SNR-gamma weights, trained side by side on 2-D data — chapter 10.

    python benchmarks/parameterisations.py --seeds 0,1,2,3,4 --out benchmarks/results/parameterisations.json

For every (target, weighting) of ``minidiff.targets`` and every seed it trains chapter 10's MLP (hidden 128, 3
layers; Adam 2e-3 with cosine decay, batches of 256 from 4000 points of the 8-Gaussians data, ``--steps`` steps;
the seed sets the initial weights and the batches, the same for every configuration) and measures

* the error of its implied eps against the exact eps* of the training points (chapter 3's oracle),
  E||eps_hat - eps*||^2 on 6000 fixed draws of x_t in each of three bands of timesteps;
* precision and recall (k = 3, against 2000 fresh points) of DDIM-20 samples, the mean over 3 sets of 2000.

The file holds every seed's values and, per configuration, their mean and standard deviation over seeds, with the
command, machine and time of each run; it is rewritten after each run and an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

import minidiff as md
from minidiff import targets
from minidiff._io import write_json
from minidiff.data import toy_2d
from minidiff.metrics import precision_recall
from minidiff.runtime import cpu_model, machine_description

BANDS = {"t < 100": (0, 100), "100 <= t < 500": (100, 500), "t >= 500": (500, 1000)}
GAMMA = 5.0


def train(target: str, weighting: str, seed: int, steps: int, data: torch.Tensor, sched) -> torch.nn.Module:
    """Chapter 10's 2-D training loop with ``target_loss``; returns the network as an eps-model."""
    torch.manual_seed(seed)
    net = md.MLPDenoiser(dim=2, hidden=128, num_layers=3)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(1000 + seed)
    for _ in range(steps):
        x0 = data[torch.randint(0, len(data), (256,), generator=g)]
        loss = targets.target_loss(net, x0, sched, generator=g, target=target, weighting=weighting, gamma=GAMMA)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    return targets.PredictionAsEps(net.eval(), sched, target)


@torch.no_grad()
def measure(model, data: torch.Tensor, sched) -> dict:
    """eps error against the exact eps* in each band, and DDIM-20 precision / recall."""
    oracle = md.OracleDenoiser(data.double(), sched)
    g = torch.Generator().manual_seed(20)
    x0 = data[torch.randint(0, len(data), (6000,), generator=g)]
    noise = torch.randn(6000, 2, generator=g)
    out = {}
    for name, (lo, hi) in BANDS.items():
        t = torch.randint(lo, hi, (6000,), generator=torch.Generator().manual_seed(21))
        x_t = md.q_sample(x0, t, sched, noise=noise)
        out[f"eps_error, {name}"] = float((model(x_t, t) - oracle(x_t.double(), t).float()).pow(2).sum(1).mean())
    fresh = toy_2d("8gaussians", 2000, generator=torch.Generator().manual_seed(6))
    prs = []
    for seed in (7, 8, 9):
        x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(seed))
        prs.append(precision_recall(md.ddim_sample(model, x_T.shape, sched, steps=20, x_T=x_T), fresh))
    out["precision"] = sum(p["precision"] for p in prs) / 3
    out["recall"] = sum(p["recall"] for p in prs) / 3
    return out


def summarise(runs: dict) -> dict:
    """Per configuration: the mean and standard deviation over seeds of every measured value."""
    summary = {}
    for key, by_seed in runs.items():
        values = list(by_seed.values())
        stats = {}
        for metric in values[0]:
            if metric == "seconds":
                continue
            v = torch.tensor([r[metric] for r in values], dtype=torch.float64)
            stats[metric] = {"mean": float(v.mean()), "sd": float(v.std()) if len(v) > 1 else None}
        summary[key] = {"seeds": len(values), **stats}
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.steps < 1 or not seeds:
        p.error("--steps must be >= 1 and --seeds must name at least one seed")
    sched = md.NoiseSchedule.linear(T=1000)
    data = toy_2d("8gaussians", 4000, generator=torch.Generator().manual_seed(3))

    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    if res and res.get("steps") != args.steps:
        p.error(f"{args.out} holds runs of {res.get('steps')} steps; use another --out for --steps {args.steps}")
    res.update({
        "command": "python " + " ".join(["benchmarks/parameterisations.py", *(sys.argv[1:] if argv is None else argv)]),
        "steps": args.steps, "gamma": GAMMA, "data": "8gaussians, 4000 points (seed 3)",
        "network": "MLPDenoiser(dim=2, hidden=128, num_layers=3), Adam 2e-3, cosine decay, batch 256",
        "cpu_model": cpu_model(), "threads": 1,
        "torch": torch.__version__, "python": platform.python_version(), "date": datetime.date.today().isoformat(),
    })
    runs = res.setdefault("runs", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # matrices this small gain nothing from more threads
    res["machine"] = machine_description(torch.device("cpu"))            # with the one thread it runs on
    try:
        run_all(runs, res, seeds, args, data, sched)
    finally:
        torch.set_num_threads(threads)
    return 0


def run_all(runs: dict, res: dict, seeds: list, args, data: torch.Tensor, sched) -> None:
    """Train and measure every (configuration, seed) not yet in ``runs``, writing the file after each."""
    for target in targets.TARGETS:
        for weighting in targets.WEIGHTINGS:
            key = f"{target}, {weighting}"
            for seed in seeds:
                if str(seed) in runs.get(key, {}):
                    continue
                start = time.perf_counter()
                values = measure(train(target, weighting, seed, args.steps, data, sched), data, sched)
                values["seconds"] = round(time.perf_counter() - start, 1)
                runs.setdefault(key, {})[str(seed)] = values
                res["summary"] = summarise(runs)
                write_json(args.out, res)
                print(f"{key:16s} seed {seed}: " + "  ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
