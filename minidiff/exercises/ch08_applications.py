"""Chapter 8, applications: the checkers of RePaint's merge, the inpainting step of :func:`minidiff.inpaint`,
and of the consistency projection of super-resolution, ILVR's last step.

Introduced in chapter 8.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..forward import q_sample
from ..schedules import NoiseSchedule
from ..superres import downsample, low_pass, upsample
from ._harness import (MISMATCH, CheckResult, as_tensor, call_reader, conditioning, input_cases, match_mistake, randn,
                       random_check, reader_args, short_schedules, within)
from .ch02_closed_form import _q_sample_mistakes


def check_repaint_merge(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_unknown, x0, mask, t_prev, sched, noise) -> x_prev``, RePaint's merge after one step.

    The reference is ``mask * known + (1 - mask) * x_unknown`` with ``known = minidiff.q_sample(x0, t_prev,
    sched, noise=noise)``: the original noised to the level t_prev that the reverse step has just reached
    (``x_unknown`` is that step's output). ``t_prev`` is a Python int in [-1, T-1]; ``t_prev = -1`` is the
    last step, onto the data: there ``known = x0`` with no noise. ``mask`` is 1 where ``x0`` is known and
    0 where it is generated; it may have shape (B, ...) or broadcast to it, e.g. (1, 1, H, W).
    This is the merge :func:`minidiff.inpaint` does at every step. Run on image batches (B, 1, 4, 4) and
    (B, 3, 4, 4), and on (B, 3, 2) and (B, 6), in float64 and float32: x_prev must keep x0's shape and dtype.

    Introduced in chapter 8.
    """
    name = "check_repaint_merge"
    gen = torch.Generator().manual_seed(seed)
    for k, sched in enumerate(short_schedules()):
        for tail, dtype in input_cases(first=(1, 4, 4)):
            B, T = 6, sched.T
            x0 = randn(gen, (B, *tail), dtype)                                     # float64, exact in dtype
            x_unknown = randn(gen, (B, *tail), dtype)
            mask_shape = (1, *tail) if k == 0 else (B, *tail)                      # broadcast, or one per sample
            mask = (torch.rand(mask_shape, generator=gen) < 0.5).to(torch.float64)
            mask.view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)       # both values present
            for t_prev in (T // 2, 0, T - 2, -1):
                noise = randn(gen, (B, *tail), dtype)
                args = (x_unknown, x0, mask, t_prev, sched, noise)
                expected = mask * _repaint_known(x0, t_prev, sched, noise) + (1 - mask) * x_unknown

                def fresh():
                    return reader_args(dtype, *args)

                hint = random_check(fn, fresh(), fresh())
                if hint is None:
                    out, hint = call_reader(fn, *fresh())
                    if hint is not None and t_prev < 0:
                        hint += (". t_prev = -1 is the last step, onto the data: there the known part is x0 "
                                 "itself (no q_sample, which accepts only indices in [0, T-1])")
                if hint is None:
                    out, hint = as_tensor(out, x0.to(dtype), "x_prev")
                if hint is None:
                    cond = conditioning(sched, t_prev)
                    hint = match_mistake(out, expected, _repaint_mistakes(*args), cond)
                    if hint == MISMATCH:
                        hint = _merge_summary(out, expected, mask, t_prev, cond)
                if hint is not None:
                    return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches RePaint's merge (minidiff.inpaint) on 2 schedules x 4 steps, "
                                   "t_prev = -1 included")


def _repaint_known(x0: torch.Tensor, t_prev: int, sched: NoiseSchedule, noise: torch.Tensor) -> torch.Tensor:
    """The known part at the level of t_prev: q(x_{t_prev} | x0) with the given noise; x0 itself at -1."""
    return x0 if t_prev < 0 else q_sample(x0, t_prev, sched, noise=noise)


def _noised(x0, i: int, sched: NoiseSchedule, noise) -> torch.Tensor:
    """sqrt(a) x0 + sqrt(1 - a) noise with a = alpha_bars[i], Python indexing (i = -1 wraps to T-1)."""
    a = sched.alpha_bars.to(x0.dtype)[i]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _merge_summary(out: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor, t_prev: int, cond: float) -> str:
    """For a merge wrong in no catalogued way: in which region (known, generated or both) it differs."""
    bad = ~within(out, expected, cond=cond)                                    # (B, ...); NaN is wrong too
    keep = torch.broadcast_to(mask, bad.shape).bool()
    where = ("in the known region (mask == 1)" if bool(bad[keep].any()) and not bool(bad[~keep].any())
             else "in the generated region (mask == 0): x_prev must equal x_unknown there"
             if not bool(bad[keep].any()) else "in both regions")
    return (f"x_prev differs from the package's merge at t_prev = {t_prev} {where} (largest error "
            f"{float((out.double() - expected).abs().max()):.3g})")


