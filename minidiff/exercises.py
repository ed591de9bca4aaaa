"""Auto-checks for the chapters' coding exercises.

Each ``check_*`` function runs the reader's function on random inputs, compares it with the package (the
single source of truth) and returns a :class:`CheckResult`: a pass, or a specific hint about what is wrong.
The hints come from recomputing the answer with the usual mistakes (``alpha_bar`` where ``sqrt(alpha_bar)``
belongs, an index off by one, the wrong target, ...) and seeing which one the reader's output matches.

    >>> from minidiff.exercises import check_q_sample
    >>> check_q_sample(my_q_sample)          # doctest: +SKIP
    PASS check_q_sample: matches minidiff.q_sample on 4 schedules x 12 samples

Signatures the checkers expect (positional arguments, same meaning as in the package):

===================  =============================================  ===================================
checker              your function                                  package reference
===================  =============================================  ===================================
check_alpha_bars     ``fn(betas) -> alpha_bars``                    ``NoiseSchedule(betas).alpha_bars``
check_q_step         ``fn(x_prev, t, sched, noise) -> x_t``          :func:`minidiff.q_step`
check_q_sample       ``fn(x0, t, sched, noise) -> x_t``              :func:`minidiff.q_sample`
check_posterior      ``fn(x0, x_t, t, sched) -> (mean, variance)``   :func:`minidiff.q_posterior`
check_eps_loss       ``fn(model, x0, sched, t, noise) -> loss``      :func:`minidiff.eps_loss`
check_ddpm_step      ``fn(x_t, eps, t, sched, noise) -> x_prev``    :func:`minidiff.ddpm_step`
check_cfg_combine    ``fn(eps_uncond, eps_cond, scale) -> eps``      :func:`minidiff.cfg_combine`
===================  =============================================  ===================================

Introduced in chapters 1-3.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .forward import q_posterior, q_sample, q_step
from .losses import eps_loss
from .schedules import NoiseSchedule

__all__ = ["CheckResult", "check_alpha_bars", "check_q_step", "check_q_sample", "check_posterior",
           "check_eps_loss"]

RTOL, ATOL = 1e-4, 1e-6


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check: ``passed`` and a message (the hint when it failed). Truthy when passed."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.message}"

    __str__ = __repr__


# ------------------------------------------------------------------------------------------ test inputs
def _schedules() -> list[NoiseSchedule]:
    """Short schedules with large betas, so that every typical mistake changes the numbers visibly."""
    return [
        NoiseSchedule.linear(T=20, beta_start=0.01, beta_end=0.3),
        NoiseSchedule.cosine(T=16),
    ]


def _timesteps(T: int, B: int, gen: torch.Generator) -> torch.Tensor:
    """(B,) indices that always include both ends, 0 and T-1, and differ between samples."""
    t = torch.randint(0, T, (B,), generator=gen)
    t[0], t[1] = 0, T - 1
    return t


def _bcast(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against ``like`` (negative indices wrap, like Python)."""
    return values.to(like.dtype)[t].view(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------------------------ comparisons
def _call(fn: Callable, *args):
    """Run the reader's function; return (output, None) or (None, hint)."""
    try:
        return fn(*args), None
    except IndexError as err:
        return None, (f"your function raised IndexError ({err}). Timesteps are 0-based indices in [0, T-1]: "
                      "use sched.alpha_bars[t] directly; t + 1 runs off the end at t = T-1")
    except RuntimeError as err:
        hint = f"your function raised RuntimeError: {err}"
        if "must match the size" in str(err):
            hint += (". A broadcasting error: alpha_bars[t] has shape (B,); reshape it to (B, 1, ..., 1) so it "
                     "broadcasts against x, which has shape (B, ...)")
        return None, hint
    except Exception as err:  # noqa: BLE001 - any error is reported to the reader as a hint
        return None, f"your function raised {type(err).__name__}: {err}"


def _as_tensor(out, like: torch.Tensor, what: str):
    """(tensor, None) or (None, hint) for an output that should have ``like``'s shape."""
    if not isinstance(out, torch.Tensor):
        return None, f"{what} should be a torch.Tensor, got {type(out).__name__}"
    if out.shape != like.shape:
        hint = f"{what} has shape {tuple(out.shape)}, expected {tuple(like.shape)}"
        if out.ndim != like.ndim or out.numel() != like.numel():
            hint += (". Index the schedule per sample (values[t], shape (B,)) and reshape it to "
                     "(B, 1, ..., 1) so it broadcasts against x")
        return None, hint
    return out.to(like.dtype), None


def _one_tensor(out, like: torch.Tensor, what: str, package_fn: str):
    """(tensor, None) if ``out`` is one tensor like ``like``; else (out, hint). For the sampler-step checkers,
    whose package functions return the pair (x_prev, x0_hat) while the exercise returns x_prev alone."""
    if isinstance(out, (tuple, list)):
        return out, (f"return only {what}, one tensor ({package_fn} returns the pair (x_prev, x0_hat); the "
                     "exercise's function returns x_prev alone)")
    return _as_tensor(out, like, "x_prev")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def _match(out: torch.Tensor, expected: torch.Tensor, mistakes: Sequence[tuple[str, Callable[[], torch.Tensor]]]):
    """None when ``out`` equals ``expected``; else the hint of the first mistake it equals, else a summary."""
    if _close(out, expected):
        return None
    for hint, make in mistakes:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 - a variant that cannot be formed is simply not this mistake
            continue
        if _close(out, wrong.to(out.dtype)):
            return hint
    return "mismatch"


def _summary(out: torch.Tensor, expected: torch.Tensor, t: torch.Tensor, what: str) -> str:
    """A hint for a mistake not in the catalogue: how large the error is and at which timesteps."""
    err = (out - expected).abs().reshape(out.shape[0], -1).amax(dim=1)          # (B,)
    bad = err > ATOL + RTOL * expected.abs().reshape(out.shape[0], -1).amax(dim=1)
    where = sorted({int(i) for i in t[bad]})
    msg = f"{what} differs from the package's (largest error {float(err.max()):.3g})"
    if where == [0]:
        return msg + ("; it is wrong only at t = 0 (the paper's t = 1). There alpha_bar_{t-1} is 1: x_0 is the "
                      "clean data. Use sched.alpha_bars_prev[t], which starts with 1.0")
    if len(where) <= 6:
        msg += f"; wrong at t = {where}"
    return msg


def _random_check(fn: Callable, args_a: tuple, args_b: tuple) -> str | None:
    """A hint if the same inputs give different outputs (the function drew its own noise or timesteps)."""
    a, _ = _call(fn, *args_a)
    b, _ = _call(fn, *args_b)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and not _close(a, b):
        return ("two calls with the same inputs gave different results: your function draws its own random "
                "numbers. Use the noise (and t) passed in as arguments")
    return None


def _result(name: str, hint: str | None, ok_message: str) -> CheckResult:
    return CheckResult(name, hint is None, ok_message if hint is None else hint)


# ------------------------------------------------------------------------------------------ chapter 1
def check_alpha_bars(fn: Callable[[torch.Tensor], torch.Tensor], *, seed: int = 0) -> CheckResult:
    """Check ``fn(betas) -> alpha_bars`` (shape (T,)), alpha_bar_t = prod_{s<=t} (1 - beta_s). Chapter 1."""
    name = "check_alpha_bars"
    for sched in _schedules():
        betas = sched.betas.clone()
        out, hint = _call(fn, betas.clone())
        if hint is None:
            out, hint = _as_tensor(out, betas, "alpha_bars")
        if hint is None:
            alphas = 1 - betas
            hint = _match(out, sched.alpha_bars, [
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
            ])
            if hint == "mismatch":
                bad = ~torch.isclose(out, sched.alpha_bars, rtol=RTOL, atol=ATOL)
                first = int(bad.nonzero()[0])
                hint = (f"alpha_bars differs from the package's first at index {first} (paper t = {first + 1}): "
                        f"got {float(out[first]):.6g}, expected {float(sched.alpha_bars[first]):.6g}")
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches NoiseSchedule(betas).alpha_bars on a linear and a cosine schedule")


def _check_noising_fn(name: str, fn: Callable, reference: Callable, mistakes: Callable, seed: int,
                      passed: str) -> CheckResult:
    """Shared driver of :func:`check_q_step` and :func:`check_q_sample`.

    On each schedule: draw x (B, 3, 2), noise and t; call ``fn(x, t, sched, noise)``; compare with
    ``reference(x, t, sched, noise=noise)``; on a mismatch, name the first of ``mistakes(x, t, sched, noise)``
    (a list of (hint, wrong-formula)) that reproduces the reader's output.
    """
    gen = torch.Generator().manual_seed(seed)
    for sched in _schedules():
        B = 12
        x = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
        noise = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
        t = _timesteps(sched.T, B, gen)
        expected = reference(x, t, sched, noise=noise)
        hint = _random_check(fn, (x.clone(), t.clone(), sched, noise.clone()),
                             (x.clone(), t.clone(), sched, noise.clone()))
        if hint is None:
            out, hint = _call(fn, x.clone(), t.clone(), sched, noise.clone())
        if hint is None:
            out, hint = _as_tensor(out, x, "x_t")
        if hint is None:
            hint = _match(out, expected, mistakes(x, t, sched, noise))
            if hint == "mismatch":
                hint = _summary(out, expected, t, "x_t")
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, passed)


