"""Chapter 2, the closed form: the checkers of q(x_t | x_0) and of the posterior q(x_{t-1} | x_t, x_0).

Introduced in chapter 2.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..forward import q_posterior, q_sample
from ._harness import (MISMATCH, RESHAPE, CheckResult, as_tensor, at_t, call_reader, check_noising_fn,
                       conditioning, input_cases, match_mistake, mismatch_summary, randn, random_timesteps,
                       reader_args, short_schedules)


def check_q_sample(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, t, sched, noise) -> x_t``, the closed form q(x_t | x_0).

    Run on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32: x_t must keep
    x0's shape and dtype.

    Introduced in chapter 2.
    """
    return check_noising_fn("check_q_sample", fn, q_sample, _q_sample_mistakes, seed,
                            "matches minidiff.q_sample on 2 schedules x 12 samples")


def _q_sample_mistakes(x0, t, sched, noise) -> list:
    """(hint, wrong x_t) pairs for x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (chapter 8 reuses
    them for RePaint's known part)."""
    a = at_t(sched.alpha_bars, t, x0)

    def form(ab, sx=True, sn=True):
        return (ab.sqrt() if sx else ab) * x0 + ((1 - ab).sqrt() if sn else 1 - ab) * noise

    return [
        ("you used alpha_bar where sqrt(alpha_bar) belongs: x_0 is scaled by sqrt(alpha_bar_t)",
         lambda: form(a, sx=False)),
        ("the noise is scaled by its standard deviation sqrt(1 - alpha_bar_t), not the variance "
         "1 - alpha_bar_t", lambda: form(a, sn=False)),
        ("both coefficients lack their square root: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps",
         lambda: form(a, sx=False, sn=False)),
        ("the noise coefficient is sqrt(1 - alpha_bar_t), not 1 - sqrt(alpha_bar_t)",
         lambda: a.sqrt() * x0 + (1 - a.sqrt()) * noise),
        ("you swapped the coefficients: sqrt(alpha_bar_t) multiplies x_0 and sqrt(1 - alpha_bar_t) the noise",
         lambda: (1 - a).sqrt() * x0 + a.sqrt() * noise),
        ("the noise is added, not subtracted: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. With -eps "
         "x_t has the right distribution, but the noise in it is no longer the eps passed in (the target a "
         "model is trained to predict)", lambda: a.sqrt() * x0 - (1 - a).sqrt() * noise),
        ("you used alphas (a single step) where alpha_bars (the cumulative product) belongs",
         lambda: form(at_t(sched.alphas, t, x0))),
        ("you used beta_t where 1 - alpha_bar_t belongs: that is one step's noise, not t steps'",
         lambda: a.sqrt() * x0 + at_t(sched.betas, t, x0).sqrt() * noise),
        ("off by one in t: you used alpha_bars[t-1]. Index t already is the paper's step t + 1, so "
         "use sched.alpha_bars[t]", lambda: form(at_t(sched.alpha_bars, t - 1, x0))),
        ("off by one in t: sched.alpha_bars_prev[t] is alpha_bar of the step before; use sched.alpha_bars[t]",
         lambda: form(at_t(sched.alpha_bars_prev, t, x0))),
        ("you used one timestep for the whole batch; t holds one index per sample: gather alpha_bars[t] "
         "and reshape it to (B, 1, ..., 1)", lambda: form(sched.alpha_bars[t[0]].to(x0.dtype))),
        ("you returned the noise scaled like x_0 is: check which term gets which coefficient",
         lambda: a.sqrt() * noise + (1 - a).sqrt() * noise),
    ]


