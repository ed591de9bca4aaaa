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


# ------------------------------------------------------------------------------------------ chapter 5
# (chapter 5 checkers go here; extend __all__ with `__all__ += [...]` in this section)


# ------------------------------------------------------------------------------------------ chapter 6
# (chapter 6 checkers go here; extend __all__ with `__all__ += [...]` in this section)


# ------------------------------------------------------------------------------------------ chapter 7
# (chapter 7 checkers go here; extend __all__ with `__all__ += [...]` in this section)


# ------------------------------------------------------------------------------------------ chapter 8
# (chapter 8 checkers go here; extend __all__ with `__all__ += [...]` in this section)