def _q_step_mistakes(x, t, sched, noise) -> list:
    b = _bcast(sched.betas, t, x)
    ab = _bcast(sched.alpha_bars, t, x)
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
        ("that is the closed form q(x_t | x_0) with alpha_bar_t; one step uses beta_t alone",
         lambda: ab.sqrt() * x + (1 - ab).sqrt() * noise),
        ("off by one in t: you used betas[t-1]; index t is the step being taken (paper step t + 1)",
         lambda: (1 - _bcast(sched.betas, t - 1, x)).sqrt() * x + _bcast(sched.betas, t - 1, x).sqrt() * noise),
        ("you used one timestep for the whole batch; t holds one index per sample",
         lambda: (1 - sched.betas[t[0]]).sqrt() * x + sched.betas[t[0]].sqrt() * noise),
    ]


def check_q_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_prev, t, sched, noise) -> x_t``, one forward step q(x_t | x_{t-1}). Chapter 1."""
    return _check_noising_fn("check_q_step", fn, q_step, _q_step_mistakes, seed,
                             "matches minidiff.q_step on 2 schedules x 12 samples")


# ------------------------------------------------------------------------------------------ chapter 2
def _q_sample_mistakes(x0, t, sched, noise) -> list:
    a = _bcast(sched.alpha_bars, t, x0)

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
        ("you used alphas (a single step) where alpha_bars (the cumulative product) belongs",
         lambda: form(_bcast(sched.alphas, t, x0))),
        ("you used beta_t where 1 - alpha_bar_t belongs: that is one step's noise, not t steps'",
         lambda: form(1 - _bcast(sched.betas, t, x0))),
        ("off by one in t: you used alpha_bars[t-1]. Index t already is the paper's step t + 1, so "
         "use sched.alpha_bars[t]", lambda: form(_bcast(sched.alpha_bars, t - 1, x0))),
        ("off by one in t: sched.alpha_bars_prev[t] is alpha_bar of the step before; use sched.alpha_bars[t]",
         lambda: form(_bcast(sched.alpha_bars_prev, t, x0))),
        ("you used one timestep for the whole batch; t holds one index per sample: gather alpha_bars[t] "
         "and reshape it to (B, 1, ..., 1)", lambda: form(sched.alpha_bars[t[0]].to(x0.dtype))),
        ("you returned the noise scaled like x_0 is: check which term gets which coefficient",
         lambda: a.sqrt() * noise + (1 - a).sqrt() * noise),
    ]


def check_q_sample(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, t, sched, noise) -> x_t``, the closed form q(x_t | x_0). Chapter 2."""
    return _check_noising_fn("check_q_sample", fn, q_sample, _q_sample_mistakes, seed,
                             "matches minidiff.q_sample on 2 schedules x 12 samples")


