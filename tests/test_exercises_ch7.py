"""Chapter 7's checker: check_cfg_combine passes right answers and names each typical mistake."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex
from minidiff.exercises import ch07_guidance

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("right", [
    lambda u, c, s: u + s * (c - u),
    lambda u, c, s: (1 - s) * u + s * c,
    lambda u, c, s: torch.lerp(u, c, s),
    lambda u, c, s: md.cfg_combine(u, c, s),
    lambda u, c, s: c + (s - 1) * (c - u),                        # the CFG paper's form with w = s - 1
])
def test_right_answers_pass(right):
    result = ex.check_cfg_combine(right)
    assert result, result.message
    assert "matches minidiff.cfg_combine" in result.message


def _in_place(u, c, s):
    u += s * (c - u)
    return u


@pytest.mark.parametrize("wrong, hint", [
    (lambda u, c, s: c + s * (u - c), "swapped the two predictions"),
    (lambda u, c, s: (1 - s) * c + s * u, "swapped the two predictions"),
    (lambda u, c, s: c + s * (c - u), "CFG paper's form"),
    (lambda u, c, s: (1 + s) * c - s * u, "CFG paper's form"),
    (lambda u, c, s: u + (s - 1) * (c - u), "w = s - 1"),
    (lambda u, c, s: s * c, "lost the unconditional base"),
    (lambda u, c, s: s * (c - u), "guidance direction"),
    (lambda u, c, s: u + s * c, "multiplies the difference"),
    (lambda u, c, s: (u + c) / 2, "averaged"),
    (lambda u, c, s: u - s * (c - u), "sign of the guidance term"),
    (lambda u, c, s: u + int(s) * (c - u), "integer scales"),
    (_in_place, "in place"),
    (lambda u, c, s: (u + s * (c - u))[:, 0], "shape"),
    (lambda u, c, s: (u + s * (c - u)).tolist(), "torch.Tensor"),
    (lambda u, c: u, "TypeError"),
])
def test_typical_mistakes_get_their_hint(wrong, hint):
    result = ex.check_cfg_combine(wrong)
    assert not result
    assert hint in result.message, result.message


def test_unknown_mistake_names_the_failing_scales():
    result = ex.check_cfg_combine(lambda u, c, s: c if s == 1 else u)
    assert not result
    assert "differs from minidiff.cfg_combine at the scales" in result.message
    assert "right at [0.0, 1.0]" in result.message, result.message


def test_mistakes_are_told_apart_at_the_tested_scales():
    """No two catalogued mistakes (nor a mistake and the right answer) agree at every tested scale."""
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    variants = [lambda s: md.cfg_combine(u, c, s)] + [make for _, make in ch07_guidance._cfg_mistakes(u, c)]
    for i, a in enumerate(variants):
        for b in variants[i + 1:]:
            assert not all(torch.allclose(a(s), b(s)) for s in ch07_guidance._CFG_SCALES)


def test_checker_is_exported():
    assert "check_cfg_combine" in ex.__all__


def test_right_answers_pass_in_every_layout_and_dtype():
    seen = set()

    def spy(u, c, s):
        seen.add((tuple(u.shape), u.dtype))
        return u + s * (c - u)

    assert ex.check_cfg_combine(spy)
    shapes = {shape for shape, _ in seen}
    assert {(6, 6), (6, 3, 2), (6, 1, 4, 4), (6, 3, 4, 4)} <= shapes
    assert all((shape, dtype) in seen for shape in shapes for dtype in (torch.float32, torch.float64))


@pytest.mark.parametrize("wrong, hint", [
    (lambda u, c, s: (u + s * (c - u)).double(), "dtype torch.float64, expected torch.float32"),
    (lambda u, c, s: (u + s * (c - u)).float(), "dtype torch.float32, expected torch.float64"),
    (lambda u, c, s: u + torch.tensor([s], dtype=torch.float64) * (c - u), ".to(x.dtype)"),
])
def test_the_wrong_dtype_gets_a_dtype_hint(wrong, hint):
    result = ex.check_cfg_combine(wrong)
    assert not result and hint in result.message, result.message


def test_a_shape_for_one_rank_gets_a_shape_hint():
    def wrong(u, c, s):
        scale = torch.full((len(u), 1, 1, 1), s, dtype=u.dtype)   # shaped for image batches only
        return u + scale * (c - u)
    result = ex.check_cfg_combine(wrong)
    assert not result and "has shape (6, 6, 3, 2), expected (6, 3, 2)" in result.message, result.message
