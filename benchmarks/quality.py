"""The quality sweeps behind the tables of chapters 6 and 7, measured on the shipped Fashion-MNIST model.

    python benchmarks/quality.py ddim-table --n 250      # eta x steps grid of DDIM and the sigma-hat row (chapter 6)
    python benchmarks/quality.py cfg-sweep --n 500       # guidance scales (chapter 7)

A long sweep can be split over processes (or machines): ``--only eta:steps,...`` (ddim-table) or
``--only scale,...`` (cfg-sweep) runs just those cells into its own ``--out`` file, and
``python benchmarks/quality.py merge A.json B.json --out C.json`` joins files made with the same checkpoint,
sample count, seed and settings, recording every part's command.

Every cell samples ``n`` class-balanced images (sample i has label i mod 10) from the same seed, so the cells
share their starting noise, and scores them with the shipped classifier: FD_cls against ``n`` test images, its
floor (``n`` train vs the same ``n`` test images), the class agreement and, for the guidance sweep, the
within-class diversity (``minidiff.class_diversity``) next to that of ``n`` real test images.

The result file records the command, the checkpoint and its SHA-256, the sample count, the seed, the machine
and the torch version, and is rewritten after every cell: an interrupted sweep continues where it stopped when
run again with the same settings. The chapters read these files; they do not recompute them (each chapter
recomputes one cell live at small n).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import re
import sys
from pathlib import Path

import torch

import minidiff as md
from minidiff._io import write_json
from minidiff.evaluate import evaluate_samples, generate
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CKPT = ROOT / "checkpoints" / "fashion-mnist-cond.pt"
DDIM_ETAS = (0.0, 0.2, 0.5, 1.0)
DDIM_STEPS = (10, 20, 50, 100, 1000)
SIGMA_HAT = {"sampler": "ddpm", "variance": "beta"}     # the DDIM paper's sigma-hat row (ddpm_sample(steps=S))
CFG_SCALES = (0.0, 1.0, 1.1, 1.3, 2.0, 3.0, 5.0)        # the CFG paper's w = s - 1: -1, 0, 0.1, 0.3, 1, 2, 4


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def header(kind: str, args, ckpt: Path) -> dict:
    try:
        ckpt_name = str(ckpt.resolve().relative_to(ROOT))
    except ValueError:
        ckpt_name = ckpt.name
    return {"sweep": kind, "command": " ".join(["python benchmarks/quality.py", *sys.argv[1:]]),
            "checkpoint": ckpt_name, "checkpoint_sha256": sha256(ckpt), "n": args.n, "seed": args.seed,
            "machine": machine_description(torch.device("cpu") if args.device is None else torch.device(args.device)),
            "cpu_model": cpu_model(), "torch": torch.__version__, "python": platform.python_version(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"), "cells": []}


def resume(out: Path, fresh: dict) -> dict:
    """The existing result file if it was made with the same checkpoint and settings (this run is recorded
    in its ``"resumed"`` list), else ``fresh``."""
    if out.exists():
        old = json.loads(out.read_text())
        same = all(old.get(k) == fresh[k] for k in ("sweep", "checkpoint_sha256", "n", "seed"))
        if same and old.get("settings") == fresh.get("settings"):
            old.setdefault("resumed", []).append({k: fresh[k] for k in ("command", "machine", "cpu_model", "torch",
                                                                        "started")})
            return old
    return fresh


def run_cells(res: dict, out: Path, cells: list[dict], score) -> dict:
    done = {json.dumps(c["key"], sort_keys=True) for c in res["cells"]}
    if any(json.dumps(key, sort_keys=True) not in done for key in cells):
        res["complete"] = False
    for key in cells:
        if json.dumps(key, sort_keys=True) in done:
            continue
        cell = {"key": key, **score(key), "machine": res.get("resumed", [res])[-1]["machine"]}
        res["cells"].append(cell)
        res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        write_json(out, res)
        print(json.dumps(cell), flush=True)
    res["complete"] = True
    write_json(out, res)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["merge"]:
        return merge(argv[1:])
    p.add_argument("sweep", choices=("ddim-table", "cfg-sweep"))
    p.add_argument("--ckpt", type=Path, default=CKPT)
    p.add_argument("--n", type=int, default=250, help="samples per cell (class-balanced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=125)
    p.add_argument("--device", default=None)
    p.add_argument("--guidance", type=float, default=1.0, help="ddim-table: guidance scale (1: conditional)")
    p.add_argument("--steps", type=int, default=50, help="cfg-sweep: DDIM steps")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None,
                   help="run only these cells: eta:steps,... (sigma_hat:steps for that row) or scale,...")
    args = p.parse_args(argv)
    if args.device is not None and torch.device(args.device).type == "cuda":
        # Full float32 (no TF32 convolutions or matrix products): a chapter's CPU recompute of a cell then
        # matches the file to well within its 1% check.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    model, sched, _ = md.load_model(args.ckpt, device=args.device)
    out = args.out or RESULTS / f"{args.sweep}.json"
    res = header(args.sweep, args, args.ckpt)
    common = dict(n=args.n, seed=args.seed, batch_size=args.batch_size, device=args.device)

    if args.sweep == "ddim-table":
        res["settings"] = {"guidance": args.guidance, "spacing": "trailing", "etas": list(DDIM_ETAS),
                           "steps": list(DDIM_STEPS)}
        res = resume(out, res)
        # Row by row, the slow 1000-step row last, and in it the two ends of eta (deterministic, DDPM-like) first.
        cells = [{"eta": e, "steps": s} for s in DDIM_STEPS
                 for e in (sorted(DDIM_ETAS, key=lambda e: (0 < e < 1, e)) if s == 1000 else DDIM_ETAS)]
        # The paper's last row, sigma-hat: DDPM on the same skipped timesteps with the larger variance beta.
        cells += [SIGMA_HAT | {"steps": s} for s in DDIM_STEPS]

        def score(key):
            how = {"sampler": "ddpm", "variance": key["variance"]} if "sampler" in key else {"eta": key["eta"]}
            samples, labels, settings = generate(model, sched, steps=key["steps"], guidance_scale=args.guidance,
                                                 **how, **common)
            return {**evaluate_samples(samples, labels), "seconds": settings["seconds"]}
    else:
        res["settings"] = {"steps": args.steps, "eta": 0.0, "spacing": "trailing", "scales": list(CFG_SCALES)}
        res = resume(out, res)
        test_x, test_y = md.load_fashion_mnist("test")
        idx = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(0))[:args.n]
        res["real_diversity"] = md.class_diversity(test_x[idx], test_y[idx])
        cells = [{"scale": s} for s in CFG_SCALES]

        def score(key):
            samples, labels, settings = generate(model, sched, steps=args.steps, guidance_scale=key["scale"],
                                                 **common)
            return {**evaluate_samples(samples, labels), "diversity": md.class_diversity(samples, labels),
                    "seconds": settings["seconds"]}

    if args.only:
        wanted = [({**SIGMA_HAT, "steps": int(b)} if a == "sigma_hat" else {"eta": float(a), "steps": int(b)})
                  if args.sweep == "ddim-table" else {"scale": float(c)}
                  for c in args.only.split(",") for a, _, b in [c.partition(":")]]
        unknown = [w for w in wanted if w not in cells]
        if unknown:
            p.error(f"--only names cells outside the sweep: {unknown}")
        cells = wanted
        res["only"] = wanted
    run_cells(res, out, cells, score)
    return 0


def merge(argv: list[str]) -> int:
    """Join result files of one sweep made with the same checkpoint, n, seed and settings."""
    p = argparse.ArgumentParser(prog="quality.py merge", description=merge.__doc__)
    p.add_argument("parts", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    parts = [json.loads(path.read_text()) for path in args.parts]
    keys = ("sweep", "checkpoint_sha256", "n", "seed", "settings")
    for path, part in zip(args.parts[1:], parts[1:]):
        differ = [k for k in keys if part.get(k) != parts[0].get(k)]
        if differ:
            raise SystemExit(f"{path} differs from {args.parts[0]} in {differ}: not the same sweep")
    merged = {k: v for k, v in parts[0].items() if k not in ("cells", "only", "complete")}
    # Each part's command is recorded with its --out path reduced to the file name (no machine paths).
    merged["parts"] = [{**{k: part.get(k) for k in ("command", "machine", "cpu_model", "started", "finished")},
                        "command": re.sub(r"--out (\S+)", lambda m: f"--out {Path(m.group(1)).name}",
                                          part.get("command", ""))}
                       for part in parts]
    seen, cells = set(), []
    for part in parts:
        for cell in part["cells"]:
            key = json.dumps(cell["key"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                cells.append(cell)
    merged["cells"] = cells
    settings = merged["settings"]
    expected = ((len(settings["etas"]) + 1) * len(settings["steps"]) if merged["sweep"] == "ddim-table"
                else len(settings["scales"]))                           # + 1: the sigma-hat row
    merged["complete"] = len(cells) == expected
    write_json(args.out, merged)
    print(f"{len(cells)} cells -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