def check_posterior(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x0, x_t, t, sched) -> (mean, variance)`` for q(x_{t-1} | x_t, x_0). Chapter 2.

    ``variance`` may have shape (B,), (B, 1, ..., 1) or x's shape.
    """
    name = "check_posterior"
    gen = torch.Generator().manual_seed(seed)
    for sched in _schedules():
        B = 12
        x0 = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
        t = _timesteps(sched.T, B, gen)
        x_t = q_sample(x0, t, sched, generator=gen)
        mean_ref, var_ref = q_posterior(x0, x_t, t, sched)
        var_ref = var_ref.expand_as(x0)
        out, hint = _call(fn, x0.clone(), x_t.clone(), t.clone(), sched)
        if hint is None and not (isinstance(out, (tuple, list)) and len(out) == 2):
            hint = "return a pair (mean, variance)"
        if hint is None:
            mean, var = out
            if isinstance(var, (int, float)):
                var = torch.full((B,), float(var), dtype=x0.dtype)
            if isinstance(var, torch.Tensor) and var.shape == (B,):
                var = var.view(B, 1, 1)
            if isinstance(var, torch.Tensor) and var.ndim == x0.ndim:
                try:
                    var = var.expand_as(x0)
                except RuntimeError:
                    pass
            mean, hint = _as_tensor(mean, x0, "the mean")
        if hint is None:
            var, hint = _as_tensor(var, x0, "the variance")
        if hint is not None:
            return CheckResult(name, False, hint)

        def g(values, shift=0):
            return _bcast(values, t + shift, x0)

        b, al, ab, abp = g(sched.betas), g(sched.alphas), g(sched.alpha_bars), g(sched.alpha_bars_prev)
        abp_wrap = g(sched.alpha_bars, -1)                     # alpha_bars[t-1], wrapping at t = 0
        v_hint = _match(var, var_ref, [
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
             lambda: ((1 - ab) / (1 - g(sched.alpha_bars, 1)) * g(sched.betas, 1)).expand_as(x0)),
        ])
        if v_hint == "mismatch":
            v_hint = _summary(var, var_ref, t, "the variance")
        c0 = b * abp.sqrt() / (1 - ab)
        ct = (1 - abp) * al.sqrt() / (1 - ab)
        m_hint = _match(mean, mean_ref, [
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
        ])
        if m_hint == "mismatch":
            m_hint = _summary(mean, mean_ref, t, "the mean")
        hints = [h for h in (m_hint, v_hint) if h is not None]
        if hints:
            prefixes = ("mean: ", "variance: ") if len(hints) == 2 else ("", "")
            return CheckResult(name, False, "; ".join(p + h for p, h in zip(prefixes, hints)))
    return CheckResult(name, True, "mean and variance match minidiff.q_posterior on 2 schedules x 12 samples")


# ------------------------------------------------------------------------------------------ chapter 3
class _ProbeModel:
    """A fixed, deterministic stand-in for a network: depends on x_t and on t, and records the calls."""

    def __init__(self, T: int):
        self.T = T
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, y=None):
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone()))
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))     # (B, 1, ...)
        return 0.6 * x - 0.3 * torch.tanh(x) + 0.5 * tt / self.T


def check_eps_loss(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(model, x0, sched, t, noise) -> loss``, the scalar L_simple of one batch. Chapter 3.

    The reference is ``minidiff.eps_loss(model, x0, sched, t=t, noise=noise)``: the mean over the batch and
    all dimensions of (eps - model(x_t, t))^2.
    """
    name = "check_eps_loss"
    gen = torch.Generator().manual_seed(seed)
    for sched in _schedules():
        B = 12
        x0 = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
        noise = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
        t = _timesteps(sched.T, B, gen)
        probe = _ProbeModel(sched.T)
        expected = eps_loss(probe, x0, sched, t=t, noise=noise)
        model = _ProbeModel(sched.T)
        hint = _random_check(fn, (model, x0.clone(), sched, t.clone(), noise.clone()),
                             (model, x0.clone(), sched, t.clone(), noise.clone()))
        if hint is None:
            model.calls.clear()
            out, hint = _call(fn, model, x0.clone(), sched, t.clone(), noise.clone())
        if hint is None:
            if not isinstance(out, torch.Tensor):
                hint = f"return the loss as a torch.Tensor, got {type(out).__name__}"
            elif out.numel() != 1:
                hint = (f"return one number (a 0-d tensor), got shape {tuple(out.shape)}: take the mean over the "
                        "batch and every dimension")
        if hint is None:
            out = out.reshape(()).to(torch.float64)
            hint = _eps_loss_hint(out, expected.to(torch.float64), model, probe, x0, noise, t, sched)
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches minidiff.eps_loss on 2 schedules x 12 samples")


def _eps_loss_hint(out, expected, model, probe, x0, noise, t, sched) -> str | None:
    if _close(out, expected):
        return None
    # What did the reader feed the model?
    if model.calls:
        x_in, t_in = model.calls[-1]
        x_ref, t_ref = probe.calls[-1]
        if x_in.shape == x_ref.shape and not _close(x_in.to(x_ref.dtype), x_ref):
            if _close(x_in.to(x0.dtype), x0):
                return "the model must see the noisy x_t, not the clean x_0"
            a = _bcast(sched.alpha_bars, t, x0)
            if _close(x_in.to(x0.dtype), a * x0 + (1 - a).sqrt() * noise):
                return "the noisy input is wrong: you used alpha_bar where sqrt(alpha_bar) belongs in x_t"
            if _close(x_in.to(x0.dtype), a.sqrt() * x0 + (1 - a) * noise):
                return "the noisy input is wrong: the noise is scaled by sqrt(1 - alpha_bar_t), not 1 - alpha_bar_t"
            return ("the model's input x_t is not sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; "
                    "check it against minidiff.q_sample(x0, t, sched, noise=noise)")
        if t_in.shape == t_ref.shape and not torch.equal(t_in.to(t_ref.dtype), t_ref):
            diff = (t_in.to(torch.float64) - t_ref.to(torch.float64)).unique()
            if diff.numel() == 1 and float(diff) == 1:
                return "you passed t + 1 (the paper's step) to the model; models take the 0-based index t"
            if diff.numel() == 1 and float(diff) == -1:
                return "you passed t - 1 to the model; models take the same 0-based index t used for x_t"
            return "the model was called with different timesteps than the t passed in"
    eps_hat = probe(probe.calls[-1][0], t)
    x_t = probe.calls[-1][0]
    err = eps_hat - noise
    D = x0[0].numel()
    variants = [
        ("you compared the prediction with x_0; in L_simple the target is the noise eps",
         ((eps_hat - x0) ** 2).mean()),
        ("you compared the prediction with x_t; in L_simple the target is the noise eps",
         ((eps_hat - x_t) ** 2).mean()),
        ("you used |eps - eps_hat| (an L1 loss); L_simple is the mean squared error", err.abs().mean()),
        ("you took a square root (an RMS error); L_simple is the mean of the squared errors",
         (err**2).mean().sqrt()),
        ("you summed the squared errors; L_simple here is their mean over the batch and all dimensions",
         (err**2).sum()),
        (f"you summed over each sample's {D} dimensions and averaged over the batch; minidiff.eps_loss averages "
         "over the dimensions too (the two differ by a constant factor)", (err**2).reshape(len(x0), -1).sum(1).mean()),
    ]
    for hint, value in variants:
        if _close(out, value.to(out.dtype)):
            return hint
    return f"the loss is {float(out):.6g}, but minidiff.eps_loss gives {float(expected):.6g} on the same inputs"


