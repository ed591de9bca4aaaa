"""The harness every exercise checker shares: test inputs, running the reader's function, comparing, hints.

A checker calls the reader's function through :func:`call_reader` (an exception becomes a hint), checks the
output's type and shape with :func:`as_tensor`, compares it with the package's answer and, when they differ,
names the mistake: :func:`match_mistake` recomputes the answer with each usual mistake and returns the hint
of the one the reader's output equals. A step that produces a value returns the pair ``(value, hint)``, the
others the hint alone; the hint is None when all is well.

Timestep convention: ``t`` is the 0-based index, the paper's step t + 1; ``alpha_bars_prev[t]`` is 1 at t = 0.

Introduced in chapter 1; each chapter's checkers are in a module of their own beside this one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..schedules import NoiseSchedule

RTOL, ATOL = 1e-4, 1e-6
MISMATCH = "mismatch"          # what match_mistake returns when the output is wrong in no catalogued way

Mistakes = Sequence[tuple[str, Callable[[], torch.Tensor]]]     # (hint, the answer with that mistake)


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
def short_schedules() -> list[NoiseSchedule]:
    """Short schedules with large betas, so that every typical mistake changes the numbers visibly."""
    return [
        NoiseSchedule.linear(T=20, beta_start=0.01, beta_end=0.3),
        NoiseSchedule.cosine(T=16),
    ]


def random_timesteps(T: int, B: int, gen: torch.Generator) -> torch.Tensor:
    """(B,) indices that always include both ends, 0 and T-1, and differ between samples."""
    t = torch.randint(0, T, (B,), generator=gen)
    t[0], t[1] = 0, T - 1
    return t


def random_batch(T: int, gen: torch.Generator, B: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, 3, 2) and noise (B, 3, 2) in float64, then timesteps t (B,), drawn in that order from ``gen``."""
    x = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(B, 3, 2, generator=gen, dtype=torch.float64)
    return x, noise, random_timesteps(T, B, gen)


def at_t(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against ``like`` (negative indices wrap, like Python)."""
    return values.to(like.dtype)[t].view(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------------------------ the reader's output
def call_reader(fn: Callable, *args):
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


def as_tensor(out, like: torch.Tensor, what: str):
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


def one_tensor(out, like: torch.Tensor, what: str, package_fn: str):
    """(tensor, None) if ``out`` is one tensor like ``like``; else (out, hint). For the sampler-step checkers,
    whose package functions return the pair (x_prev, x0_hat) while the exercise returns x_prev alone."""
    if isinstance(out, (tuple, list)):
        return out, (f"return only {what}, one tensor ({package_fn} returns the pair (x_prev, x0_hat); the "
                     "exercise's function returns x_prev alone)")
    return as_tensor(out, like, "x_prev")


def random_check(fn: Callable, args_a: tuple, args_b: tuple) -> str | None:
    """A hint if the same inputs give different outputs (the function drew its own noise or timesteps)."""
    a, _ = call_reader(fn, *args_a)
    b, _ = call_reader(fn, *args_b)
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and not close(a, b):
        return ("two calls with the same inputs gave different results: your function draws its own random "
                "numbers. Use the noise (and t) passed in as arguments")
    return None


# ------------------------------------------------------------------------------------------ comparisons
def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and equal within RTOL and ATOL. NaN equals NaN in the same place: a mistake that takes the
    square root of a negative number gives NaN there, in the catalogue and in the reader's output alike."""
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))


def near(a: float, b: float) -> bool:
    """Two numbers equal within RTOL (relative to ``b``) and ATOL."""
    return abs(a - b) <= ATOL + RTOL * abs(b)


def match_mistake(out: torch.Tensor, expected: torch.Tensor, mistakes: Mistakes) -> str | None:
    """None when ``out`` equals ``expected``; else the hint of the first mistake it equals, else MISMATCH."""
    if close(out, expected):
        return None
    for hint, make in mistakes:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 - a variant that cannot be formed is simply not this mistake
            continue
        if close(out, wrong.to(out.dtype)):
            return hint
    return MISMATCH


