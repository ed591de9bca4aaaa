"""FD_cls against the number of model calls for the fast solvers of chapter 11, on the shipped eps-model.

    python benchmarks/solvers.py --n 500 --out checkpoints/fashion-mnist-cond.solvers.json

For every NFE (denoiser calls; each guided call evaluates the U-Net on the conditional and unconditional rows
at once) it draws ``n`` class-balanced samples (label i mod 10, classifier-free guidance ``--guidance``) from one
fixed starting noise with

* ``DDIM``: DDIM (eta = 0), trailing timesteps, NFE steps (chapter 6);
* ``Euler``: Euler's method in sigma on EDM's schedule (rho = 7), NFE steps;
* ``Heun``: Heun's method on the same schedule, (NFE + 1) // 2 steps, so 2 S - 1 <= NFE calls;
* ``DPM-Solver++(2M)``: on the same schedule, NFE steps;
* ``DPM-Solver++(2M), DDIM's levels``: at the levels of DDIM's NFE trailing timesteps instead,

and scores them with the shipped classifier: FD_cls against the first ``n`` test images with its bootstrap
standard deviation (``minidiff.metrics.fd_bootstrap``, 50 rounds), and the class agreement with its binomial
standard error. The file records the command, the checkpoint's SHA-256, the machine and the time of each cell,
and is rewritten after each cell: an interrupted run continues where it stopped when run again.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import torch

import minidiff as md
from minidiff import solvers
from minidiff._io import write_json
from minidiff.classifier import classifier_features
from minidiff.metrics import fd_bootstrap
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "fashion-mnist-cond.pt"
SAMPLERS = ("DDIM", "Euler", "Heun", "DPM-Solver++(2M)", "DPM-Solver++(2M), DDIM's levels")


SOLVER_OF = {"Euler": "euler", "Heun": "heun", "DPM-Solver++(2M)": "dpmpp_2m",
             "DPM-Solver++(2M), DDIM's levels": "dpmpp_2m"}


def steps_for(name: str, nfe: int) -> int:
    """The steps of ``name`` that use at most ``nfe`` model calls (all of them, except for Heun when nfe is even)."""
    return (nfe + 1) // 2 if name == "Heun" else nfe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--nfe", default="5,10,20,50")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=CKPT, help="the eps-model (default: the shipped one)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    nfes = [int(s) for s in args.nfe.split(",")]
    if args.n < 10 or args.batch_size < 1 or min(nfes) < 2:
        p.error("--n must be >= 10, --batch-size >= 1 and every NFE >= 2")

    model, sched, _ = md.load_model(args.ckpt, device="cpu")
    classifier = md.load_classifier()
    x_test, _ = md.load_fashion_mnist("test")
    real = classifier_features(classifier, x_test[: args.n])
    labels = torch.arange(args.n) % 10
    x_T = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))

    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.update({
        "command": "python " + " ".join(["benchmarks/solvers.py", *(sys.argv[1:] if argv is None else argv)]),
        "checkpoint": {"file": args.ckpt.name, "sha256": hashlib.sha256(args.ckpt.read_bytes()).hexdigest()},
        "n": args.n, "guidance": args.guidance, "seed": args.seed, "rho": 7.0,
        "samples": f"{args.n} class-balanced samples (label i mod 10) from one fixed x_T, the same for every cell",
        "machine": machine_description(torch.device("cpu")), "cpu_model": cpu_model(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "date": datetime.date.today().isoformat(),
    })
    res.setdefault("cells", {})

    def sample(name: str, steps: int, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        kw = dict(y=yb, guidance_scale=args.guidance, x_T=xb)
        if name == "DDIM":
            return md.ddim_sample(model, xb.shape, sched, steps=steps, eta=0.0, **kw)
        if name == "DPM-Solver++(2M), DDIM's levels":
            return solvers.solver_sample(model, xb.shape, sched, solver="dpmpp_2m",
                                         sigmas=solvers.ddim_sigmas(sched, steps), **kw)
        return solvers.solver_sample(model, xb.shape, sched, solver=SOLVER_OF[name], steps=steps, **kw)

    for nfe in nfes:
        for name in SAMPLERS:
            key = f"{name}, {nfe}"
            if key in res["cells"]:
                continue
            steps = steps_for(name, nfe)
            start = time.perf_counter()
            with torch.no_grad():
                x = torch.cat([sample(name, steps, x_T[i:i + args.batch_size], labels[i:i + args.batch_size])
                               for i in range(0, args.n, args.batch_size)])
            seconds = time.perf_counter() - start
            fd = fd_bootstrap(classifier_features(classifier, x.clamp(-1, 1)), real,
                              generator=torch.Generator().manual_seed(args.seed + 1))
            agree = md.metrics.class_agreement(x.clamp(-1, 1), labels, classifier)
            calls = steps if name == "DDIM" else solvers.nfe(SOLVER_OF[name], steps)
            res["cells"][key] = {"sampler": name, "nfe_budget": nfe, "steps": steps, "nfe": calls,
                                 "fd_cls": fd["fd"], "fd_cls_sd": fd["sd"], "class_agreement": agree,
                                 "class_agreement_se": (agree * (1 - agree) / args.n) ** 0.5,
                                 "seconds": round(seconds, 1)}
            print(f"{key:26s} FD_cls {fd['fd']:7.2f} ± {fd['sd']:.2f}  agreement {agree:.3f}  {seconds:.0f} s",
                  flush=True)
            write_json(args.out, res)
    if "floor" not in res:
        res["floor"] = md.evaluate.fd_cls_floor(args.n, classifier=classifier)
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