# ------------------------------------------------------------------------------------------ chapter 4
# (chapter 4 checkers go here; extend __all__ with `__all__ += [...]` in this section)
import itertools  # noqa: E402 - kept in this chapter's section
import math  # noqa: E402

from .unet import timestep_embedding  # noqa: E402

__all__ += ["check_timestep_embedding"]

_EMB_ATOL = 1e-3      # float32 sin/cos of arguments up to ~1000 carry errors of ~1e-4; every mistake is far larger
_EMB_DEFAULT = dict(order="sin_cos", denom="half - 1", t_shift=0, t_scale=1.0, max_period=10000.0, sign=-1)
_EMB_OPTIONS = dict(order=("sin_cos", "cos_sin", "interleaved", "interleaved_cos"), denom=("half - 1", "half"),
                    t_shift=(0, 1), t_scale=(1.0, 1e-3, 1e3), sign=(-1, 1),
                    max_period=(10000.0, 1000.0, 100.0, 10.0, 1e5, math.exp(4.0)))


def _embedding_variant(t: torch.Tensor, dim: int, *, order, denom, t_shift, t_scale, max_period, sign):
    """The sinusoidal embedding (B, dim) in float64, written with one choice per convention."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)                                    # (half,)
    d = max(half - 1, 1) if denom == "half - 1" else half
    freqs = torch.exp(sign * math.log(max_period) * i / d)                         # (half,)
    args = ((t.to(torch.float64) + t_shift) * t_scale)[:, None] * freqs[None, :]   # (B, half)
    s, c = args.sin(), args.cos()
    if order == "sin_cos":
        emb = torch.cat([s, c], dim=1)
    elif order == "cos_sin":
        emb = torch.cat([c, s], dim=1)
    else:
        pair = (s, c) if order == "interleaved" else (c, s)
        emb = torch.stack(pair, dim=2).reshape(len(t), 2 * half)                   # sin f0, cos f0, sin f1, ...
    return torch.nn.functional.pad(emb, (0, dim % 2))                              # (B, dim)


def _embedding_hint(name: str, value) -> str:
    if name == "order":
        return {
            "cos_sin": "the halves are swapped: minidiff puts the sines first, [sin(t f_0) ... sin(t f_{half-1}), "
                       "cos(t f_0) ... cos(t f_{half-1})] (DDPM's order; guided-diffusion puts the cosines first)",
            "interleaved": "you interleaved sin and cos (sin t f_0, cos t f_0, sin t f_1, ...); minidiff "
                           "concatenates them: all the sines, then all the cosines",
            "interleaved_cos": "you interleaved cos and sin (cos t f_0, sin t f_0, ...); minidiff concatenates "
                               "them: all the sines, then all the cosines",
        }[value]
    if name == "denom":
        return ("the frequencies are max_period^(-i / half); minidiff divides by half - 1 (DDPM's "
                "get_timestep_embedding), so the lowest frequency is exactly 1 / max_period. The Transformer and "
                "guided-diffusion divide by half")
    if name == "t_shift":
        return "you embedded t + 1 (the paper's step); the embedding takes the 0-based index t as it is given"
    if name == "t_scale":
        return ("you scaled t to [0, 1] (t / 1000); the embedding takes the raw index t" if value < 1 else
                "you multiplied t by 1000; the embedding takes the raw index t")
    if name == "sign":
        return ("the exponent's sign is flipped: the frequencies must fall from 1 to 1 / max_period, "
                "f_i = exp(-ln(max_period) i / (half - 1))")
    if name == "max_period":
        if value == math.exp(4.0):
            return ("you used log10(max_period) where the natural logarithm belongs: "
                    "f_i = exp(-ln(max_period) i / (half - 1))")
        return f"you used max_period = {value:g}; the default is 10000 (f_i = 10000^(-i / (half - 1)))"
    raise ValueError(name)


def _embedding_mistake(t: torch.Tensor, dim: int, out: torch.Tensor) -> str | None:
    """The hints of the smallest set of convention changes that reproduces ``out``, or None."""
    names = list(_EMB_OPTIONS)
    variants = []
    for values in itertools.product(*(_EMB_OPTIONS[n] for n in names)):
        changed = [(n, v) for n, v in zip(names, values) if v != _EMB_DEFAULT[n]]
        if 0 < len(changed) <= 3:
            variants.append(changed)
    for changed in sorted(variants, key=len):
        wrong = _embedding_variant(t, dim, **{**_EMB_DEFAULT, **dict(changed)})
        if torch.allclose(out, wrong, rtol=0.0, atol=_EMB_ATOL):
            return "; and ".join(_embedding_hint(n, v) for n, v in changed)
    return None


def _embedding_summary(t: torch.Tensor, dim: int, out: torch.Tensor, expected: torch.Tensor) -> str:
    """Where an unrecognised embedding differs: which columns (sin half, cos half) and which timesteps."""
    bad = (out - expected).abs() > _EMB_ATOL                                      # (B, dim)
    half = dim // 2
    msg = f"the embedding differs from minidiff's (largest error {float((out - expected).abs().max()):.3g})"
    cols = [int(c) for c in bad.any(dim=0).nonzero().flatten()]
    if cols and min(cols) >= half:
        msg += f"; the sine columns 0..{half - 1} are right, the cosine columns {half}..{2 * half - 1} are not"
    elif cols and max(cols) < half:
        msg += f"; the sine columns 0..{half - 1} are wrong, the cosine columns are right"
    elif len(cols) <= 6:
        msg += f"; wrong in columns {cols}"
    rows = sorted({int(v) for v in t[bad.any(dim=1)]})
    if len(rows) <= 6:
        msg += f"; wrong at t = {rows}"
    return msg


def check_timestep_embedding(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(t, dim) -> (B, dim)``, the sinusoidal timestep embedding. Chapter 4.

    The reference is :func:`minidiff.timestep_embedding` with its default ``max_period=10000``:
    emb[:, i] = sin(t f_i), emb[:, half + i] = cos(t f_i), f_i = 10000^(-i / (half - 1)), half = dim // 2, and
    one zero column at the end for an odd ``dim``. ``t`` is a (B,) integer tensor of 0-based indices.
    """
    name = "check_timestep_embedding"
    gen = torch.Generator().manual_seed(seed)
    t = torch.cat([torch.tensor([0, 1, 2, 10, 100, 500, 998, 999]), torch.randint(0, 1000, (8,), generator=gen)])
    for dim in (24, 128, 7):
        expected = timestep_embedding(t, dim).to(torch.float64)                    # (B, dim)
        out, hint = _call(fn, t.clone(), dim)
        if hint is None and not isinstance(out, torch.Tensor):
            hint = f"return a torch.Tensor of shape (B, dim), got {type(out).__name__}"
        if hint is None and out.shape != expected.shape:
            hint = f"for dim = {dim} the embedding has shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
            if out.shape == expected.shape[::-1]:
                hint += ": it is transposed; one row per timestep"
            elif dim % 2 and tuple(out.shape) == (len(t), dim - 1):
                hint += (f": for an odd dim there are dim // 2 = {dim // 2} frequencies; append one zero column "
                         "at the end to reach dim")
        if hint is None:
            out = out.detach().to(torch.float64)
            if not torch.allclose(out, expected, rtol=0.0, atol=_EMB_ATOL):
                hint = _embedding_mistake(t, dim, out)
                if hint is None and dim % 2 and torch.allclose(out[:, 1:], expected[:, :-1], rtol=0.0,
                                                               atol=_EMB_ATOL):
                    hint = "for an odd dim the zero column goes at the end, not at the start"
                if hint is None:
                    hint = _embedding_summary(t, dim, out, expected)
                hint = f"dim = {dim}: {hint}"
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches minidiff.timestep_embedding for dim = 24, 128 and 7 at 16 timesteps")