def mismatch_summary(out: torch.Tensor, expected: torch.Tensor, t: torch.Tensor, what: str) -> str:
    """A hint for a mistake not in the catalogue: how large the error is and at which timesteps."""
    err = (out - expected).abs().reshape(out.shape[0], -1).amax(dim=1)          # (B,)
    bad = ~(err <= ATOL + RTOL * expected.abs().reshape(out.shape[0], -1).amax(dim=1))   # NaN is wrong too
    where = sorted({int(i) for i in t[bad]})
    msg = f"{what} differs from the package's (largest error {float(err.max()):.3g})"
    if where == [0]:
        return msg + ("; it is wrong only at t = 0 (the paper's t = 1). There alpha_bar_{t-1} is 1: x_0 is the "
                      "clean data. Use sched.alpha_bars_prev[t], which starts with 1.0")
    if len(where) <= 6:
        msg += f"; wrong at t = {where}"
    return msg


# ------------------------------------------------------------------------------------------ noising functions
def check_noising_fn(name: str, fn: Callable, reference: Callable, mistakes: Callable[..., Mistakes], seed: int,
                     passed: str) -> CheckResult:
    """The checker of a function ``fn(x, t, sched, noise) -> x_t`` that noises x (chapters 1 and 2).

    On each schedule: draw x (B, 3, 2), noise and t; call ``fn(x, t, sched, noise)``; compare with
    ``reference(x, t, sched, noise=noise)``; on a mismatch, name the first of ``mistakes(x, t, sched, noise)``
    (a list of (hint, wrong-formula)) that reproduces the reader's output.
    """
    gen = torch.Generator().manual_seed(seed)
    for sched in short_schedules():
        x, noise, t = random_batch(sched.T, gen)
        expected = reference(x, t, sched, noise=noise)
        hint = random_check(fn, (x.clone(), t.clone(), sched, noise.clone()),
                            (x.clone(), t.clone(), sched, noise.clone()))
        if hint is None:
            out, hint = call_reader(fn, x.clone(), t.clone(), sched, noise.clone())
        if hint is None:
            out, hint = as_tensor(out, x, "x_t")
        if hint is None:
            hint = match_mistake(out, expected, mistakes(x, t, sched, noise))
            if hint == MISMATCH:
                hint = mismatch_summary(out, expected, t, "x_t")
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, passed)


# ------------------------------------------------------------------------------------------ sampler steps
NOISE_NOT_SCALED = "the noise enters your step other than as {sigma} * z (one number times the noise passed in)"


def split_noise(fn: Callable, args: tuple, out: torch.Tensor):
    """Split the reader's sampler step into its noise-free part and the scale of its noise (chapters 5 and 6).

    ``args`` are the step's inputs, the fresh noise z last, and ``out`` is the reader's output on them. Called
    again with z = 0, ``fn`` gives the noise-free part ``out0``; the rest, ``out - out0``, should be sigma z for
    one number sigma, which least squares estimates as ``c``. Returns ((out0, c), None), with c None when the
    rest is not one number times z (``NOISE_NOT_SCALED`` says so), or (None, hint) when the call with
    z = 0 fails.
    """
    *inputs, noise = args
    inputs = [a.clone() if isinstance(a, torch.Tensor) else a for a in inputs]
    out0, hint = call_reader(fn, *inputs, torch.zeros_like(noise))
    if hint is None:
        out0, hint = as_tensor(out0, out, "x_prev")
    if hint is not None:
        return None, f"your function failed with noise = 0: {hint}"
    r = out - out0                                                        # the part that comes from the noise
    c = float((r * noise).sum() / (noise * noise).sum())                 # least-squares coefficient of z
    return (out0, c if math.isfinite(c) and close(r, c * noise) else None), None