def check_posterior(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, x_t, t, sched) -> (mean, variance)`` for q(x_{t-1} | x_t, x_0).

    ``variance`` may have shape (B,), (B, 1, ..., 1) or x's shape. Run on batches (B, D), (B, 3, 2) and image
    batches (B, C, H, W), in float64 and float32: both must keep x's dtype.

    Introduced in chapter 2.
    """
    name = "check_posterior"
    gen = torch.Generator().manual_seed(seed)
    for sched in short_schedules():
        for tail, dtype in input_cases():
            B = 12
            x0 = randn(gen, (B, *tail), dtype)                                     # float64, exact in dtype
            t = random_timesteps(sched.T, B, gen)
            x_t = q_sample(x0, t, sched, generator=gen).to(dtype).double()
            mean_ref, var_ref = q_posterior(x0, x_t, t, sched)
            var_ref = var_ref.expand_as(x0)
            x0_in, x_t_in, t_in = reader_args(dtype, x0, x_t, t)
            out, hint = call_reader(fn, x0_in, x_t_in, t_in, sched)
            if hint is None and not (isinstance(out, (tuple, list)) and len(out) == 2):
                hint = "return a pair (mean, variance)"
            if hint is None:
                mean, hint = as_tensor(out[0], x0_in, "the mean", per_sample=True)
            if hint is None:
                var, hint = _as_variance(out[1], x0_in)
            if hint is not None:
                return CheckResult(name, False, hint)
            cond = conditioning(sched, t)
            m_hint = match_mistake(mean, mean_ref, _posterior_mean_mistakes(x0, x_t, t, sched), cond)
            if m_hint == MISMATCH:
                m_hint = mismatch_summary(mean, mean_ref, t, "the mean", cond)
            v_hint = match_mistake(var, var_ref, _posterior_variance_mistakes(x0, t, sched, var_ref), cond)
            if v_hint == MISMATCH:
                v_hint = mismatch_summary(var, var_ref, t, "the variance", cond)
            hints = [h for h in (m_hint, v_hint) if h is not None]
            if hints:
                prefixes = ("mean: ", "variance: ") if len(hints) == 2 else ("", "")
                return CheckResult(name, False, "; ".join(p + h for p, h in zip(prefixes, hints)))
    return CheckResult(name, True, "mean and variance match minidiff.q_posterior on 2 schedules x 12 samples")


def _as_variance(var, x0: torch.Tensor):
    """(the reader's variance expanded to x0's shape, None), or (None, hint) when its shape or dtype is wrong."""
    full = _full_variance(var, x0)
    if isinstance(full, torch.Tensor) and full.shape != x0.shape:
        B, ones = x0.shape[0], (1,) * (x0.ndim - 1)
        return None, (f"the variance has shape {tuple(full.shape)}, expected (B,) = {(B,)}, (B, 1, ..., 1) = "
                      f"{(B, *ones)} or x's shape {tuple(x0.shape)}. The schedule's coefficient " + RESHAPE)
    return as_tensor(full, x0, "the variance", per_sample=True)


def _full_variance(var, x0: torch.Tensor):
    """The reader's variance as x0's shape, when it is a number, (B,) or (B, 1, ..., 1); else unchanged."""
    B = x0.shape[0]
    if isinstance(var, (int, float)):
        var = torch.full((B,), float(var), dtype=x0.dtype)
    if isinstance(var, torch.Tensor) and var.shape == (B,):
        var = var.view(B, *([1] * (x0.ndim - 1)))                                  # (B, 1, ..., 1)
    if isinstance(var, torch.Tensor) and var.ndim == x0.ndim:
        try:
            var = var.expand_as(x0)
        except RuntimeError:
            pass
    return var


def _posterior_terms(x0: torch.Tensor, t: torch.Tensor, sched) -> tuple[torch.Tensor, ...]:
    """beta_t, alpha_t, alpha_bar_t, alpha_bar_{t-1}, and alpha_bars[t-1] as Python's wrapping index gives it
    (the last entry at t = 0); each (B, 1, ..., 1)."""
    return (at_t(sched.betas, t, x0), at_t(sched.alphas, t, x0), at_t(sched.alpha_bars, t, x0),
            at_t(sched.alpha_bars_prev, t, x0), at_t(sched.alpha_bars, t - 1, x0))


def _posterior_variance_mistakes(x0, t, sched, var_ref) -> list:
    """(hint, wrong variance) pairs for beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t."""
    b, _, ab, abp, abp_wrap = _posterior_terms(x0, t, sched)
    return [
        ("you returned beta_t, the forward step's variance. The posterior's is "
         "beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t", lambda: b.expand_as(x0)),
        ("the ratio is upside down: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t",
         lambda: ((1 - ab) / (1 - abp) * b).expand_as(x0)),
        ("you returned a standard deviation; the variance is beta_tilde_t itself (no square root)",
         lambda: var_ref.sqrt()),
        ("wrong at t = 0 (paper t = 1): alpha_bars[t-1] wrapped around to the last entry. There "
         "alpha_bar_{t-1} = 1 (x_0 is clean) and the variance is 0: use sched.alpha_bars_prev[t]",
         lambda: ((1 - abp_wrap) / (1 - ab) * b).expand_as(x0)),
        ("off by one in t: you used the schedule at t+1 or t-1 throughout; index t is the paper's step t + 1",
         lambda: ((1 - ab) / (1 - at_t(sched.alpha_bars, t + 1, x0)) * at_t(sched.betas, t + 1, x0)).expand_as(x0)),
    ]


def _posterior_mean_mistakes(x0, x_t, t, sched) -> list:
    """(hint, wrong mean) pairs for mu_tilde_t = c0 x_0 + ct x_t (DDPM eq. 7)."""
    b, al, ab, abp, abp_wrap = _posterior_terms(x0, t, sched)
    c0 = b * abp.sqrt() / (1 - ab)
    ct = (1 - abp) * al.sqrt() / (1 - ab)
    return [
        ("you swapped the coefficients of x_0 and x_t in the mean", lambda: ct * x0 + c0 * x_t),
        ("the x_t coefficient uses sqrt(alpha_t) (one step), not sqrt(alpha_bar_t)",
         lambda: c0 * x0 + (1 - abp) * ab.sqrt() / (1 - ab) * x_t),
        ("the x_0 coefficient uses sqrt(alpha_bar_{t-1}), not alpha_bar_{t-1}",
         lambda: b * abp / (1 - ab) * x0 + ct * x_t),
        ("the x_t coefficient uses sqrt(alpha_t), not alpha_t",
         lambda: c0 * x0 + (1 - abp) * al / (1 - ab) * x_t),
        ("wrong at t = 0 (paper t = 1): alpha_bars[t-1] wrapped around to the last entry. There the "
         "posterior mean is x_0 itself: use sched.alpha_bars_prev[t]",
         lambda: b * abp_wrap.sqrt() / (1 - ab) * x0 + (1 - abp_wrap) * al.sqrt() / (1 - ab) * x_t),
        ("you returned x_t unchanged; the mean mixes x_0 and x_t", lambda: x_t),
    ]