# ------------------------------------------------------------------------------------------ chapter 5
# (chapter 5 checkers go here; extend __all__ with `__all__ += [...]` in this section)
from .samplers import ddpm_step  # noqa: E402 - kept in this chapter's section

__all__ += ["check_ddpm_step"]


def _ddpm_floats(sched: NoiseSchedule, t: int) -> tuple[float, float, float, float]:
    """(beta_t, alpha_t, alpha_bar_t, beta_tilde_t) at index ``t`` as floats; a negative t wraps, like Python."""
    return tuple(float(v[t]) for v in (sched.betas, sched.alphas, sched.alpha_bars, sched.posterior_variance))


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
        ("off by one in t: you used the schedule at index t - 1 (as if t were the paper's step). Index t already "
         "is the paper's step t + 1: use sched.betas[t], sched.alphas[t], sched.alpha_bars[t]",
         lambda: eq11(x, eps, *_ddpm_floats(sched, t - 1)[:3])),
    ]
    if t + 1 < sched.T:
        mistakes.append(("off by one in t: you used the schedule at index t + 1; use sched.betas[t], "
                         "sched.alphas[t], sched.alpha_bars[t]", lambda: eq11(x, eps, *_ddpm_floats(sched, t + 1)[:3])))
    return mistakes


def _ddpm_step_noise_hint(c: float, t: int, sched: NoiseSchedule) -> str | None:
    """A hint if the noise's coefficient ``c`` in the reader's step is not sigma_t = sqrt(beta_tilde_t)."""
    b, _, _, bt = _ddpm_floats(sched, t)
    sigma = bt**0.5

    def near(a: float, b: float) -> bool:
        return abs(a - b) <= ATOL + RTOL * abs(b)

    if near(c, sigma):
        return None
    if t == 0:
        wrapped = (1 - float(sched.alpha_bars[-1])) / (1 - float(sched.alpha_bars[0])) * b
        if near(c, wrapped**0.5) or near(c, wrapped):
            return ("noise added at t = 0 because your beta_tilde there is not 0: "
                    "alpha_bars[t-1] wrapped around to the last entry. alpha_bar_{t-1} = 1 at t = 0 (x_0 is clean), "
                    "so beta_tilde = 0: use sched.alpha_bars_prev[t] (or sched.posterior_variance[t])")
        extra = " with sigma^2 = beta_t" if near(c, b**0.5) else ""
        return (f"noise added at t = 0{extra}: Algorithm 2 sets z = 0 at the last step, "
                "so return the mean there (with sigma^2 = beta_tilde this happens by itself: beta_tilde = 0 at t = 0)")
    if near(c, b**0.5):
        return ("you used sigma^2 = beta_t; this step uses the posterior variance sigma^2 = beta_tilde_t = "
                "(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (sched.posterior_variance[t]), like "
                "md.ddpm_step's default variance='beta_tilde'")
    if near(c, bt):
        return "the noise is scaled by sigma_t = sqrt(beta_tilde_t), not by the variance beta_tilde_t (no square root)"
    if near(c, b):
        return ("the noise is scaled by beta_t: use sigma_t = sqrt(beta_tilde_t) (the posterior variance, and its "
                "square root)")
    if near(c, 0.0):
        return "no noise was added: for t > 0 the step adds sigma_t z with sigma_t = sqrt(beta_tilde_t)"
    if near(c, -sigma):
        return "you subtracted the noise: Algorithm 2 adds sigma_t z"
    if near(c, 1.0):
        return "the noise is not scaled: multiply it by sigma_t = sqrt(beta_tilde_t)"
    for shift in (-1, 1):
        if 0 <= t + shift < sched.T and near(c, float(sched.posterior_variance[t + shift]) ** 0.5):
            return (f"off by one in t: your sigma is sqrt(beta_tilde) at index t {'-' if shift < 0 else '+'} 1; "
                    "use sched.posterior_variance[t]")
    return f"the noise is scaled by {c:.4g}; expected sigma_t = sqrt(beta_tilde_t) = {sigma:.4g}"


def _ddpm_step_hint(fn, out, x_t, eps, t, sched, noise) -> str:
    """Diagnose a wrong step: probe with zero noise to split it into its mean and its noise coefficient."""
    zero = torch.zeros_like(noise)
    out0, err = _call(fn, x_t.clone(), eps.clone(), t, sched, zero.clone())
    if err is None:
        out0, err = _as_tensor(out0, x_t, "x_prev")
    if err is not None:
        return f"your function failed with noise = 0: {err}"
    mean_ref = ddpm_step(x_t, eps, t, sched, noise=zero)[0]
    hints = []
    m_hint = _match(out0, mean_ref, _ddpm_step_mean_mistakes(x_t, eps, t, sched))
    if m_hint == "mismatch":
        m_hint = (f"the mean (your output with noise = 0) differs from (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) "
                  f"/ sqrt(alpha_t) (largest error {float((out0 - mean_ref).abs().max()):.3g})")
    if m_hint is not None:
        hints.append(("mean: ", m_hint))
    r = out - out0                                                   # the part that comes from the noise
    c = float((r * noise).sum() / (noise * noise).sum())            # least-squares coefficient of z
    if not _close(r, c * noise):
        hints.append(("noise: ", "the noise enters your step other than as sigma_t * z (one number times the noise "
                                 "passed in)"))
    else:
        n_hint = _ddpm_step_noise_hint(c, t, sched)
        if n_hint is not None:
            hints.append(("noise: ", n_hint))
    if not hints:
        return "mismatch"
    if all(h.startswith("off by one") for _, h in hints):
        return hints[0][1]                                           # one cause: the whole step is shifted
    if len(hints) == 1:
        return hints[0][1]
    return "; ".join(p + h for p, h in hints)


