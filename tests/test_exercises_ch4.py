"""Chapter 4's checker: check_timestep_embedding passes right answers and names each typical mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

import minidiff as md
from minidiff import exercises as ex


def embedding(t, dim, *, order="sin_cos", denom=None, t_shift=0, t_scale=1.0, max_period=10000.0,
              log=math.log, pad="end"):
    """A reader's embedding with one knob per convention (defaults: minidiff's)."""
    half = dim // 2
    d = max(half - 1, 1) if denom is None else denom(half)
    freqs = torch.exp(-log(max_period) * torch.arange(half, dtype=torch.float32) / d)   # (half,)
    args = ((t.float() + t_shift) * t_scale)[:, None] * freqs[None, :]                  # (B, half)
    s, c = torch.sin(args), torch.cos(args)
    if order == "sin_cos":
        emb = torch.cat([s, c], dim=1)
    elif order == "cos_sin":
        emb = torch.cat([c, s], dim=1)
    else:
        emb = torch.stack([s, c], dim=2).flatten(1)                                     # sin, cos, sin, cos, ...
    if dim % 2 and pad == "end":
        emb = F.pad(emb, (0, 1))
    elif dim % 2 and pad == "start":
        emb = F.pad(emb, (1, 0))
    return emb


def test_right_answers_pass():
    assert ex.check_timestep_embedding(embedding)
    assert ex.check_timestep_embedding(lambda t, dim: md.timestep_embedding(t, dim))

    def in_float64(t, dim):        # same formula, other precision and written with powers
        half = dim // 2
        f = 10000.0 ** (-torch.arange(half, dtype=torch.float64) / (half - 1))
        a = t.double()[:, None] * f
        return F.pad(torch.cat([a.sin(), a.cos()], 1), (0, dim % 2))
    assert ex.check_timestep_embedding(in_float64)


@pytest.mark.parametrize("wrong, hint", [
    (lambda t, d: embedding(t, d, order="cos_sin"), "halves are swapped"),
    (lambda t, d: embedding(t, d, denom=lambda h: h), "divides by half - 1"),
    (lambda t, d: embedding(t, d, t_shift=1), "t + 1"),
    (lambda t, d: embedding(t, d, max_period=1000.0), "max_period = 1000"),
    (lambda t, d: embedding(t, d, order="interleaved"), "interleaved"),
    (lambda t, d: embedding(t, d, t_scale=1e-3), "scaled t to [0, 1]"),
    (lambda t, d: embedding(t, d, log=math.log10), "log10"),
    (lambda t, d: embedding(t, d, pad="none"), "append one zero column"),
    (lambda t, d: embedding(t, d, pad="start"), "not at the start"),
    (lambda t, d: embedding(t, d).T, "transposed"),
])
def test_typical_mistakes_get_their_hint(wrong, hint):
    result = ex.check_timestep_embedding(wrong)
    assert not result
    assert hint in result.message, result.message


def test_guided_diffusion_convention_names_both_differences():
    result = ex.check_timestep_embedding(lambda t, d: embedding(t, d, order="cos_sin", denom=lambda h: h))
    assert not result
    assert "halves are swapped" in result.message and "divides by half - 1" in result.message, result.message


def test_unknown_mistake_says_where():
    def wrong(t, dim):
        emb = embedding(t, dim)
        emb[:, dim // 2:] *= 0.5                                  # cosines off by a factor
        return emb
    result = ex.check_timestep_embedding(wrong)
    assert not result and "the sine columns" in result.message and "are right" in result.message, result.message


def test_errors_become_hints():
    result = ex.check_timestep_embedding(lambda t, dim: 1 / 0)
    assert not result and "ZeroDivisionError" in result.message
    result = ex.check_timestep_embedding(lambda t, dim: embedding(t, dim).numpy())
    assert not result and "torch.Tensor" in result.message
