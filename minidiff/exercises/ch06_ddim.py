"""Chapter 6, DDIM: the checker of one DDIM step (DDIM eq. 12, with the sigma of eq. 16).

Introduced in chapter 6.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..conventions import ddim_sigma
from ..samplers import ddim_step
from ..schedules import NoiseSchedule
from ._harness import (CLIPPED_X0, MISMATCH, NOISE_NOT_SCALED, CheckResult, call_reader, close, conditioning,
                       input_cases,
                       match_mistake, near, one_tensor, randn, random_check, reader_args, short_schedules, split_noise)


def check_ddim_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, eps, t, t_prev, sched, eta, noise) -> x_prev``, one DDIM step (eq. 12 with sigma of
    eq. 16).

    ``t`` and ``t_prev < t`` are Python ints (0-based indices; ``t_prev = -1`` is the clean data, where
    alpha_bar = 1), ``eps`` the noise prediction and ``noise`` the fresh z (B, ...), passed even when
    sigma = 0. The reference is ``minidiff.ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0]``. Run
    on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32: x_prev must keep x_t's
    shape and dtype.

    Introduced in chapter 6.
    """
    name = "check_ddim_step"
    gen = torch.Generator().manual_seed(seed)
    scheds = short_schedules() + [NoiseSchedule.linear(T=1000)]
    n_cases = 0
    for sched in scheds:
        for t, t_prev, eta in _ddim_cases(sched.T):
            n_cases += 1
            for tail, dtype in input_cases():
                x_t, eps, noise = (randn(gen, (6, *tail), dtype) for _ in range(3))   # float64, exact in dtype
                expected = ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0]

                def fresh():
                    return reader_args(dtype, x_t, eps, t, t_prev, sched, eta, noise)

                args = fresh()                       # kept untouched, for the noise-free probe
                hint = random_check(fn, fresh(), fresh())
                if hint is None:
                    out, hint = call_reader(fn, *fresh())
                if hint is None:
                    out, hint = one_tensor(out, args[0], "x_prev", "minidiff.ddim_step")
                if hint is None:
                    mistakes = _ddim_step_mistakes(x_t, eps, t, t_prev, sched, eta, noise)
                    hint = match_mistake(out, expected, mistakes, conditioning(sched, [t, t_prev]))
                    if hint == MISMATCH:
                        hint = _ddim_noise_hint(fn, out, args, x_t, eps, t, t_prev, sched, eta)
                    if hint == MISMATCH:
                        err = float((out.double() - expected).abs().max())
                        hint = f"x_prev differs from minidiff.ddim_step's (largest error {err:.3g})"
                if hint is not None:
                    where = "the data" if t_prev < 0 else f"t_prev = {t_prev}"
                    return CheckResult(name, False, f"at the step t = {t} -> {where}, eta = {eta}, of a "
                                                    f"{sched.name} schedule with T = {sched.T}: {hint}")
    return CheckResult(name, True, f"matches minidiff.ddim_step on {n_cases} steps of {len(scheds)} schedules: "
                                   "eta = 0, 0.5 and 1, skipped steps and the last step to the data")