def _repaint_mistakes(x_unknown, x0, mask, t_prev, sched, noise) -> list:
    """(hint, wrong x_prev) pairs for the merge mask * known + (1 - mask) * x_unknown."""
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


def check_consistency_projection(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_hat, lowres, factor) -> x``, the image nearest to ``x_hat`` that downsamples to ``lowres``.

    The reference is ``x_hat - low_pass(x_hat, factor) + upsample(lowres, factor, "nearest")``: keep x_hat's
    detail, replace its block means by ``lowres`` (:mod:`minidiff.superres`; what ILVR does at its last step).
    ``x_hat`` is (B, C, H, W), ``lowres`` (B, C, H / factor, W / factor); x must keep x_hat's shape and dtype.
    Run on (B, 1, 8, 8), (B, 3, 8, 8) and (B, 1, 4, 8) images with factors 2 and 4 (4 and 2 for the last), in
    float64 and float32.

    Introduced in chapter 8.
    """
    name = "check_consistency_projection"
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.float64, torch.float32):
        for tail, factor in (((1, 8, 8), 2), ((3, 8, 8), 4), ((1, 4, 8), 4), ((1, 4, 8), 2)):
            x_hat = randn(gen, (5, *tail), dtype)                                      # float64, exact in dtype
            lowres = downsample(randn(gen, (5, *tail), dtype), factor).to(dtype).double()
            args = (x_hat, lowres, factor)
            expected = x_hat - low_pass(x_hat, factor) + upsample(lowres, factor, "nearest")

            def fresh():
                return reader_args(dtype, *args)

            hint = random_check(fn, fresh(), fresh())
            if hint is None:
                out, hint = call_reader(fn, *fresh())
            if hint is None and isinstance(out, torch.Tensor) and out.shape == x_hat.shape and out.dtype != dtype:
                hint = (f"x has dtype {out.dtype}, expected x_hat's dtype {dtype}: something you computed with "
                        f"(a new tensor, a cast) is in another precision; keep to x_hat.dtype")
            if hint is None:
                out, hint = as_tensor(out, x_hat.to(dtype), "x")
            if hint is None:
                hint = match_mistake(out, expected, _projection_mistakes(*args))
                if hint == MISMATCH:
                    gap = float((downsample(out.double(), factor) - lowres).abs().max())
                    hint = (f"x differs from the projection (largest error "
                            f"{float((out.double() - expected).abs().max()):.3g}); "
                            + (f"it does not even downsample to lowres (off by up to {gap:.3g})" if gap > 1e-6 else
                               "it does downsample to lowres, but changes x_hat's detail (x - low_pass(x)) too: "
                               "the projection keeps it"))
            if hint is not None:
                return CheckResult(name, False, f"{hint} (input {tuple(x_hat.shape)}, factor {factor}, {dtype})")
    return CheckResult(name, True, "matches x_hat - low_pass(x_hat) + upsample(lowres) on 3 image shapes, factors "
                                   "2 and 4, float64 and float32")


def _projection_mistakes(x_hat, lowres, factor) -> list:
    """(hint, wrong x) pairs for x = x_hat - phi(x_hat) + U(lowres), phi = U D."""
    up = upsample(lowres, factor, "nearest")                                       # (B, C, H, W)
    detail = x_hat - low_pass(x_hat, factor)
    return [
        ("you added the upsampled lowres to x_hat without taking x_hat's own block means out first: subtract "
         "low_pass(x_hat, factor)", lambda: x_hat + up),
        ("you returned the upsampled lowres alone (nearest interpolation): x_hat's detail, "
         "x_hat - low_pass(x_hat), must stay", lambda: up),
        ("you returned x_hat unchanged: its block means must be replaced by lowres", lambda: x_hat),
        ("the signs are swapped: x_hat's low frequencies go out (minus low_pass(x_hat)) and lowres's come in "
         "(plus its upsampling)", lambda: x_hat + low_pass(x_hat, factor) - up),
        ("upsample lowres by repeating pixels (mode 'nearest'): a smooth bicubic upsampling does not downsample "
         "back to lowres, so the result is not consistent", lambda: detail + upsample(lowres, factor, "bicubic")),
        ("upsample lowres by repeating pixels (mode 'nearest'), not bilinearly: only then does the result "
         "downsample back to lowres", lambda: detail + upsample(lowres, factor, "bilinear")),
        ("the low-pass filter must use block means (average pooling); max pooling is not a projection",
         lambda: x_hat - upsample(torch.nn.functional.max_pool2d(x_hat, factor), factor) + up),
    ]
