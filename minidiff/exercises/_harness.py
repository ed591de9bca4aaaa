"""The harness every exercise checker shares: test inputs, running the reader's function, comparing, hints.

A checker calls the reader's function through :func:`call_reader` (an exception becomes a hint), checks the
output's type, shape and dtype with :func:`as_tensor`, compares it with the package's answer and, when they
differ, names the mistake: :func:`match_mistake` recomputes the answer with each usual mistake and returns the
hint of the one the reader's output equals. A step that produces a value returns the pair ``(value, hint)``,
the others the hint alone; the hint is None when all is well.

Test inputs come in several layouts, from (B, D) to image batches (B, C, H, W), and in float64 and float32
(:func:`input_cases`): a coefficient reshaped for one rank only, or a float64 schedule value that turns a float32
batch into float64, fails with a hint that says so. The reader gets the inputs in the case's dtype; the
reference and the catalogued mistakes are computed in float64 on the very same values, and the comparison allows
the rounding error of the reader's dtype (:func:`tolerance`).

Timestep convention: ``t`` is the 0-based index, the paper's step t + 1; ``alpha_bars_prev[t]`` is 1 at t = 0.

Introduced in chapter 1; each chapter's checkers are in a module of their own beside this one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..schedules import NoiseSchedule

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


# ------------------------------------------------------------------------------------------ tolerances
# A right answer computed in float32 differs from the float64 reference by rounding alone, and the float64
# reference differs from the exact value the same way, at float64's eps. Two effects set the size:
#  * about ten rounded operations per entry (a gather, a cast, square roots, products, a sum), each off by at most
#    eps/2 relative to the values it handles (eps: the dtype's machine epsilon): ~10 eps times the magnitude of
#    the values. TOL_EPS = 128 covers that with room for any other order of the same operations.
#  * cancellation in 1 - alpha_bar_t: alpha_bar_t's own rounding (eps/2 relative) becomes a relative error of
#    eps / (2 (1 - alpha_bar_t)) in 1 - alpha_bar_t, which the posterior coefficients divide by. At t = 0 that
#    is 1 / beta_0: 100 for the short schedules, 1e4 for a T = 1000 linear one. :func:`conditioning` gives this
#    factor for the timesteps of a case, and the tolerance is multiplied by it.
# The tolerance is absolute, scaled to the largest value compared (at least 1): rounding errors follow the
# magnitude of the terms, not the size of one entry of the result. Float64 cases run first, with a tolerance
# of 3e-14 to 3e-10, so a mistake is named there before a float32 case, with its far looser tolerance, is run.
TOL_EPS = 128


def tolerance(dtype: torch.dtype, scale: float, n_terms: int = 0, cond: float = 1.0) -> float:
    """The absolute tolerance for values of magnitude ``scale`` computed in ``dtype``: (TOL_EPS + n_terms) cond
    eps scale. ``n_terms`` is for a reduction (a loss) of that many terms, whose rounding error grows with their
    number (summed one by one, at most n_terms eps times the sum); ``cond`` is :func:`conditioning`'s factor."""
    return (TOL_EPS + n_terms) * cond * torch.finfo(dtype).eps * scale


def conditioning(sched: NoiseSchedule, t) -> float:
    """1 / (1 - alpha_bar) at the largest alpha_bar among the indices ``t`` (an int or a tensor; -1, the data, is
    skipped: there alpha_bar = 1 exactly): how much the cancellation in 1 - alpha_bar magnifies rounding."""
    idx = torch.as_tensor(t).flatten()
    idx = idx[idx >= 0]
    return 1.0 / (1.0 - float(sched.alpha_bars[idx].max())) if idx.numel() else 1.0