def _ddim_cases(T: int) -> list[tuple[int, int, float]]:
    """(t, t_prev, eta) for check_ddim_step: eta = 0 first (the deterministic part alone), then noisy steps,
    skipped and consecutive, then the last step to the data (t_prev = -1)."""
    return [(T - 1, T - 1 - T // 4, 0.0), (T // 2, T // 4, 0.0), (T - 1, T // 2, 0.5), (T // 2, T // 2 - 1, 1.0),
            (T - 2, T // 4, 1.0), (T // 3, -1, 0.0), (T // 2, -1, 1.0)]


def _sqrt(v: float) -> float:
    """sqrt of a float; NaN for a negative value (where torch would give NaN too), never a complex number."""
    return v**0.5 if v >= 0 else float("nan")


def _ddim_step_mistakes(x, eps, t, t_prev, sched, eta, noise) -> list:
    """(hint, wrong x_prev) pairs for one DDIM step x_t -> x_{t_prev}, the usual mistakes of eq. (12) and (16)."""
    a = float(sched.alpha_bars[t])
    ap = 1.0 if t_prev < 0 else float(sched.alpha_bars[t_prev])

    def step(a, ap, sigma, x0_a=None, direction=None, noise_scale=None):
        x0_a = a if x0_a is None else x0_a
        x0 = (x - _sqrt(1 - x0_a) * eps) / _sqrt(x0_a)
        d = _sqrt(1 - ap - sigma**2) if direction is None else direction
        return _sqrt(ap) * x0 + d * eps + (sigma if noise_scale is None else noise_scale) * noise

    def sigma_of(a, ap):
        if eta == 0:
            return 0.0
        return eta * _sqrt((1 - ap) / (1 - a) * (1 - a / ap))

    sigma = sigma_of(a, ap)
    mistakes = [
        ("sigma_t lacks the factor sqrt(1 - alpha_bar_t / alpha_bar_{t-1}): DDIM eq. (16) is sigma = eta * "
         "sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_{t-1})",
         lambda: step(a, ap, eta * _sqrt((1 - ap) / (1 - a)))),
        ("sigma_t is a standard deviation: you left out the square root in eq. (16), sigma = eta * "
         "sqrt((1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_{t-1}))",
         lambda: step(a, ap, eta * (1 - ap) / (1 - a) * (1 - a / ap))),
        ("the direction term is sqrt(1 - alpha_bar_{t-1} - sigma_t^2) eps: subtract sigma_t^2, the variance the "
         "fresh noise brings in, or x_{t-1} ends up with too much noise",
         lambda: step(a, ap, sigma, direction=_sqrt(1 - ap))),
        ("the noise is scaled by its standard deviation sigma_t, not the variance sigma_t^2",
         lambda: step(a, ap, sigma, noise_scale=sigma**2)),
        ("the fresh noise must be scaled by sigma_t: x_{t-1} = ... + sigma_t z",
         lambda: step(a, ap, sigma, noise_scale=1.0)),
        ("x0_hat uses alpha_bar_t, the noise level of x_t: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / "
         "sqrt(alpha_bar_t); alpha_bar_{t-1} enters only afterwards", lambda: step(a, ap, sigma, x0_a=ap)),
        ("x0_hat divides by sqrt(alpha_bar_t) and subtracts sqrt(1 - alpha_bar_t) eps: you left out a square root",
         lambda: _sqrt(ap) * (x - _sqrt(1 - a) * eps) / a + _sqrt(1 - ap - sigma**2) * eps + sigma * noise),
        ("you returned x0_hat, the model's guess of the clean data; the step goes only to x_{t_prev}",
         lambda: (x - _sqrt(1 - a) * eps) / _sqrt(a)),
        ("you subtracted the noise: DDIM eq. (12) adds sigma_t z", lambda: step(a, ap, sigma, noise_scale=-sigma)),
        (CLIPPED_X0, lambda: ddim_step(x, eps, t, t_prev, sched, eta=eta, clip_x0=1.0, noise=noise)[0]),
        (CLIPPED_X0, lambda: _sqrt(ap) * ((x - _sqrt(1 - a) * eps) / _sqrt(a)).clamp(-1, 1)   # eps kept as it was
         + _sqrt(1 - ap - sigma**2) * eps + sigma * noise),
    ]
    if t_prev >= 0:
        al, alp = float(sched.alphas[t]), float(sched.alphas[t_prev])
        mistakes += [
            ("you used alpha (sched.alphas, one step) for the previous step; DDIM's alpha is the cumulative "
             "alpha_bar: use sched.alpha_bars[t_prev]", lambda: step(a, alp, sigma_of(a, alp))),
            ("you used sched.alphas; the DDIM paper's alpha_t is minidiff's alpha_bar_t (sched.alpha_bars), the "
             "cumulative product", lambda: step(al, alp, sigma_of(al, alp))),
        ]
    else:
        wrapped = float(sched.alpha_bars[-1])
        hint = ("wrong at the last step, t_prev = -1 (the data): alpha_bars[-1] wraps around to the last entry of "
                "the schedule. There alpha_bar_prev = 1 (x_0 is clean) and sigma = 0, so x_prev = x0_hat")
        wrapped_sigma = eta * _sqrt((1 - wrapped) / (1 - a) * (1 - a / wrapped))    # NaN: 1 - a / wrapped < 0
        mistakes += [(hint, lambda: step(a, wrapped, sigma_of(a, wrapped))),
                     (hint, lambda: step(a, wrapped, wrapped_sigma))]
    if t_prev != t - 1:
        ap1 = 1.0 if t == 0 else float(sched.alpha_bars[t - 1])
        mistakes.append(
            (f"you stepped to t - 1 = {t - 1}; the step goes to t_prev = {t_prev} (DDIM skips timesteps): use "
             "alpha_bar at t_prev", lambda: step(a, ap1, sigma_of(a, ap1))))
    return mistakes


def _ddim_noise_hint(fn, out, args, x_t, eps, t, t_prev, sched, eta) -> str:
    """For a mistake not in the catalogue: split the reader's step into its noise-free part and the noise's
    coefficient (a probe with noise = 0), and say which one is wrong. ``args`` are the reader's inputs (noise
    last), ``x_t`` and ``eps`` the same values in float64."""
    cond = conditioning(sched, [t, t_prev])
    split, fail = split_noise(fn, args, out, cond)
    if fail is not None:
        return fail
    out0, c = split.out0, split.c
    ref0 = ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=torch.zeros_like(x_t))[0]
    sigma = ddim_sigma(float(sched.alpha_bars[t]), 1.0 if t_prev < 0 else float(sched.alpha_bars[t_prev]), eta)
    hints = []
    if not close(out0, ref0, cond=cond):
        err = float((out0.double() - ref0).abs().max())
        hints.append("the noise-free part (your output with noise = 0) differs from sqrt(alpha_bar_prev) x0_hat + "
                     f"sqrt(1 - alpha_bar_prev - sigma^2) eps (largest error {err:.3g})")
    if c is None:
        hints.append(NOISE_NOT_SCALED.format(sigma="sigma"))
    elif near(c, -sigma, split.tol) and sigma > 0:
        hints.append("you subtracted the noise: DDIM eq. (12) adds sigma_t z")
    elif not near(c, sigma, split.tol):
        hints.append(f"the noise is scaled by {c:.4g}; DDIM eq. (16) gives sigma = {sigma:.4g} for this step")
    return "; ".join(hints) if hints else MISMATCH