def check_ddpm_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, eps, t, sched, noise) -> x_prev``, one DDPM ancestral step (Algorithm 2, line 4). Chapter 5.

    ``t`` is a Python int (one timestep for the batch), ``eps`` the noise prediction, ``noise`` the fresh z
    (B, ...). The reference is ``minidiff.ddpm_step(x_t, eps, t, sched, noise=noise)[0]``: sigma^2 = beta_tilde,
    no clipping, and no noise at t = 0.
    """
    name = "check_ddpm_step"
    gen = torch.Generator().manual_seed(seed)
    scheds = _schedules() + [NoiseSchedule.linear(T=1000)]
    for sched in scheds:
        for t in (sched.T - 1, sched.T // 2, 1, 0):                 # t = 0 last: other mistakes show up first
            x_t, eps, noise = (torch.randn(6, 3, 2, generator=gen, dtype=torch.float64) for _ in range(3))
            expected = ddpm_step(x_t, eps, t, sched, noise=noise)[0]
            args = (x_t.clone(), eps.clone(), t, sched, noise.clone())
            hint = _random_check(fn, args, (x_t.clone(), eps.clone(), t, sched, noise.clone()))
            if hint is None:
                out, hint = _call(fn, *args)
            if hint is None:
                out, hint = _one_tensor(out, x_t, "x_{t-1}", "minidiff.ddpm_step")
            if hint is None and not _close(out, expected):
                hint = _ddpm_step_hint(fn, out, x_t, eps, t, sched, noise)
                if hint == "mismatch":
                    err = float((out - expected).abs().max())
                    hint = f"x_prev differs from minidiff.ddpm_step's (largest error {err:.3g})"
            if hint is not None:
                return CheckResult(name, False, f"at t = {t} (paper t = {t + 1}) of a {sched.name} schedule with "
                                                f"T = {sched.T}: {hint}")
    return CheckResult(name, True, f"matches minidiff.ddpm_step on {len(scheds)} schedules x 4 timesteps, "
                                   "t = 0 included")


# ------------------------------------------------------------------------------------------ chapter 6
# (chapter 6 checkers go here; extend __all__ with `__all__ += [...]` in this section)
from .conventions import ddim_sigma  # noqa: E402 - kept in this chapter's section
from .samplers import ddim_step  # noqa: E402

__all__ += ["check_ddim_step"]


def _sqrt(v: float) -> float:
    """sqrt of a float; NaN for a negative value (where torch would give NaN too), never a complex number."""
    return v**0.5 if v >= 0 else float("nan")


def _ddim_cases(T: int) -> list[tuple[int, int, float]]:
    """(t, t_prev, eta) for check_ddim_step: eta = 0 first (the deterministic part alone), then noisy steps,
    skipped and consecutive, then the last step to the data (t_prev = -1)."""
    return [(T - 1, T - 1 - T // 4, 0.0), (T // 2, T // 4, 0.0), (T - 1, T // 2, 0.5), (T // 2, T // 2 - 1, 1.0),
            (T - 2, T // 4, 1.0), (T // 3, -1, 0.0), (T // 2, -1, 1.0)]


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


def _ddim_noise_hint(fn, out, x_t, eps, t, t_prev, sched, eta, noise) -> str:
    """For a mistake not in the catalogue: split the reader's step into its noise-free part and the noise's
    coefficient (a probe with noise = 0), and say which one is wrong."""
    zero = torch.zeros_like(noise)
    out0, err = _call(fn, x_t.clone(), eps.clone(), t, t_prev, sched, eta, zero)
    if err is None:
        out0, err = _as_tensor(out0, x_t, "x_prev")
    if err is not None:
        return f"your function failed with noise = 0: {err}"
    ref0 = ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=zero)[0]
    sigma = ddim_sigma(float(sched.alpha_bars[t]), 1.0 if t_prev < 0 else float(sched.alpha_bars[t_prev]), eta)
    hints = []
    if not _close(out0, ref0):
        hints.append("the noise-free part (your output with noise = 0) differs from sqrt(alpha_bar_prev) x0_hat + "
                     f"sqrt(1 - alpha_bar_prev - sigma^2) eps (largest error {float((out0 - ref0).abs().max()):.3g})")
    r = out - out0                                                        # the part that comes from the noise
    c = float((r * noise).sum() / (noise * noise).sum())                 # least-squares coefficient of z
    if not _close(r, c * noise):
        hints.append("the noise enters your step other than as sigma * z (one number times the noise passed in)")
    elif abs(c - sigma) > ATOL + RTOL * sigma:
        hints.append(f"the noise is scaled by {c:.4g}; DDIM eq. (16) gives sigma = {sigma:.4g} for this step")
    return "; ".join(hints) if hints else "mismatch"


def check_ddim_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, eps, t, t_prev, sched, eta, noise) -> x_prev``, one DDIM step (eq. 12 with sigma of
    eq. 16). Chapter 6.

    ``t`` and ``t_prev < t`` are Python ints (0-based indices; ``t_prev = -1`` is the clean data, where
    alpha_bar = 1), ``eps`` the noise prediction and ``noise`` the fresh z (B, ...), passed even when
    sigma = 0. The reference is ``minidiff.ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0]``.
    """
    name = "check_ddim_step"
    gen = torch.Generator().manual_seed(seed)
    scheds = _schedules() + [NoiseSchedule.linear(T=1000)]
    n_cases = 0
    for sched in scheds:
        for t, t_prev, eta in _ddim_cases(sched.T):
            n_cases += 1
            x_t, eps, noise = (torch.randn(6, 3, 2, generator=gen, dtype=torch.float64) for _ in range(3))
            expected = ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0]
            args = (x_t.clone(), eps.clone(), t, t_prev, sched, eta, noise.clone())
            out, hint = _call(fn, *args)
            again, _ = _call(fn, x_t.clone(), eps.clone(), t, t_prev, sched, eta, noise.clone())
            if (hint is None and isinstance(out, torch.Tensor) and isinstance(again, torch.Tensor)
                    and out.shape == again.shape
                    and not torch.allclose(out, again, rtol=RTOL, atol=ATOL, equal_nan=True)):
                hint = ("two calls with the same inputs gave different results: your function draws its own random "
                        "numbers. Use the noise passed in as an argument")
            if hint is None:
                out, hint = _one_tensor(out, x_t, "x_prev", "minidiff.ddim_step")
            if hint is None and not _close(out, expected):
                for text, make in _ddim_step_mistakes(x_t, eps, t, t_prev, sched, eta, noise):
                    try:
                        wrong = make()
                    except Exception:  # noqa: BLE001 - a variant that cannot be formed is not this mistake
                        continue
                    if torch.allclose(out, wrong.to(out.dtype), rtol=RTOL, atol=ATOL, equal_nan=True):
                        hint = text
                        break
                if hint is None:
                    hint = _ddim_noise_hint(fn, out, x_t, eps, t, t_prev, sched, eta, noise)
                if hint == "mismatch":
                    err = float((out - expected).abs().max())
                    hint = f"x_prev differs from minidiff.ddim_step's (largest error {err:.3g})"
            if hint is not None:
                where = "the data" if t_prev < 0 else f"t_prev = {t_prev}"
                return CheckResult(name, False, f"at the step t = {t} -> {where}, eta = {eta}, of a {sched.name} "
                                                f"schedule with T = {sched.T}: {hint}")
    return CheckResult(name, True, f"matches minidiff.ddim_step on {n_cases} steps of {len(scheds)} schedules: "
                                   "eta = 0, 0.5 and 1, skipped steps and the last step to the data")


