"""Chapter 5, DDPM sampling: the checker of one ancestral step (DDPM Algorithm 2, line 4).

Introduced in chapter 5.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..samplers import ddpm_step
from ..schedules import NoiseSchedule
from ._harness import (CLIPPED_X0, MISMATCH, NOISE_NOT_SCALED, CheckResult, call_reader, close, conditioning,
                       input_cases,
                       match_mistake, near, one_tensor, randn, random_check, reader_args, short_schedules, split_noise)


def check_ddpm_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, eps, t, sched, noise) -> x_prev``, one DDPM ancestral step (Algorithm 2, line 4).

    ``t`` is a Python int (one timestep for the batch), ``eps`` the noise prediction, ``noise`` the fresh z
    (B, ...). The reference is ``minidiff.ddpm_step(x_t, eps, t, sched, noise=noise)[0]``: sigma^2 = beta_tilde,
    no clipping, and no noise at t = 0. Run on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in
    float64 and float32: x_prev must keep x_t's shape and dtype.

    Introduced in chapter 5.
    """
    name = "check_ddpm_step"
    gen = torch.Generator().manual_seed(seed)
    scheds = short_schedules() + [NoiseSchedule.linear(T=1000)]
    for sched in scheds:
        for t in (sched.T - 1, sched.T // 2, 1, 0):                 # t = 0 last: other mistakes show up first
            for tail, dtype in input_cases():
                x_t, eps, noise = (randn(gen, (6, *tail), dtype) for _ in range(3))   # float64, exact in dtype
                expected = ddpm_step(x_t, eps, t, sched, noise=noise)[0]

                def fresh():
                    return reader_args(dtype, x_t, eps, t, sched, noise)

                args = fresh()                       # kept untouched, for the noise-free probe
                hint = random_check(fn, fresh(), fresh())
                if hint is None:
                    out, hint = call_reader(fn, *fresh())
                if hint is None:
                    out, hint = one_tensor(out, args[0], "x_{t-1}", "minidiff.ddpm_step")
                if hint is None and not close(out, expected, cond=conditioning(sched, t)):
                    hint = _ddpm_step_hint(fn, out, args, x_t, eps, t, sched)
                    if hint == MISMATCH:
                        err = float((out.double() - expected).abs().max())
                        hint = f"x_prev differs from minidiff.ddpm_step's (largest error {err:.3g})"
                if hint is not None:
                    return CheckResult(name, False, f"at t = {t} (paper t = {t + 1}) of a {sched.name} schedule "
                                                    f"with T = {sched.T}: {hint}")
    return CheckResult(name, True, f"matches minidiff.ddpm_step on {len(scheds)} schedules x 4 timesteps, "
                                   "t = 0 included")


def _ddpm_floats(sched: NoiseSchedule, t: int) -> tuple[float, float, float, float]:
    """(beta_t, alpha_t, alpha_bar_t, beta_tilde_t) at index ``t`` as floats; a negative t wraps, like Python."""
    return tuple(float(v[t]) for v in (sched.betas, sched.alphas, sched.alpha_bars, sched.posterior_variance))


def _ddpm_step_hint(fn, out, args, x_t, eps, t, sched) -> str:
    """Diagnose a wrong step: probe with zero noise to split it into its mean and its noise coefficient.
    ``args`` are the reader's inputs (noise last), ``x_t`` and ``eps`` the same values in float64."""
    cond = conditioning(sched, t)
    split, fail = split_noise(fn, args, out, cond)
    if fail is not None:
        return fail
    out0, c = split.out0, split.c
    mean_ref = ddpm_step(x_t, eps, t, sched, noise=torch.zeros_like(x_t))[0]
    hints = []
    m_hint = match_mistake(out0, mean_ref, _ddpm_step_mean_mistakes(x_t, eps, t, sched), cond)
    if m_hint == MISMATCH:
        m_hint = (f"the mean (your output with noise = 0) differs from (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) "
                  f"/ sqrt(alpha_t) (largest error {float((out0.double() - mean_ref).abs().max()):.3g})")
    if m_hint is not None:
        hints.append(("mean: ", m_hint))
    n_hint = NOISE_NOT_SCALED.format(sigma="sigma_t") if c is None else _ddpm_step_noise_hint(c, split.tol, t, sched)
    if n_hint is not None:
        hints.append(("noise: ", n_hint))
    if not hints:
        return MISMATCH
    if all(h.startswith("off by one") for _, h in hints):
        return hints[0][1]                                           # one cause: the whole step is shifted
    if len(hints) == 1:
        return hints[0][1]
    return "; ".join(p + h for p, h in hints)


def _ddpm_step_mean_mistakes(x, eps, t, sched) -> list:
    """(hint, wrong mean) pairs for the noise-free part of one DDPM step."""
    b, al, ab, _ = _ddpm_floats(sched, t)

    def eq11(x, eps, b, al, ab):
        return (x - b / (1 - ab) ** 0.5 * eps) / al**0.5

    mistakes = [
        ("in the factor 1/sqrt(alpha_t) you used alpha_bar_t; it is the single step's alpha_t = 1 - beta_t "
         "(sched.alphas[t]), while alpha_bar_t belongs only in the eps coefficient",
         lambda: (x - b / (1 - ab) ** 0.5 * eps) / ab**0.5),
        ("the eps coefficient is beta_t / sqrt(1 - alpha_bar_t): you divided by 1 - alpha_bar_t without the "
         "square root", lambda: (x - b / (1 - ab) * eps) / al**0.5),
        ("you forgot to divide by sqrt(alpha_t): mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)",
         lambda: x - b / (1 - ab) ** 0.5 * eps),
        ("divide by sqrt(alpha_t), not by alpha_t", lambda: (x - b / (1 - ab) ** 0.5 * eps) / al),
        ("1/sqrt(alpha_t) multiplies the whole bracket, eps term included: "
         "mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)",
         lambda: x / al**0.5 - b / (1 - ab) ** 0.5 * eps),
        ("the eps coefficient is beta_t / sqrt(1 - alpha_bar_t), not sqrt(1 - alpha_bar_t)",
         lambda: (x - (1 - ab) ** 0.5 * eps) / al**0.5),
        ("you returned x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), the model's guess of the "
         "clean data; the step goes only to x_{t-1}, the posterior mean",
         lambda: (x - (1 - ab) ** 0.5 * eps) / ab**0.5),
        ("the noise prediction is subtracted: mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)",
         lambda: (x + b / (1 - ab) ** 0.5 * eps) / al**0.5),
        ("you returned x_t unchanged (plus noise): the step must remove the predicted noise", lambda: x),
        (CLIPPED_X0, lambda: ddpm_step(x, eps, t, sched, clip_x0=1.0, noise=torch.zeros_like(x))[0]),
        ("off by one in t: you used the schedule at index t - 1 (as if t were the paper's step). Index t already "
         "is the paper's step t + 1: use sched.betas[t], sched.alphas[t], sched.alpha_bars[t]",
         lambda: eq11(x, eps, *_ddpm_floats(sched, t - 1)[:3])),
    ]
    if t + 1 < sched.T:
        mistakes.append(("off by one in t: you used the schedule at index t + 1; use sched.betas[t], "
                         "sched.alphas[t], sched.alpha_bars[t]", lambda: eq11(x, eps, *_ddpm_floats(sched, t + 1)[:3])))
    return mistakes


def _ddpm_step_noise_hint(c: float, tol: float, t: int, sched: NoiseSchedule) -> str | None:
    """A hint if the noise's coefficient ``c`` in the reader's step (known within ``tol``) is not
    sigma_t = sqrt(beta_tilde_t)."""
    b, _, _, bt = _ddpm_floats(sched, t)
    sigma = bt**0.5
    if near(c, sigma, tol):
        return None
    if t == 0:
        wrapped = (1 - float(sched.alpha_bars[-1])) / (1 - float(sched.alpha_bars[0])) * b
        if near(c, wrapped**0.5, tol) or near(c, wrapped, tol):
            return ("noise added at t = 0 because your beta_tilde there is not 0: "
                    "alpha_bars[t-1] wrapped around to the last entry. alpha_bar_{t-1} = 1 at t = 0 (x_0 is clean), "
                    "so beta_tilde = 0: use sched.alpha_bars_prev[t] (or sched.posterior_variance[t])")
        extra = " with sigma^2 = beta_t" if near(c, b**0.5, tol) else ""
        return (f"noise added at t = 0{extra}: Algorithm 2 sets z = 0 at the last step, "
                "so return the mean there (with sigma^2 = beta_tilde this happens by itself: beta_tilde = 0 at t = 0)")
    if near(c, b**0.5, tol):
        return ("you used sigma^2 = beta_t; this step uses the posterior variance sigma^2 = beta_tilde_t = "
                "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (sched.posterior_variance[t]), like "
                "md.ddpm_step's default variance='beta_tilde'")
    if near(c, bt, tol):
        return "the noise is scaled by sigma_t = sqrt(beta_tilde_t), not by the variance beta_tilde_t (no square root)"
    if near(c, b, tol):
        return ("the noise is scaled by beta_t: use sigma_t = sqrt(beta_tilde_t) (the posterior variance, and its "
                "square root)")
    if near(c, 0.0, tol):
        return "no noise was added: for t > 0 the step adds sigma_t z with sigma_t = sqrt(beta_tilde_t)"
    if near(c, -sigma, tol):
        return "you subtracted the noise: Algorithm 2 adds sigma_t z"
    if near(c, 1.0, tol):
        return "the noise is not scaled: multiply it by sigma_t = sqrt(beta_tilde_t)"
    for shift in (-1, 1):
        if 0 <= t + shift < sched.T and near(c, float(sched.posterior_variance[t + shift]) ** 0.5, tol):
            return (f"off by one in t: your sigma is sqrt(beta_tilde) at index t {'-' if shift < 0 else '+'} 1; "
                    "use sched.posterior_variance[t]")
    return f"the noise is scaled by {c:.4g}; expected sigma_t = sqrt(beta_tilde_t) = {sigma:.4g}"
