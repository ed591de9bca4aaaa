"""Chapter 9, the score and the SDE: the checkers of Tweedie's score and of one Euler-Maruyama step of the
reverse VP-SDE.

Introduced in chapter 9.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..schedules import NoiseSchedule
from ..sde import reverse_sde_step, score_from_eps
from ._harness import (MISMATCH, NOISE_NOT_SCALED, CheckResult, as_tensor, at_t, call_reader, close, conditioning,
                       input_cases, match_mistake, mismatch_summary, near, one_tensor, randn, random_check,
                       random_timesteps, reader_args, short_schedules, split_noise)


def _schedules() -> list[NoiseSchedule]:
    return short_schedules() + [NoiseSchedule.linear(T=1000)]


# ------------------------------------------------------------------------------------------ Tweedie's score
def check_score_from_eps(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(eps, t, sched) -> score``, Tweedie's formula -eps / sqrt(1 - alpha_bar_t).

    ``t`` is a (B,) tensor of timestep indices, one per sample, both ends included. The reference is
    :func:`minidiff.score_from_eps` with alpha_bar_t shaped to broadcast. Run on 2 short schedules and the linear
    T = 1000 one, on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32: the score
    must keep eps's shape and dtype.

    Introduced in chapter 9.
    """
    name = "check_score_from_eps"
    gen = torch.Generator().manual_seed(seed)
    scheds = _schedules()
    for sched in scheds:
        for tail, dtype in input_cases():
            eps = randn(gen, (12, *tail), dtype)                                       # float64, exact in dtype
            t = random_timesteps(sched.T, 12, gen)
            a = at_t(sched.alpha_bars.double(), t, eps)                                # (B, 1, ...)
            expected = score_from_eps(eps, a)

            def fresh():
                return reader_args(dtype, eps, t, sched)

            args = fresh()
            hint = random_check(fn, fresh(), fresh())
            if hint is None:
                out, hint = call_reader(fn, *args)
            if hint is None and not torch.equal(args[0], eps.to(dtype)):
                hint = ("your function changed eps in place (an in-place op such as eps /= ... or .div_()): "
                        "return a new tensor and leave eps as it was")
            if hint is None:
                out, hint = as_tensor(out, args[0], "the score", per_sample=True)
            if hint is None:
                cond = conditioning(sched, t)
                hint = match_mistake(out, expected, _score_mistakes(eps, t, sched), cond)
                if hint == MISMATCH:
                    hint = mismatch_summary(out, expected, t, "the score", cond)
            if hint is not None:
                return CheckResult(name, False, f"on a {sched.name} schedule with T = {sched.T}: {hint}")
    return CheckResult(name, True, f"matches minidiff.score_from_eps on {len(scheds)} schedules, t = 0 and T - 1 "
                                   "included")


def _score_mistakes(eps: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule) -> list:
    """(hint, wrong score) pairs: the usual ways of getting Tweedie's formula wrong."""
    ab = sched.alpha_bars.double()
    a = at_t(ab, t, eps)
    b = at_t(sched.betas.double(), t, eps)
    mistakes = [
        ("the sign: the score points towards higher density, against the noise: score = -eps / sqrt(1 - alpha_bar_t)",
         lambda: eps / (1 - a).sqrt()),
        ("divide by sqrt(1 - alpha_bar_t), the noise's standard deviation, not by its variance 1 - alpha_bar_t",
         lambda: -eps / (1 - a)),
        ("you multiplied by sqrt(1 - alpha_bar_t): that is the inverse conversion, eps = -sqrt(1 - alpha_bar_t) "
         "score. The score is -eps / sqrt(1 - alpha_bar_t)", lambda: -eps * (1 - a).sqrt()),
        ("you divided by sqrt(alpha_bar_t), the signal's scale; the score divides by the noise's standard "
         "deviation sqrt(1 - alpha_bar_t)", lambda: -eps / a.sqrt()),
        ("you used beta_t, the one-step noise variance; Tweedie's formula uses the noise of x_t given x_0, "
         "1 - alpha_bar_t", lambda: -eps / b.sqrt()),
        ("you returned -eps: the score is -eps divided by sqrt(1 - alpha_bar_t)", lambda: -eps),
        ("the factor is 1 / sqrt(1 - alpha_bar_t), not sqrt(alpha_bar_t) / (1 - alpha_bar_t)",
         lambda: -eps * a.sqrt() / (1 - a)),
    ]
    prev = at_t(torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]]), t, eps)      # 1 at t = 0: inf there
    mistakes.append(("off by one in t: you used alpha_bar at index t - 1. Index t already is the paper's "
                     "step t + 1: use sched.alpha_bars[t]", lambda: -eps / (1 - prev).sqrt()))
    nxt = at_t(torch.cat([ab[1:], ab[-1:]]), t, eps)
    mistakes.append(("off by one in t: you used alpha_bar at index t + 1; use sched.alpha_bars[t]",
                     lambda: -eps / (1 - nxt).sqrt()))
    return mistakes


