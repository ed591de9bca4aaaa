"""Prompt adherence of the shipped text-conditional latent model (chapter 13), measured without any downloaded model.

    python benchmarks/prompts.py --n-per-prompt 2 --guidance 1,2,3,5

Every caption the grammar makes (``minidiff.captions.all_captions``: 10 classes x 3 x 3 x 3 attribute choices,
270 prompts) is sampled ``n-per-prompt`` times at each guidance scale (DDIM-50, one seed, the same noise at every
scale). The class is checked with the shipped classifier (agreement with its binomial standard error) and each
attribute the prompt names with the attribute functions that made the training captions. Agreement is read
against two baselines: the chance level of 1/3 (a third of each class's real images lies beyond each tercile),
and, at each scale, what the model does when the prompt names no attribute: the class-only prompts ("a coat"),
``--baseline-n`` samples each, and the share of those samples that show each word (``captions.word_shares``).
Its mean over an attribute's two words is the agreement the attribute would get if its words had no effect.
The empty prompt is guidance's unconditional branch. Results go to ``checkpoints/fashion-mnist-prompts.eval.json``
with the command, the checkpoint's SHA-256, the machine and the torch version.
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
from minidiff.captions import CLASS_WORDS, all_captions, caption
from minidiff.data import file_sha256
from minidiff.evaluate import evaluate_prompts
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "fashion-mnist-prompts.pt"


def share(p: float, n: int) -> dict:
    """A fraction of n images with its binomial standard error."""
    return {"agreement": round(p, 4), "se": round(math.sqrt(p * (1 - p) / n), 4)}


def if_ignored(shares: dict, n: int) -> dict:
    """The agreement an attribute gets when its words have no effect: the mean of its two words' shares among n
    samples of class-only prompts (the prompts ask for each word equally often). The two words exclude each
    other, so their sum is one binomial fraction, and the standard error is half of its."""
    both = sum(shares.values())
    return {"agreement": round(both / 2, 4), "se": round(0.5 * math.sqrt(both * (1 - both) / n), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=str(CKPT))
    parser.add_argument("--n-per-prompt", type=int, default=2)
    parser.add_argument("--guidance", default="1,2,3,5", help="comma-separated guidance scales")
    parser.add_argument("--baseline-n", type=int, default=54, help="samples of each class-only prompt per scale")
    parser.add_argument("--out", default=str(CKPT.with_suffix(".eval.json")))
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.guidance.split(",")]
    model, sched, config = md.load_model(args.ckpt, device="cpu")
    prompts = all_captions()
    class_only = [caption({}, c) for c in range(len(CLASS_WORDS))]                 # "a t-shirt", ..., "an ankle boot"
    command = (f"python benchmarks/prompts.py --n-per-prompt {args.n_per_prompt} --guidance {args.guidance} "
               f"--baseline-n {args.baseline_n}")
    out = dict(command=command, checkpoint=Path(args.ckpt).name, sha256=file_sha256(Path(args.ckpt)),
               machine=f"{cpu_model()}; {machine_description(torch.device('cpu'))}", torch=torch.__version__,
               date=datetime.date.today().isoformat(), prompts=len(prompts), n_per_prompt=args.n_per_prompt,
               sampler="DDIM-50", seed=0, chance_attribute_agreement=1 / 3, scales=[])
    for scale in scales:
        r = evaluate_prompts(model, sched, prompts, n_per_prompt=args.n_per_prompt, guidance_scale=scale, seed=0)
        base = evaluate_prompts(model, sched, class_only, n_per_prompt=args.baseline_n, guidance_scale=scale, seed=1)
        attrs = {k: {**share(v["agreement"], v["asked"]), "asked": v["asked"],
                     "words": {w: {**share(u["agreement"], u["asked"]), "asked": u["asked"]}
                               for w, u in v["words"].items()},
                     "if_ignored": if_ignored(base["word_shares"][k], base["n"])}
                 for k, v in r["attributes"].items()}
        out["scales"].append(dict(guidance=scale, n=r["n"], class_agreement=round(r["class_agreement"], 4),
                                  class_agreement_se=round(r["class_agreement_se"], 4), attributes=attrs,
                                  seconds=r["seconds"],
                                  class_only=dict(prompts=len(class_only), n=base["n"],
                                                  class_agreement=round(base["class_agreement"], 4),
                                                  word_shares={k: {w: round(v, 4) for w, v in pair.items()}
                                                               for k, pair in base["word_shares"].items()})))
        print(f"guidance {scale:g}: class agreement {r['class_agreement']:.3f} ± {r['class_agreement_se']:.3f}; "
              + ", ".join(f"{k} {v['agreement']:.3f} (if ignored {v['if_ignored']['agreement']:.3f})"
                          for k, v in attrs.items()), flush=True)
        write_json(Path(args.out), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