# ------------------------------------------------------------------------------------------ chapter 7
# (chapter 7 checkers go here; extend __all__ with `__all__ += [...]` in this section)
__all__ += ["check_cfg_combine"]

# 0 and 1 are the two models themselves; 0.5 is where swapping the inputs (and averaging) goes unnoticed, so
# scales on both sides of it, beyond 1 (real guidance), non-integers and a negative one are tested too.
_CFG_SCALES = (0.0, 1.0, 0.5, 3.0, 1.3, 7.5, -0.5)


def _cfg_mistakes(u: torch.Tensor, c: torch.Tensor) -> list:
    """(hint, wrong(scale)) pairs: the usual ways of writing the guided prediction wrongly."""
    return [
        ("you swapped the two predictions: the base is eps_uncond and the scale multiplies "
         "(eps_cond - eps_uncond). At s = 0 guidance must give the unconditional eps_uncond, at s = 1 eps_cond",
         lambda s: c + s * (u - c)),
        ("you used the CFG paper's form eps_cond + w (eps_cond - eps_uncond) with w = scale, which is guidance "
         "scale 1 + scale. Here the scale s is the paper's 1 + w: eps_uncond + s (eps_cond - eps_uncond)",
         lambda s: c + s * (c - u)),
        ("you wrote eps_uncond + (s - 1)(eps_cond - eps_uncond): that converts s to the paper's w = s - 1, but "
         "the formula with eps_uncond as the base takes s itself",
         lambda s: u + (s - 1) * (c - u)),
        ("you returned scale * eps_cond and lost the unconditional base: eps_uncond + s (eps_cond - eps_uncond). "
         "At s = 0 guidance gives eps_uncond, not zero",
         lambda s: s * c),
        ("you returned the guidance direction scale * (eps_cond - eps_uncond) alone; add the base eps_uncond",
         lambda s: s * (c - u)),
        ("you added scale * eps_cond to eps_uncond; the scale multiplies the difference eps_cond - eps_uncond",
         lambda s: u + s * c),
        ("you averaged the two predictions, whatever the scale; the scale sets the mix: "
         "eps_uncond + s (eps_cond - eps_uncond)",
         lambda s: (u + c) / 2),
        ("the sign of the guidance term is flipped: eps_uncond - s (...) pushes samples away from the class",
         lambda s: u - s * (c - u)),
        ("right at integer scales only: did you convert the scale to an int? Guidance scales such as 1.3 or 7.5 "
         "are common", lambda s: u + float(int(s)) * (c - u)),
    ]