# ------------------------------------------------------------------------------------------ the reverse SDE
def check_reverse_sde_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, eps, t, sched, noise) -> x_prev``, one Euler-Maruyama step of the reverse VP-SDE.

    ``t`` is a Python int (one timestep for the batch), ``eps`` the noise prediction at x_t and ``noise`` the
    fresh z (B, ...). The reference is ``minidiff.sde.reverse_sde_step(x_t, eps, beta_t, alpha_bar_t, noise)``::

        x_prev = x_t + 1/2 beta_t x_t + beta_t score + sqrt(beta_t) z
        score = -eps / sqrt(1 - alpha_bar_t)

    with the noise added at every t (a sampler passes zeros at its last step). Run at t = T - 1, T // 2, 1 and
    0 of 2 short schedules and the linear T = 1000 one, on batches (B, D), (B, 3, 2) and image batches
    (B, C, H, W), in float64 and float32: x_prev must keep x_t's shape and dtype.

    Introduced in chapter 9.
    """
    name = "check_reverse_sde_step"
    gen = torch.Generator().manual_seed(seed)
    scheds = _schedules()
    for sched in scheds:
        for t in (sched.T - 1, sched.T // 2, 1, 0):
            beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
            for tail, dtype in input_cases():
                x_t, eps, noise = (randn(gen, (6, *tail), dtype) for _ in range(3))   # float64, exact in dtype
                expected = reverse_sde_step(x_t, eps, beta, a, noise)

                def fresh():
                    return reader_args(dtype, x_t, eps, t, sched, noise)

                args = fresh()
                hint = random_check(fn, fresh(), fresh())
                if hint is None:
                    out, hint = call_reader(fn, *fresh())
                if hint is None:
                    out, hint = one_tensor(out, args[0], "x_{t-1}", "minidiff.sde.reverse_sde_step")
                if hint is None and not close(out, expected, cond=conditioning(sched, t)):
                    hint = _reverse_sde_hint(fn, out, args, x_t, eps, t, sched)
                    if hint == MISMATCH:
                        err = float((out.double() - expected).abs().max())
                        hint = f"x_prev differs from minidiff.sde.reverse_sde_step's (largest error {err:.3g})"
                if hint is not None:
                    return CheckResult(name, False, f"at t = {t} of a {sched.name} schedule with T = {sched.T}: "
                                                    f"{hint}")
    return CheckResult(name, True, f"matches minidiff.sde.reverse_sde_step on {len(scheds)} schedules x 4 "
                                   "timesteps, t = 0 included")


def _reverse_sde_hint(fn, out, args, x, eps, t, sched) -> str:
    """Diagnose a wrong step: split it into its noise-free drift and its noise coefficient."""
    cond = conditioning(sched, t)
    split, fail = split_noise(fn, args, out, cond)
    if fail is not None:
        return fail
    beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
    drift_ref = reverse_sde_step(x, eps, beta, a, None)
    hints = []
    d_hint = match_mistake(split.out0, drift_ref, _drift_mistakes(x, eps, t, sched), cond)
    if d_hint == MISMATCH:
        d_hint = (f"the drift (your output with noise = 0) differs from x_t + 1/2 beta_t x_t + beta_t score "
                  f"(largest error {float((split.out0.double() - drift_ref).abs().max()):.3g})")
    if d_hint is not None:
        hints.append("drift: " + d_hint)
    c = split.c
    n_hint = NOISE_NOT_SCALED.format(sigma="sqrt(beta_t)") if c is None else _noise_hint(c, split.tol, t, sched)
    if n_hint is not None:
        hints.append("noise: " + n_hint)
    if not hints:
        return MISMATCH
    return hints[0].split(": ", 1)[1] if len(hints) == 1 else "; ".join(hints)


def _drift_mistakes(x, eps, t, sched) -> list:
    """(hint, wrong noise-free step) pairs for the reverse SDE's drift."""
    beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
    score = -eps / (1 - a) ** 0.5

    def step(b, ab):
        return x + 0.5 * b * x + b * (-eps / (1 - ab) ** 0.5)

    mistakes = [
        ("you halved the score's coefficient: x_t + 1/2 beta (x_t + score) is the probability-flow ODE's step. "
         "The reverse SDE's drift has beta_t score, twice the ODE's, because its noise spreads the samples again",
         lambda: x + 0.5 * beta * (x + score)),
        ("the score enters with a plus sign (it points towards the data): x_t + 1/2 beta_t x_t + beta_t score, "
         "with score = -eps / sqrt(1 - alpha_bar_t)", lambda: x + 0.5 * beta * x - beta * score),
        ("the x term: going back in time the drift -1/2 beta x of the forward SDE changes sign, so the step adds "
         "+1/2 beta_t x_t", lambda: x - 0.5 * beta * x + beta * score),
        ("you left out the 1/2 beta_t x_t term, the reversal of the forward SDE's drift -1/2 beta x",
         lambda: x + beta * score),
        ("the score is -eps / sqrt(1 - alpha_bar_t): you divided by 1 - alpha_bar_t without the square root",
         lambda: x + 0.5 * beta * x - beta * eps / (1 - a)),
        ("you used -eps as the score; Tweedie's formula divides it by sqrt(1 - alpha_bar_t)",
         lambda: x + 0.5 * beta * x - beta * eps),
        ("that is DDPM's posterior mean (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t), which "
         "agrees with the Euler-Maruyama step only to first order in beta_t; the exercise asks for "
         "x_t + 1/2 beta_t x_t + beta_t score", lambda: (x - beta / (1 - a) ** 0.5 * eps) / (1 - beta) ** 0.5),
    ]
    if t >= 1:
        mistakes.append(("off by one in t: you used the schedule at index t - 1; use sched.betas[t] and "
                         "sched.alpha_bars[t]", lambda: step(float(sched.betas[t - 1]), float(sched.alpha_bars[t - 1]))))
    if t + 1 < sched.T:
        mistakes.append(("off by one in t: you used the schedule at index t + 1; use sched.betas[t] and "
                         "sched.alpha_bars[t]", lambda: step(float(sched.betas[t + 1]), float(sched.alpha_bars[t + 1]))))
    return mistakes


