"""Bits per dimension of the shipped Fashion-MNIST model on test images: the ELBO and the exact likelihood.

    python benchmarks/likelihood.py --n 256 --out checkpoints/fashion-mnist-cond.likelihood.json

For the first ``n`` test images (unconditional: the model with its "no label" input) it computes

* the ELBO of chapter 3 (``minidiff.likelihood.elbo_bpd``, all T - 1 KL terms, sigma^2 = beta_tilde), and
* the exact likelihood through the probability-flow ODE (``minidiff.likelihood.ode_log_likelihood``) of the
  dequantised images (one uniform draw per pixel, seed ``--seed``) with Hutchinson's estimator, at several
  step counts, to show the ODE solution has converged, and
* the probe-to-probe spread of Hutchinson's estimate: ``--probes`` probes on the first 16 images.

Every quantity is a mean over images with its standard error (the spread over images, which includes the noise of
the estimators). The file records the command, the checkpoint's SHA-256, the machine and the time of each part,
and is rewritten after each part: an interrupted run continues where it stopped when run again.
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
from minidiff._io import write_json
from minidiff.likelihood import bits_per_dim, dequantize, elbo_bpd, ode_log_likelihood
from minidiff.runtime import cpu_model, machine_description

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "checkpoints" / "fashion-mnist-cond.pt"


def summary(values: torch.Tensor) -> dict:
    v = values.double()
    return {"mean": float(v.mean()), "se": float(v.std() / len(v) ** 0.5), "sd": float(v.std()), "n": len(v)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="test images (the first n)")
    p.add_argument("--steps", default="50,100,200", help="Heun step counts of the ODE, comma-separated")
    p.add_argument("--probes", type=int, default=8, help="Hutchinson probes per image for the spread check")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=CKPT)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.n < 2 or args.batch_size < 1 or args.probes < 2:
        p.error("--n must be >= 2, --batch-size >= 1 and --probes >= 2")
    steps = [int(s) for s in args.steps.split(",")]

    model, sched, _ = md.load_model(args.ckpt, device="cpu")
    model.eval()
    x_test, _ = md.load_fashion_mnist("test")
    x = x_test[: args.n]
    x_deq = dequantize(x, generator=torch.Generator().manual_seed(args.seed))
    D = x[0].numel()

    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.update({
        "command": "python benchmarks/likelihood.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "checkpoint": args.ckpt.name, "checkpoint_sha256": hashlib.sha256(args.ckpt.read_bytes()).hexdigest(),
        "n": args.n, "seed": args.seed, "images": f"the first {args.n} Fashion-MNIST test images, unconditional",
        "machine": machine_description(torch.device("cpu")), "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
    })
    res.setdefault("parts", {})

    def save():
        write_json(args.out, res)

    def batches(fn, data):
        return torch.cat([fn(data[i:i + args.batch_size], i) for i in range(0, len(data), args.batch_size)])

    if "elbo" not in res["parts"]:
        start = time.perf_counter()
        parts = {}

        def one(xb, i):
            r = elbo_bpd(model, xb, sched, generator=torch.Generator().manual_seed(args.seed + 1 + i))
            for k, v in r.items():
                parts.setdefault(k, []).append(v)
            return r["bpd"]
        batches(one, x)
        res["parts"]["elbo"] = {k: summary(torch.cat(v)) for k, v in parts.items()}
        res["parts"]["elbo"]["seconds"] = round(time.perf_counter() - start, 1)
        res["parts"]["elbo"]["settings"] = "all T - 1 KL terms, sigma^2 = beta_tilde, one x_t per term and image"
        res["parts"]["elbo"]["per_image"] = [round(float(b), 5) for b in torch.cat(parts["bpd"])]
        save()
        print("elbo", res["parts"]["elbo"]["bpd"], flush=True)

    for s in steps:
        key = f"ode_{s}"
        if key in res["parts"]:
            continue
        start = time.perf_counter()
        nfe = []

        def one(xb, i):
            r = ode_log_likelihood(model, xb, sched, steps=s, generator=torch.Generator().manual_seed(args.seed + 7 + i))
            nfe.append(r["nfe"])
            return bits_per_dim(r["log_p"], D)
        bpd = batches(one, x_deq)
        res["parts"][key] = {"bpd": summary(bpd), "nfe": nfe[0], "seconds": round(time.perf_counter() - start, 1),
                             "per_image": [round(float(b), 5) for b in bpd]}
        save()
        print(key, res["parts"][key]["bpd"], flush=True)

    if "hutchinson_spread" not in res["parts"]:
        start = time.perf_counter()
        s = steps[len(steps) // 2]
        k = min(16, args.n)
        rows = x_deq[:k].repeat(args.probes, 1, 1, 1)                  # (probes k, 1, 28, 28): probe j, image i
        bpd = batches(lambda xb, i: bits_per_dim(ode_log_likelihood(
            model, xb, sched, steps=s, generator=torch.Generator().manual_seed(args.seed + 100 + i))["log_p"], D),
            rows).view(args.probes, k)
        res["parts"]["hutchinson_spread"] = {
            "steps": s, "images": k, "probes": args.probes,
            "probe_sd_per_image": summary(bpd.std(0)),                # the spread of one estimate, per image
            "image_sd": float(bpd.mean(0).std()),
            "seconds": round(time.perf_counter() - start, 1)}
        save()
        print("hutchinson", res["parts"]["hutchinson_spread"], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
