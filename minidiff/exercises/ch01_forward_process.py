"""Chapter 1, the forward process: the checkers of ``alpha_bars`` and of one noising step q(x_t | x_{t-1}).

Introduced in chapter 1.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..forward import q_step
from ._harness import (MISMATCH, CheckResult, as_tensor, at_t, call_reader, check_noising_fn, match_mistake,
                       short_schedules, within)


def check_alpha_bars(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check ``fn(betas) -> alpha_bars`` (shape (T,)), alpha_bar_t = prod_{s<=t} (1 - beta_s).

    ``betas`` is float64, the dtype a schedule is stored in, and so must ``alpha_bars`` be.

    Introduced in chapter 1.
    """
    name = "check_alpha_bars"
    for sched in short_schedules():
        betas = sched.betas.clone()
        out, hint = call_reader(fn, betas.clone())
        if hint is None:
            out, hint = as_tensor(out, betas, "alpha_bars")
        if hint is None:
            hint = match_mistake(out, sched.alpha_bars, _alpha_bars_mistakes(sched))
            if hint == MISMATCH:
                bad = ~within(out, sched.alpha_bars)
                first = int(bad.nonzero()[0])
                hint = (f"alpha_bars differs from the package's first at index {first} (paper t = {first + 1}): "
                        f"got {float(out[first]):.6g}, expected {float(sched.alpha_bars[first]):.6g}")
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches NoiseSchedule(betas).alpha_bars on a linear and a cosine schedule")


def _alpha_bars_mistakes(sched) -> list:
    """(hint, wrong alpha_bars) pairs: the usual ways of getting the cumulative product wrong."""
    betas = sched.betas
    alphas = 1 - betas
    return [
        ("you returned alphas = 1 - beta_t; alpha_bar_t is their cumulative product (torch.cumprod)",
         lambda: alphas),
        ("you multiplied the betas; alpha_bar_t multiplies alpha_s = 1 - beta_s",
         lambda: torch.cumprod(betas, 0)),
        ("you computed 1 - prod(beta); alpha_bar_t is prod(1 - beta_s)",
         lambda: 1 - torch.cumprod(betas, 0)),
        ("you summed instead of multiplying: alpha_bar_t = prod(1 - beta_s), use torch.cumprod",
         lambda: torch.cumsum(alphas, 0)),
        ("you computed 1 - sum(beta_s): that is only the first-order (small beta) approximation of the "
         "product", lambda: 1 - torch.cumsum(betas, 0)),
        ("exp(-sum beta_s) is only the small-beta approximation of prod(1 - beta_s); use torch.cumprod",
         lambda: torch.exp(-torch.cumsum(betas, 0))),
        ("off by one: your array starts with 1.0 (that is alpha_bar_{t-1}, sched.alpha_bars_prev). "
         "Index 0 is the paper's t = 1, so alpha_bars[0] = 1 - beta_1",
         lambda: sched.alpha_bars_prev),
        ("you took a square root: alpha_bar_t itself is prod(1 - beta_s)",
         lambda: sched.alpha_bars.sqrt()),
    ]


def check_q_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_prev, t, sched, noise) -> x_t``, one forward step q(x_t | x_{t-1}).

    Run on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32: x_t must keep
    x's shape and dtype.

    Introduced in chapter 1.
    """
    return check_noising_fn("check_q_step", fn, q_step, _q_step_mistakes, seed,
                            "matches minidiff.q_step on 2 schedules x 12 samples")


NOISE_SIGN = ("the noise is added, not subtracted: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps. With -eps "
              "x_t has the right distribution, but the noise in it is no longer the eps passed in")


def _q_step_mistakes(x, t, sched, noise) -> list:
    """(hint, wrong x_t) pairs for x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps."""
    b = at_t(sched.betas, t, x)
    ab = at_t(sched.alpha_bars, t, x)
    return [
        ("the mean is scaled by sqrt(1 - beta_t), not (1 - beta_t)",
         lambda: (1 - b) * x + b.sqrt() * noise),
        ("the noise's standard deviation is sqrt(beta_t): you scaled it by beta_t (the variance)",
         lambda: (1 - b).sqrt() * x + b * noise),
        ("both coefficients lack their square root: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps",
         lambda: (1 - b) * x + b * noise),
        ("you forgot to shrink x_{t-1} by sqrt(1 - beta_t): without it the variance grows at every step",
         lambda: x + b.sqrt() * noise),
        ("you swapped the coefficients: sqrt(1 - beta_t) multiplies x_{t-1} and sqrt(beta_t) the noise",
         lambda: b.sqrt() * x + (1 - b).sqrt() * noise),
        (NOISE_SIGN, lambda: (1 - b).sqrt() * x - b.sqrt() * noise),
        ("that is the closed form q(x_t | x_0) with alpha_bar_t; one step uses beta_t alone",
         lambda: ab.sqrt() * x + (1 - ab).sqrt() * noise),
        ("off by one in t: you used betas[t-1]; index t is the step being taken (paper step t + 1)",
         lambda: (1 - at_t(sched.betas, t - 1, x)).sqrt() * x + at_t(sched.betas, t - 1, x).sqrt() * noise),
        ("you used one timestep for the whole batch; t holds one index per sample",
         lambda: (1 - sched.betas[t[0]]).sqrt() * x + sched.betas[t[0]].sqrt() * noise),
    ]
