"""Command line: ``python -m minidiff [demo]``.

``demo`` (the default) samples a small 2D data set with the exact :class:`~minidiff.OracleDenoiser` — DDPM
and DDIM, no training — and reports how close the samples land to the data.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from .oracle import OracleDenoiser
from .samplers import ddim_sample, ddpm_sample
from .schedules import NoiseSchedule


def _ring_points(n: int) -> torch.Tensor:
    """n points evenly spaced on the unit circle, shape (n, 2)."""
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def demo(args: argparse.Namespace) -> int:
    sched = NoiseSchedule.from_name(args.schedule, T=args.T)
    points = _ring_points(8)                                               # (8, 2)
    oracle = OracleDenoiser(points, sched)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{sched}\nData: 8 points on the unit circle. Exact denoiser, {args.n} samples per sampler.\n")
    print(f"{'sampler':<22}{'model calls':>12}{'seconds':>10}{'max dist to data':>18}{'points hit':>12}")
    runs = [("DDPM", dict(fn=ddpm_sample, calls=sched.T))]
    runs += [(f"DDIM-{s} (eta=0)", dict(fn=ddim_sample, steps=s, calls=s)) for s in (10, 50)]
    for name, spec in runs:
        fn, calls = spec.pop("fn"), spec.pop("calls")
        start = time.perf_counter()
        x0 = fn(oracle, (args.n, 2), sched, generator=gen, dtype=torch.float64, **spec)   # (n, 2)
        seconds = time.perf_counter() - start
        dist = torch.cdist(x0, points)                                     # (n, 8)
        hit = dist.argmin(dim=1).unique().numel()
        print(f"{name:<22}{calls:>12}{seconds:>10.2f}{float(dist.min(dim=1).values.max()):>18.2e}{hit:>10}/8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minidiff", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="sample a 2D data set with the exact denoiser (no training)")
    p.add_argument("--schedule", default="cosine", choices=["linear", "cosine", "sigmoid"])
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps")
    p.add_argument("--n", type=int, default=512, help="samples per sampler")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