def check_cfg_combine(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(eps_uncond, eps_cond, scale) -> eps``, the classifier-free guidance combination. Chapter 7.

    The reference is :func:`minidiff.cfg_combine`, eps_uncond + scale (eps_cond - eps_uncond), tested at the
    scales 0 and 1 (the unconditional and the conditional model), between and beyond them, at non-integer
    scales and at a negative one, on (6, 1, 4, 4) float64 predictions.
    """
    from .guidance import cfg_combine

    name = "check_cfg_combine"
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)                 # eps_uncond
    c = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)                 # eps_cond
    outs = {}
    for s in _CFG_SCALES:
        u_in, c_in = u.clone(), c.clone()
        out, hint = _call(fn, u_in, c_in, s)
        if hint is None and not (torch.equal(u_in, u) and torch.equal(c_in, c)):
            hint = ("your function changed its inputs in place (an in-place op such as eps_uncond += ... or "
                    ".add_()): return a new tensor and leave eps_uncond and eps_cond as they were")
        if hint is None:
            out, hint = _as_tensor(out, u, f"the guided eps at scale {s}")
        if hint is not None:
            return CheckResult(name, False, hint)
        outs[s] = out
    wrong = [s for s in _CFG_SCALES if not _close(outs[s], cfg_combine(u, c, s))]
    if not wrong:
        return CheckResult(name, True, f"matches minidiff.cfg_combine at the scales {list(_CFG_SCALES)}")
    for hint, make in _cfg_mistakes(u, c):
        if all(_close(outs[s], make(s)) for s in _CFG_SCALES):
            return CheckResult(name, False, hint)
    right = [s for s in _CFG_SCALES if s not in wrong]
    msg = f"your guided eps differs from minidiff.cfg_combine at the scales {sorted(wrong)}"
    if right:
        msg += f" (it is right at {sorted(right)})"
    return CheckResult(name, False, msg + ". The guided prediction is eps_uncond + s (eps_cond - eps_uncond)")


# ------------------------------------------------------------------------------------------ chapter 8
# (chapter 8 checkers go here; extend __all__ with `__all__ += [...]` in this section)
__all__ += ["check_repaint_merge"]


def _repaint_known(x0: torch.Tensor, t_prev: int, sched: NoiseSchedule, noise: torch.Tensor) -> torch.Tensor:
    """The known part at the level of t_prev: q(x_{t_prev} | x0) with the given noise; x0 itself at -1."""
    return x0 if t_prev < 0 else q_sample(x0, t_prev, sched, noise=noise)


def _noised(x0, i: int, sched: NoiseSchedule, noise) -> torch.Tensor:
    """sqrt(a) x0 + sqrt(1 - a) noise with a = alpha_bars[i], Python indexing (i = -1 wraps to T-1)."""
    a = sched.alpha_bars.to(x0.dtype)[i]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _repaint_mistakes(x_unknown, x0, mask, t_prev, sched, noise) -> list:
    def merge(known):
        return mask * known + (1 - mask) * x_unknown

    if t_prev < 0:
        return [
            ("at t_prev = -1 you indexed alpha_bars[-1], which Python reads as the LAST entry (t = T-1, almost "
             "pure noise). t_prev = -1 means the data itself: the known part is x0, with no noise",
             lambda: merge(_noised(x0, -1, sched, noise))),
            ("noise at the last step: at t_prev = -1 the step lands on the data, so the known part is x0 itself. "
             "You noised it to index 0 (the paper's t = 1)", lambda: merge(_noised(x0, 0, sched, noise))),
            ("the mask is inverted: mask == 1 marks the known pixels (keep x0 there), mask == 0 the generated "
             "ones (keep x_unknown there)", lambda: (1 - mask) * x0 + mask * x_unknown),
            ("at t_prev = -1 you added the noise to the whole image; the last step adds none",
             lambda: merge(x0) + noise),
        ]
    known = _repaint_known(x0, t_prev, sched, noise)
    a = sched.alpha_bars.to(x0.dtype)[t_prev]
    tb = torch.full((x0.shape[0],), t_prev, dtype=torch.long)
    mistakes = [
        ("the mask is inverted: mask == 1 marks the known pixels (the noised original goes there), mask == 0 "
         "the generated ones (x_unknown stays there)", lambda: (1 - mask) * known + mask * x_unknown),
        ("you pasted the clean x0 into the known region. x_unknown is at noise level t_prev, so the known part "
         "must be too: q_sample(x0, t_prev, sched, noise=noise); x0 itself only at t_prev = -1",
         lambda: merge(x0)),
        ("off by one: you noised x0 to t_prev + 1 (the level of x_t, where the step started); the merged "
         "x_prev lives at t_prev", lambda: merge(_noised(x0, t_prev + 1, sched, noise))),
        ("off by one: you noised x0 to t_prev - 1; the merged x_prev lives at t_prev",
         lambda: merge(x0 if t_prev == 0 else _noised(x0, t_prev - 1, sched, noise))),
        ("the noise belongs to the known part only: mask * (sqrt(a) x0 + sqrt(1 - a) noise); you added "
         "sqrt(1 - a) noise to the generated part as well",
         lambda: mask * a.sqrt() * x0 + (1 - mask) * x_unknown + (1 - a).sqrt() * noise),
        ("you noised x_unknown as well: it already is at level t_prev (the reverse step produced it); keep it "
         "unchanged where mask == 0", lambda: mask * known + (1 - mask) * _noised(x_unknown, t_prev, sched, noise)),
    ]
    # The coefficient mistakes of q_sample (chapter 2), applied to the known part.
    mistakes += [("in the known part, q_sample(x0, t_prev): " + hint, lambda make=make: merge(make()))
                 for hint, make in _q_sample_mistakes(x0, tb, sched, noise)]
    return mistakes


def check_repaint_merge(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_unknown, x0, mask, t_prev, sched, noise) -> x_prev``, RePaint's merge after one step. Chapter 8.

    The reference is ``mask * known + (1 - mask) * x_unknown`` with ``known = minidiff.q_sample(x0, t_prev,
    sched, noise=noise)``: the original noised to the level t_prev that the reverse step has just reached
    (``x_unknown`` is that step's output). ``t_prev`` is a Python int in [-1, T-1]; ``t_prev = -1`` is the
    last step, onto the data: there ``known = x0`` with no noise. ``mask`` is 1 where ``x0`` is known and
    0 where it is generated; it may have shape (B, ...) or broadcast to it, e.g. (1, 1, H, W).
    This is the merge :func:`minidiff.inpaint` does at every step.
    """
    name = "check_repaint_merge"
    gen = torch.Generator().manual_seed(seed)
    for k, sched in enumerate(_schedules()):
        B, T = 6, sched.T
        x0 = torch.randn(B, 1, 4, 4, generator=gen, dtype=torch.float64)
        x_unknown = torch.randn(B, 1, 4, 4, generator=gen, dtype=torch.float64)
        mask_shape = (1, 1, 4, 4) if k == 0 else (B, 1, 4, 4)
        mask = (torch.rand(mask_shape, generator=gen) < 0.5).to(torch.float64)
        mask.view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)           # both values present
        for t_prev in (T // 2, 0, T - 2, -1):
            noise = torch.randn(B, 1, 4, 4, generator=gen, dtype=torch.float64)
            args = (x_unknown, x0, mask, t_prev, sched, noise)
            expected = mask * _repaint_known(x0, t_prev, sched, noise) + (1 - mask) * x_unknown

            def fresh():
                return (x_unknown.clone(), x0.clone(), mask.clone(), t_prev, sched, noise.clone())

            hint = _random_check(fn, fresh(), fresh())
            if hint is None:
                out, hint = _call(fn, *fresh())
                if hint is not None and t_prev < 0:
                    hint += (". t_prev = -1 is the last step, onto the data: there the known part is x0 itself "
                             "(no q_sample, which accepts only indices in [0, T-1])")
            if hint is None:
                out, hint = _as_tensor(out, x0, "x_prev")
            if hint is None:
                hint = _match(out, expected, _repaint_mistakes(*args))
                if hint == "mismatch":
                    bad = (out - expected).abs() > ATOL + RTOL * expected.abs()                # (B, 1, 4, 4)
                    keep = torch.broadcast_to(mask, bad.shape).bool()
                    where = ("in the known region (mask == 1)" if bool(bad[keep].any()) and not bool(bad[~keep].any())
                             else "in the generated region (mask == 0): x_prev must equal x_unknown there"
                             if not bool(bad[keep].any()) else "in both regions")
                    hint = (f"x_prev differs from the package's merge at t_prev = {t_prev} {where} (largest error "
                            f"{float((out - expected).abs().max()):.3g})")
            if hint is not None:
                return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches RePaint's merge (minidiff.inpaint) on 2 schedules x 4 steps, "
                                   "t_prev = -1 included")