def _coarser(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    """The less precise of two floating dtypes (the one with the larger eps)."""
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def within(out: torch.Tensor, ref: torch.Tensor, n_terms: int = 0, cond: float = 1.0) -> torch.Tensor:
    """Entrywise: ``out`` equals ``ref`` within the :func:`tolerance` of the coarser of their dtypes, scaled to
    ref's largest finite entry (at least 1). NaN equals NaN and inf equals inf in the same place: a mistake that
    takes the square root of a negative number gives NaN there, in the catalogue and in the reader's output alike."""
    a, b = out.double(), ref.double()
    finite = b.abs()[torch.isfinite(b)]
    scale = max(1.0, float(finite.max())) if finite.numel() else 1.0
    tol = tolerance(_coarser(out.dtype, ref.dtype), scale, n_terms, cond)
    return (a == b) | (a.isnan() & b.isnan()) | ((a - b).abs() <= tol)


def close(a: torch.Tensor, b: torch.Tensor, n_terms: int = 0, cond: float = 1.0) -> bool:
    """Same shape and equal :func:`within` the tolerance everywhere (``b`` is the reference)."""
    return a.shape == b.shape and bool(within(a, b, n_terms, cond).all())


def near(a: float, b: float, tol: float) -> bool:
    """Two numbers equal within the absolute tolerance ``tol``."""
    return abs(a - b) <= tol


# ------------------------------------------------------------------------------------------ test inputs
B = 12                                          # samples per test batch
LAYOUTS = ((3, 2), (6,), (1, 4, 4), (3, 4, 4))  # shapes of one sample: x is (B, 3, 2), (B, 6), (B, 1, 4, 4), ...
DTYPES = (torch.float64, torch.float32)


def input_cases(first: tuple[int, ...] = (3, 2)) -> list[tuple[tuple[int, ...], torch.dtype]]:
    """(shape of one sample, dtype) of each set of test inputs: every layout in float64, then every layout in
    float32; ``first`` (one of LAYOUTS) first. Ranks 2 to 4 catch a coefficient shaped for one rank only (such as
    alpha_bars[t][:, None, None], right for (B, 3, 2) alone); float32 catches an uncast float64 schedule value."""
    tails = [first] + [tail for tail in LAYOUTS if tail != first]
    return [(tail, dtype) for dtype in DTYPES for tail in tails]


def randn(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Standard normal float64 values that ``dtype`` represents exactly: the reader gets them in ``dtype``
    (:func:`reader_args`), the reference works on the same numbers in float64."""
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).double()


def reader_args(dtype: torch.dtype, *args) -> tuple:
    """Fresh copies of the inputs for one call of the reader's function: floating tensors in ``dtype``, integer
    tensors cloned, everything else as it is."""
    return tuple(a.to(dtype).clone() if isinstance(a, torch.Tensor) and a.is_floating_point()
                 else a.clone() if isinstance(a, torch.Tensor) else a for a in args)


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


def random_batch(T: int, gen: torch.Generator, B: int = B, tail: tuple[int, ...] = (3, 2),
                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (B, *tail) and noise (B, *tail), float64 values exact in ``dtype``, then timesteps t (B,), drawn in that
    order from ``gen``."""
    x = randn(gen, (B, *tail), dtype)
    noise = randn(gen, (B, *tail), dtype)
    return x, noise, random_timesteps(T, B, gen)


def at_t(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast against ``like`` (negative indices wrap, like Python)."""
    return values.to(like.dtype)[t].view(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------------------------ the reader's output
RESHAPE = ("values[t] has shape (B,): reshape it to (B, 1, ..., 1) so it broadcasts against x of any rank: "
           "values[t].view(-1, *[1] * (x.ndim - 1))")


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
            hint += ". A broadcasting error: the schedule's coefficient " + RESHAPE
        return None, hint
    except Exception as err:  # noqa: BLE001 - any error is reported to the reader as a hint
        return None, f"your function raised {type(err).__name__}: {err}"


def shape_hint(shape, like: torch.Tensor, what: str, per_sample: bool = False) -> str:
    """The hint for an output of the wrong ``shape`` that should have ``like``'s. With ``per_sample`` (a function
    of a (B,) tensor t) a broadcast shape says how to shape the schedule's coefficient for any rank."""
    shape = tuple(shape)
    hint = f"{what} has shape {shape}, expected {tuple(like.shape)}, x's shape"
    if per_sample and (len(shape) != like.ndim or math.prod(shape) != like.numel()):
        try:
            rank3 = like.ndim != 3 and shape == tuple(torch.broadcast_shapes((like.shape[0], 1, 1), like.shape))
        except RuntimeError:
            rank3 = False
        if rank3:
            hint += ": a (B, 1, 1) coefficient such as alpha_bars[t][:, None, None] fits only 3-d x"
        hint += ". The schedule's coefficient " + RESHAPE
    return hint


def dtype_hint(got: torch.dtype, want: torch.dtype, what: str) -> str:
    """The hint for an output in dtype ``got`` where x's dtype ``want`` belongs."""
    hint = f"{what} has dtype {got}, expected {want}, x's dtype"
    if got == torch.float64:
        return hint + (": the schedule is float64, and a float64 tensor times a float32 x gives float64. Cast what "
                       "you take from it to x's dtype: sched.alpha_bars[t].to(x.dtype)")
    return hint + ": compute in x's dtype, without casting x or the noise"


def as_tensor(out, like: torch.Tensor, what: str, per_sample: bool = False):
    """(tensor, None) or (None, hint) for an output that should have ``like``'s shape and dtype; ``per_sample``
    as in :func:`shape_hint`."""
    if not isinstance(out, torch.Tensor):
        return None, f"{what} should be a torch.Tensor, got {type(out).__name__}"
    if out.shape != like.shape:
        return None, shape_hint(out.shape, like, what, per_sample)
    if out.dtype != like.dtype:
        return None, dtype_hint(out.dtype, like.dtype, what)
    return out, None


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
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and a.is_floating_point() and b.is_floating_point() and not close(a, b)):
        return ("two calls with the same inputs gave different results: your function draws its own random "
                "numbers. Use the noise (and t) passed in as arguments")
    return None


# ------------------------------------------------------------------------------------------ comparisons
def match_mistake(out: torch.Tensor, expected: torch.Tensor, mistakes: Mistakes, cond: float = 1.0) -> str | None:
    """None when ``out`` equals ``expected``; else the hint of the first mistake it equals, else MISMATCH.
    The mistakes are computed in float64 and compared within the tolerance of ``out``'s dtype (times ``cond``)."""
    if close(out, expected, cond=cond):
        return None
    for hint, make in mistakes:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 - a variant that cannot be formed is simply not this mistake
            continue
        if close(out, wrong, cond=cond):
            return hint
    return MISMATCH


def mismatch_summary(out: torch.Tensor, expected: torch.Tensor, t: torch.Tensor, what: str,
                     cond: float = 1.0) -> str:
    """A hint for a mistake not in the catalogue: how large the error is and at which timesteps."""
    err = (out.double() - expected.double()).abs().reshape(out.shape[0], -1).amax(dim=1)      # (B,)
    bad = ~within(out, expected, cond=cond).reshape(out.shape[0], -1).all(dim=1)                # (B,)
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

    On each schedule and each of :func:`input_cases`: draw x (B, ...), noise and t; call
    ``fn(x, t, sched, noise)`` with x and noise in the case's dtype; compare with
    ``reference(x, t, sched, noise=noise)`` in float64; on a mismatch, name the first of
    ``mistakes(x, t, sched, noise)`` (a list of (hint, wrong-formula)) that reproduces the reader's output.
    """
    gen = torch.Generator().manual_seed(seed)
    for sched in short_schedules():
        for tail, dtype in input_cases():
            x, noise, t = random_batch(sched.T, gen, tail=tail, dtype=dtype)       # float64, exact in dtype
            expected = reference(x, t, sched, noise=noise)                        # (B, *tail) float64
            hint = random_check(fn, reader_args(dtype, x, t, sched, noise), reader_args(dtype, x, t, sched, noise))
            if hint is None:
                out, hint = call_reader(fn, *reader_args(dtype, x, t, sched, noise))
            if hint is None:
                out, hint = as_tensor(out, x.to(dtype), "x_t", per_sample=True)
            if hint is None:
                cond = conditioning(sched, t)
                hint = match_mistake(out, expected, mistakes(x, t, sched, noise), cond)
                if hint == MISMATCH:
                    hint = mismatch_summary(out, expected, t, "x_t", cond)
            if hint is not None:
                return CheckResult(name, False, hint)
    return CheckResult(name, True, passed)


# ------------------------------------------------------------------------------------------ sampler steps
NOISE_NOT_SCALED = "the noise enters your step other than as {sigma} * z (one number times the noise passed in)"
CLIPPED_X0 = ("you clipped x0_hat (e.g. x0_hat.clamp(-1, 1)): the exercise's step does not clip, like the "
              "package's default clip_x0=None. Clipping is a sampling option for images in [-1, 1], not part of "
              "the step")


@dataclass(frozen=True)
class NoiseSplit:
    """The reader's step split by :func:`split_noise`: ``out0`` its output with z = 0, ``c`` the coefficient of
    z in the rest (None when the rest is not one number times z) and ``tol`` the rounding tolerance on c."""

    out0: torch.Tensor
    c: float | None
    tol: float


def split_noise(fn: Callable, args: tuple, out: torch.Tensor, cond: float = 1.0):
    """Split the reader's sampler step into its noise-free part and the scale of its noise (chapters 5 and 6).

    ``args`` are the step's inputs as the reader got them, the fresh noise z last, and ``out`` is the reader's
    output on them. Called again with z = 0, ``fn`` gives the noise-free part ``out0``; the rest, ``out - out0``,
    should be sigma z for one number sigma, which least squares estimates as ``c``. Returns (NoiseSplit, None),
    with c None when the rest is not one number times z (``NOISE_NOT_SCALED`` says so), or (None, hint) when the
    call with z = 0 fails. ``cond`` is the step's :func:`conditioning`.
    """
    *inputs, noise = args
    inputs = [a.clone() if isinstance(a, torch.Tensor) else a for a in inputs]
    out0, hint = call_reader(fn, *inputs, torch.zeros_like(noise))
    if hint is None:
        out0, hint = as_tensor(out0, out, "x_prev")
    if hint is not None:
        return None, f"your function failed with noise = 0: {hint}"
    r = out.double() - out0.double()                                      # the part that comes from the noise
    z = noise.double()
    c = float((r * z).sum() / (z * z).sum())                              # least-squares coefficient of z
    # out and out0 are each within e of their exact values, so r is within 2e of c z, and the least-squares c
    # within 2e sum|z| / sum z^2 of the coefficient.
    e = tolerance(out.dtype, max(1.0, float(out.double().abs().max())), cond=cond)
    c_tol = 2 * e * float(z.abs().sum() / (z * z).sum())
    scaled = math.isfinite(c) and bool(((r - c * z).abs() <= 2 * e + c_tol * z.abs()).all())
    return NoiseSplit(out0, c if scaled else None, c_tol), None