def _noise_hint(c: float, tol: float, t: int, sched: NoiseSchedule) -> str | None:
    """A hint if the noise's coefficient ``c`` (known within ``tol``) is not sqrt(beta_t)."""
    beta = float(sched.betas[t])
    if near(c, beta**0.5, tol):
        return None
    if near(c, 0.0, tol):
        return ("no noise was added: the reverse SDE adds g dW = sqrt(beta_t) z at every step (the sampler, not "
                "the step, leaves it out at the end). Without noise and with half the score it is the ODE")
    if near(c, beta, tol):
        return "the noise is scaled by sqrt(beta_t), the standard deviation of g dW over one step, not by beta_t"
    if near(c, -beta**0.5, tol):
        return "you subtracted the noise: add sqrt(beta_t) z"
    if near(c, 1.0, tol):
        return "the noise is not scaled: multiply it by sqrt(beta_t)"
    if near(c, float(sched.posterior_variance[t]) ** 0.5, tol) and t > 0:
        return ("you used DDPM's sigma_t = sqrt(beta_tilde_t); the Euler-Maruyama step of the SDE adds "
                "sqrt(beta_t) z, its diffusion coefficient g = sqrt(beta) over one unit of time")
    return f"the noise is scaled by {c:.4g}; expected sqrt(beta_t) = {beta ** 0.5:.4g}"
