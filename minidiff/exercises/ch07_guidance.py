"""Chapter 7, classifier-free guidance: the checker of the guided noise prediction.

Introduced in chapter 7.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..guidance import cfg_combine
from ._harness import CheckResult, as_tensor, call_reader, close, input_cases, randn, reader_args

# 0 and 1 are the two models themselves; 0.5 is where swapping the inputs (and averaging) goes unnoticed, so
# scales on both sides of it, beyond 1 (real guidance), non-integers and a negative one are tested too.
_CFG_SCALES = (0.0, 1.0, 0.5, 3.0, 1.3, 7.5, -0.5)


def check_cfg_combine(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(eps_uncond, eps_cond, scale) -> eps``, the classifier-free guidance combination.

    The reference is :func:`minidiff.cfg_combine`, eps_uncond + scale (eps_cond - eps_uncond), tested at the
    scales 0 and 1 (the unconditional and the conditional model), between and beyond them, at non-integer
    scales and at a negative one, on (6, 1, 4, 4) predictions, then (6, 3, 2), (6, 6) and (6, 3, 4, 4) ones, in
    float64 and in float32: the guided eps must keep their shape and dtype.

    Introduced in chapter 7.
    """
    name = "check_cfg_combine"
    gen = torch.Generator().manual_seed(seed)
    for tail, dtype in input_cases(first=(1, 4, 4)):
        u = randn(gen, (6, *tail), dtype)                                          # eps_uncond, float64
        c = randn(gen, (6, *tail), dtype)                                          # eps_cond
        hint = _cfg_hint(fn, u, c, dtype)
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, f"matches minidiff.cfg_combine at the scales {list(_CFG_SCALES)}")


def _cfg_hint(fn: Callable, u: torch.Tensor, c: torch.Tensor, dtype: torch.dtype) -> str | None:
    """None if ``fn`` is right at every scale on the predictions u and c (float64 values, given to ``fn`` in
    ``dtype``); else the hint."""
    outs = {}
    for s in _CFG_SCALES:
        u_in, c_in = reader_args(dtype, u, c)
        out, hint = call_reader(fn, u_in, c_in, s)
        if hint is None and not (torch.equal(u_in, u.to(dtype)) and torch.equal(c_in, c.to(dtype))):
            hint = ("your function changed its inputs in place (an in-place op such as eps_uncond += ... or "
                    ".add_()): return a new tensor and leave eps_uncond and eps_cond as they were")
        if hint is None:
            out, hint = as_tensor(out, u_in, f"the guided eps at scale {s}")
        if hint is not None:
            return hint
        outs[s] = out
    wrong = [s for s in _CFG_SCALES if not close(outs[s], cfg_combine(u, c, s))]
    if not wrong:
        return None
    for hint, make in _cfg_mistakes(u, c):
        if all(close(outs[s], make(s)) for s in _CFG_SCALES):
            return hint
    right = [s for s in _CFG_SCALES if s not in wrong]
    msg = f"your guided eps differs from minidiff.cfg_combine at the scales {sorted(wrong)}"
    if right:
        msg += f" (it is right at {sorted(right)})"
    return msg + ". The guided prediction is eps_uncond + s (eps_cond - eps_uncond)"


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
