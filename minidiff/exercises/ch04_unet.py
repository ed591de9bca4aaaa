"""Chapter 4, the U-Net: the checker of the sinusoidal timestep embedding.

Introduced in chapter 4.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from ..unet import timestep_embedding
from ._harness import CheckResult, call_reader

_EMB_ATOL = 1e-3      # float32 sin/cos of arguments up to ~1000 carry errors of ~1e-4; every mistake is far larger
# The conventions an embedding can get wrong, minidiff's choice first (the default) and then the other ones.
_EMB_DEFAULT = dict(order="sin_cos", denom="half - 1", t_shift=0, t_scale=1.0, max_period=10000.0, sign=-1)
_EMB_OPTIONS = dict(order=("sin_cos", "cos_sin", "interleaved", "interleaved_cos"), denom=("half - 1", "half"),
                    t_shift=(0, 1), t_scale=(1.0, 1e-3, 1e3), sign=(-1, 1),
                    max_period=(10000.0, 1000.0, 100.0, 10.0, 1e5, math.exp(4.0)))


def check_timestep_embedding(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(t, dim) -> (B, dim)``, the sinusoidal timestep embedding.

    The reference is :func:`minidiff.timestep_embedding` with its default ``max_period=10000``:
    emb[:, i] = sin(t f_i), emb[:, half + i] = cos(t f_i), f_i = 10000^(-i / (half - 1)), half = dim // 2, and
    one zero column at the end for an odd ``dim``. ``t`` is a (B,) integer tensor of 0-based indices.

    Introduced in chapter 4.
    """
    name = "check_timestep_embedding"
    gen = torch.Generator().manual_seed(seed)
    t = torch.cat([torch.tensor([0, 1, 2, 10, 100, 500, 998, 999]), torch.randint(0, 1000, (8,), generator=gen)])
    for dim in (24, 128, 7):
        expected = timestep_embedding(t, dim).to(torch.float64)                    # (B, dim)
        out, hint = call_reader(fn, t.clone(), dim)
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


def _embedding_hint(name: str, value) -> str:
    """The hint for one convention ``name`` set to the wrong ``value``."""
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
