"""Prompt adherence of the shipped text-conditional latent model (chapter 13), measured without any downloaded model.

    python benchmarks/prompts.py --n-per-prompt 2 --guidance 1,2,3,5

Every caption the grammar makes (``minidiff.captions.all_captions``: 10 classes x 3 x 3 x 3 attribute choices,
270 prompts) is sampled ``n-per-prompt`` times at each guidance scale (DDIM-50, one seed, the same noise at every
scale). The class is checked with the shipped classifier (agreement with its binomial standard error) and each
attribute the prompt names with the attribute functions that made the training captions (agreement against the
chance level of 1/3: a third of each class lies beyond each tercile). The empty prompt is guidance's
unconditional branch. Results go to ``checkpoints/fashion-mnist-prompts.eval.json`` with the command, the
checkpoint's SHA-256, the machine and the torch version.
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import torch

import minidiff as md
from minidiff._io import write_json
from minidiff.captions import all_captions
from minidiff.data import file_sha256
from minidiff.evaluate import evaluate_prompts
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "fashion-mnist-prompts.pt"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(CKPT))
    parser.add_argument("--n-per-prompt", type=int, default=2)
    parser.add_argument("--guidance", default="1,2,3,5", help="comma-separated guidance scales")
    parser.add_argument("--out", default=str(CKPT.with_suffix(".eval.json")))
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.guidance.split(",")]
    model, sched, config = md.load_model(args.ckpt, device="cpu")
    prompts = all_captions()
    command = f"python benchmarks/prompts.py --n-per-prompt {args.n_per_prompt} --guidance {args.guidance}"
    out = dict(command=command, checkpoint=Path(args.ckpt).name, sha256=file_sha256(Path(args.ckpt)),
               machine=f"{cpu_model()}; {machine_description(torch.device('cpu'))}", torch=torch.__version__,
               date=datetime.date.today().isoformat(), prompts=len(prompts), n_per_prompt=args.n_per_prompt,
               sampler="DDIM-50", seed=0, chance_attribute_agreement=1 / 3, scales=[])
    for scale in scales:
        r = evaluate_prompts(model, sched, prompts, n_per_prompt=args.n_per_prompt, guidance_scale=scale, seed=0)
        attrs = {k: {"asked": v["asked"], "agreement": round(v["agreement"], 4),
                     "se": round(math.sqrt(v["agreement"] * (1 - v["agreement"]) / v["asked"]), 4)}
                 for k, v in r["attributes"].items()}
        out["scales"].append(dict(guidance=scale, n=r["n"], class_agreement=round(r["class_agreement"], 4),
                                  class_agreement_se=round(r["class_agreement_se"], 4), attributes=attrs,
                                  seconds=r["seconds"]))
        print(f"guidance {scale:g}: class agreement {r['class_agreement']:.3f} ± {r['class_agreement_se']:.3f}; "
              + ", ".join(f"{k} {v['agreement']:.3f}" for k, v in attrs.items()), flush=True)
        write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
