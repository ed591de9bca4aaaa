"""The quality sweeps behind the tables of chapters 6 and 7, measured on the shipped Fashion-MNIST model.

    python benchmarks/quality.py ddim-table --n 250      # eta x steps grid of DDIM and the sigma-hat row (chapter 6)
    python benchmarks/quality.py cfg-sweep --n 500       # guidance scales (chapter 7)
    python benchmarks/quality.py superres --n 1000       # 4x super-resolution: interpolation, ILVR, SR3 (chapter 8)

A long sweep can be split over processes (or machines): ``--only eta:steps,...`` (ddim-table), ``--only scale,...``
(cfg-sweep) or ``--only method,...`` (superres) runs just those cells into its own ``--out`` file, and
``python benchmarks/quality.py merge A.json B.json --out C.json`` joins files made with the same checkpoint,
sample count, seed and settings, recording every part's command.

Every cell samples ``n`` class-balanced images (sample i has label i mod 10) from the same seed, so the cells
share their starting noise, and scores them with the shipped classifier: FD_cls against ``n`` test images, its
floor (``n`` train vs the same ``n`` test images), the class agreement and, for the guidance sweep, the
within-class diversity (``minidiff.class_diversity``) next to that of ``n`` real test images.
The super-resolution sweep instead super-resolves ``n`` test images from their 4x-downsampled versions with
each method (50 steps, eta = 1, for ILVR on the shipped model and for the SR3 model) and scores them with
``minidiff.evaluate.score_superres`` against ``n`` other test images; its file sits beside the SR3 checkpoint.

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
import time
from pathlib import Path

import torch

import minidiff as md
from minidiff._io import write_json
from minidiff.evaluate import evaluate_samples, generate
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CKPT = ROOT / "checkpoints" / "fashion-mnist-cond.pt"
SR_CKPT = ROOT / "checkpoints" / "fashion-mnist-sr3.pt"
SR_METHODS = ("nearest", "bicubic", "ILVR", "SR3", "originals")     # the originals, scored alike: the floor
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
    p.add_argument("sweep", choices=("ddim-table", "cfg-sweep", "superres"))
    p.add_argument("--ckpt", type=Path, default=CKPT)
    p.add_argument("--n", type=int, default=250, help="samples per cell (class-balanced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=125)
    p.add_argument("--device", default=None)
    p.add_argument("--guidance", type=float, default=1.0, help="ddim-table: guidance scale (1: conditional)")
    p.add_argument("--steps", type=int, default=50, help="cfg-sweep: DDIM steps")
    p.add_argument("--sr-ckpt", type=Path, default=SR_CKPT, help="superres: the SR3 checkpoint")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--only", default=None,
                   help="run only these cells: eta:steps,... (sigma_hat:steps for that row), scale,... or "
                        "method,... (superres)")
    args = p.parse_args(argv)
    if args.device is not None and torch.device(args.device).type == "cuda":
        # Full float32 (no TF32 convolutions or matrix products): a chapter's CPU recompute of a cell then
        # matches the file to well within its 1% check.
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    model, sched, _ = md.load_model(args.ckpt, device=args.device)
    out = args.out or (SR_CKPT.with_suffix(".eval.json") if args.sweep == "superres" else
                       RESULTS / f"{args.sweep}.json")
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
    elif args.sweep == "superres":
        # The test images in a fixed random order (seed 1, as chapter 8): the first n are super-resolved from
        # their 4x-downsampled versions, the next n are the reference set of FD_cls.
        factor = 4
        res["settings"] = {"factor": factor, "steps": args.steps, "eta": 1.0, "methods": list(SR_METHODS),
                           "sr_checkpoint": str(args.sr_ckpt.resolve().relative_to(ROOT))
                           if args.sr_ckpt.resolve().is_relative_to(ROOT) else args.sr_ckpt.name,
                           "sr_checkpoint_sha256": sha256(args.sr_ckpt)}
        res = resume(out, res)
        sr_net, sr_sched, _ = md.load_model(args.sr_ckpt, device=args.device)
        device = next(model.parameters()).device
        test_x, test_y = md.load_fashion_mnist("test")
        pick = torch.randperm(test_x.shape[0], generator=torch.Generator().manual_seed(1))[:2 * args.n]
        x_hr, y_hr, ref = test_x[pick[:args.n]], test_y[pick[:args.n]], test_x[pick[args.n:]]
        lowres = md.superres.downsample(x_hr, factor)
        cells = [{"method": m} for m in SR_METHODS]

        def score(key):
            gen = torch.Generator(device).manual_seed(args.seed)
            start = time.perf_counter()
            outs = []
            for i in range(0, args.n, args.batch_size):           # batch by batch, each from the one generator
                low = lowres[i:i + args.batch_size].to(device)
                outs.append({"nearest": lambda: md.superres.upsample(low, factor, "nearest"),
                             "bicubic": lambda: md.superres.upsample(low, factor, "bicubic"),
                             "ILVR": lambda: md.ilvr(model, low, sched, factor=factor, steps=args.steps, eta=1.0,
                                                     generator=gen),
                             "SR3": lambda: md.sr3_sample(sr_net, low, sr_sched, factor=factor, steps=args.steps,
                                                          eta=1.0, generator=gen),
                             "originals": lambda: x_hr[i:i + args.batch_size]}[key["method"]]().cpu())
            seconds = time.perf_counter() - start
            scores = md.evaluate.score_superres(torch.cat(outs), x_hr, y_hr, factor=factor, reference=ref)
            if key["method"] == "originals":                  # an exact copy: PSNR inf, which JSON cannot hold
                scores["psnr"] = scores["psnr_se"] = None
            return {**scores, "seconds": round(seconds, 2)}
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
                  if args.sweep == "ddim-table" else {"method": c} if args.sweep == "superres" else {"scale": float(c)}
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
