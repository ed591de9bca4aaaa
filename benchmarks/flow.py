"""Few-step quality of the shipped flow-matching model against the shipped eps-model, on Fashion-MNIST.

    python benchmarks/flow.py --n 500 --out checkpoints/fashion-mnist-flow.eval.json

Both models are the ``tiny`` U-Net, class-conditional, trained on the same images for the same number of steps:
``fashion-mnist-cond.pt`` with L_simple, ``fashion-mnist-flow.pt`` with conditional flow matching. For every step
count S it draws ``n`` class-balanced samples (label i mod 10, classifier-free guidance ``--guidance``) from the
same starting noise with

* ``eps, DDIM``: DDIM (eta = 0) on the eps-model, trailing timesteps;
* ``flow, Euler``: Euler's method on the flow model's ODE with S equal steps in t, from t = 1;
* ``flow, DDIM times``: the same Euler method at DDIM's times (exactly DDIM on the flow model read as an
  eps-model, ``minidiff.flow.FlowAsEps``),

and scores them with the shipped classifier: FD_cls against the first ``n`` test images, with its bootstrap
standard deviation (``minidiff.metrics.fd_bootstrap``, 50 rounds), and the class agreement with its binomial
standard error. The file records the command, the checkpoints' SHA-256, the machine and the time of each cell,
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
from minidiff import flow
from minidiff._io import write_json
from minidiff.classifier import classifier_features
from minidiff.metrics import fd_bootstrap
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
CKPTS = {"eps": ROOT / "checkpoints" / "fashion-mnist-cond.pt", "flow": ROOT / "checkpoints" / "fashion-mnist-flow.pt"}
SAMPLERS = ("eps, DDIM", "flow, Euler", "flow, DDIM times")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--steps", default="5,10,20,50")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flow-ckpt", type=Path, default=CKPTS["flow"], help="the flow model (default: the shipped one)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    CKPTS["flow"] = args.flow_ckpt
    if args.n < 10 or args.batch_size < 1 or min(steps) < 1:
        p.error("--n must be >= 10, --batch-size >= 1 and every step count >= 1")

    eps_model, sched, _ = md.load_model(CKPTS["eps"], device="cpu")
    net, flow_sched, flow_config = md.load_model(CKPTS["flow"], device="cpu")
    if flow_config["train"].get("objective") != "flow":
        raise SystemExit(f"{CKPTS['flow']} is not a flow-matching checkpoint")
    velocity = flow.FlowNet(net).eval()
    classifier = md.load_classifier()
    x_test, _ = md.load_fashion_mnist("test")
    real = classifier_features(classifier, x_test[: args.n])
    labels = torch.arange(args.n) % 10
    x_T = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(args.seed))

    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.update({
        "command": "python " + " ".join(["benchmarks/flow.py", *(sys.argv[1:] if argv is None else argv)]),
        "checkpoints": {k: {"file": v.name, "sha256": sha256(v)} for k, v in CKPTS.items()},
        "n": args.n, "guidance": args.guidance, "seed": args.seed,
        "samples": f"{args.n} class-balanced samples (label i mod 10) from one fixed x_T, the same for every cell",
        "machine": machine_description(torch.device("cpu")), "cpu_model": cpu_model(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    })
    res.setdefault("cells", {})

    def sample(name: str, S: int, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        kw = dict(y=yb, guidance_scale=args.guidance, x_T=xb)
        if name == "eps, DDIM":
            return md.ddim_sample(eps_model, xb.shape, sched, steps=S, eta=0.0, **kw)
        if name == "flow, Euler":
            return flow.flow_sample(velocity, xb.shape, steps=S, **kw)
        scale = float(flow.flow_scale(float(flow_sched.alpha_bars[-1])))
        return flow.flow_sample(velocity, xb.shape, times=flow.eps_flow_times(flow_sched, S),
                                **{**kw, "x_T": scale * xb})

    for S in steps:
        for name in SAMPLERS:
            key = f"{name}, {S}"
            if key in res["cells"]:
                continue
            start = time.perf_counter()
            with torch.no_grad():
                x = torch.cat([sample(name, S, x_T[i:i + args.batch_size], labels[i:i + args.batch_size])
                               for i in range(0, args.n, args.batch_size)])
            seconds = time.perf_counter() - start
            fd = fd_bootstrap(classifier_features(classifier, x.clamp(-1, 1)), real,
                              generator=torch.Generator().manual_seed(args.seed + 1))
            agree = md.metrics.class_agreement(x.clamp(-1, 1), labels, classifier)
            res["cells"][key] = {"sampler": name, "steps": S, "nfe": S, "fd_cls": fd["fd"], "fd_cls_sd": fd["sd"],
                                 "class_agreement": agree,
                                 "class_agreement_se": (agree * (1 - agree) / args.n) ** 0.5,
                                 "seconds": round(seconds, 1)}
            print(f"{key:24s} FD_cls {fd['fd']:7.2f} ± {fd['sd']:.2f}  agreement {agree:.3f}  {seconds:.0f} s",
                  flush=True)
            write_json(args.out, res)
    if "floor" not in res:
        res["floor"] = md.evaluate.fd_cls_floor(args.n, classifier=classifier)
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
