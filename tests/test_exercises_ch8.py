"""Chapter 8's checker: RePaint's merge passes right answers and names the typical mistakes."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex
from minidiff import superres as _sr
from minidiff.exercises import check_consistency_projection


def right(x_unknown, x0, mask, t_prev, sched, noise):
    known = x0 if t_prev < 0 else md.q_sample(x0, t_prev, sched, noise=noise)
    return mask * known + (1 - mask) * x_unknown


def by_hand(x_unknown, x0, mask, t_prev, sched, noise):
    if t_prev == -1:
        known = x0
    else:
        a = sched.alpha_bars[t_prev].to(x0.dtype)
        known = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return torch.where(mask.bool(), known, x_unknown)


def noised(x0, i, sched, noise):
    """Python indexing: i = -1 wraps to the last entry, as a reader's alpha_bars[t_prev] would."""
    a = sched.alpha_bars.to(x0.dtype)[i]
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def test_right_answers_pass():
    assert ex.check_repaint_merge(right)
    assert ex.check_repaint_merge(by_hand)
    assert ex.check_repaint_merge(right, seed=3)


def test_reference_is_what_inpaint_merges():
    """The checker's convention is the package's: inpaint keeps x0 exactly where mask == 1 (t_prev = -1 at the end)."""
    gen = torch.Generator().manual_seed(0)
    oracle_pts = torch.randn(8, 1, 4, 4, generator=gen)
    sched = md.NoiseSchedule.linear(T=20, beta_start=0.01, beta_end=0.3)
    model = md.OracleDenoiser(oracle_pts, sched)
    x0 = torch.randn(3, 1, 4, 4, generator=gen)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    out = md.inpaint(model, x0, mask, sched, steps=4, resample=2, generator=gen)
    assert torch.equal(out * mask, x0 * mask)


@pytest.mark.parametrize("wrong, hint", [
    (lambda xu, x0, m, t, s, n: right(xu, x0, 1 - m, t, s, n), "mask is inverted"),
    (lambda xu, x0, m, t, s, n: m * x0 + (1 - m) * xu, "pasted the clean x0"),
    (lambda xu, x0, m, t, s, n: m * noised(x0, t + 1, s, n) + (1 - m) * xu, "t_prev + 1"),
    (lambda xu, x0, m, t, s, n: m * (x0 if t <= 0 else noised(x0, t - 1, s, n)) + (1 - m) * xu, "t_prev - 1"),
    (lambda xu, x0, m, t, s, n: m * noised(x0, t, s, n) + (1 - m) * xu, "alpha_bars[-1]"),
    (lambda xu, x0, m, t, s, n: m * noised(x0, max(t, 0), s, n) + (1 - m) * xu, "noise at the last step"),
    (lambda xu, x0, m, t, s, n: m * md.q_sample(x0, t, s, noise=n) + (1 - m) * xu, "t_prev = -1 is the last step"),
    (lambda xu, x0, m, t, s, n: right(xu, x0, m, t, s, torch.randn_like(n)), "draws its own random numbers"),
    (lambda xu, x0, m, t, s, n: right(xu, x0, m, t, s, n)[:, 0], "shape"),
])
def test_typical_mistakes_get_their_hint(wrong, hint):
    result = ex.check_repaint_merge(wrong)
    assert not result
    assert hint in result.message, result.message


def test_coefficient_mistakes_reuse_the_q_sample_hints():
    def wrong(xu, x0, m, t, s, n):
        if t < 0:
            return m * x0 + (1 - m) * xu
        a = s.alpha_bars[t].to(x0.dtype)
        return m * (a * x0 + (1 - a).sqrt() * n) + (1 - m) * xu
    result = ex.check_repaint_merge(wrong)
    assert not result and "in the known part" in result.message and "sqrt(alpha_bar)" in result.message, result.message


def test_noise_in_the_generated_region_is_named():
    def wrong(xu, x0, m, t, s, n):
        if t < 0:
            return m * x0 + (1 - m) * xu
        a = s.alpha_bars[t].to(x0.dtype)
        return m * a.sqrt() * x0 + (1 - m) * xu + (1 - a).sqrt() * n
    result = ex.check_repaint_merge(wrong)
    assert not result and "known part only" in result.message, result.message


def test_unknown_mistake_says_which_region():
    def wrong(xu, x0, m, t, s, n):
        return right(xu, x0, m, t, s, n) + 0.1 * (1 - m)
    result = ex.check_repaint_merge(wrong)
    assert not result and "generated region" in result.message, result.message


def test_right_answers_pass_in_every_layout_and_dtype():
    seen = set()

    def spy(xu, x0, m, t, s, n):
        seen.add((tuple(x0.shape), x0.dtype, m.dtype))
        return by_hand(xu, x0, m, t, s, n)

    assert ex.check_repaint_merge(spy)
    shapes = {shape for shape, _, _ in seen}
    assert {(6, 6), (6, 3, 2), (6, 1, 4, 4), (6, 3, 4, 4)} <= shapes
    assert all((shape, dtype, dtype) in seen for shape in shapes for dtype in (torch.float32, torch.float64))


def test_noise_sign_flip_in_the_known_part():
    def wrong(xu, x0, m, t, s, n):
        return right(xu, x0, m, t, s, -n)
    result = ex.check_repaint_merge(wrong)
    assert not result and "in the known part" in result.message and "added, not subtracted" in result.message, \
        result.message


def test_an_uncast_schedule_gets_a_dtype_hint():
    def wrong(xu, x0, m, t, s, n):
        if t < 0:
            return m * x0 + (1 - m) * xu
        a = s.alpha_bars[t:t + 1]                                   # (1,) float64: promotes a float32 x0
        return m * (a.sqrt() * x0 + (1 - a).sqrt() * n) + (1 - m) * xu
    result = ex.check_repaint_merge(wrong)
    assert not result and "dtype torch.float64, expected torch.float32" in result.message, result.message


# ------------------------------------------------------------------------------------------ consistency projection


def _right_projection(x_hat, lowres, factor):
    return x_hat - _sr.low_pass(x_hat, factor) + _sr.upsample(lowres, factor, "nearest")


def test_the_right_projection_passes_and_is_called_on_every_shape_and_dtype():
    seen = set()

    def spy(x_hat, lowres, factor):
        seen.add((tuple(x_hat.shape[1:]), factor, x_hat.dtype))
        return _right_projection(x_hat, lowres, factor)

    assert check_consistency_projection(spy)
    assert len(seen) == 8 and {d for *_, d in seen} == {torch.float32, torch.float64}


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, l, f: x + _sr.upsample(l, f), "without taking x_hat's own block means out"),
    (lambda x, l, f: _sr.upsample(l, f), "upsampled lowres alone"),
    (lambda x, l, f: x.clone(), "x_hat unchanged"),
    (lambda x, l, f: x + _sr.low_pass(x, f) - _sr.upsample(l, f), "signs are swapped"),
    (lambda x, l, f: x - _sr.low_pass(x, f) + _sr.upsample(l, f, "bicubic"), "bicubic upsampling does not"),
    (lambda x, l, f: x - _sr.low_pass(x, f) + _sr.upsample(l, f, "bilinear"), "not bilinearly"),
    (lambda x, l, f: x - _sr.upsample(torch.nn.functional.max_pool2d(x, f), f) + _sr.upsample(l, f), "max pooling"),
    (lambda x, l, f: 0.5 * (x - _sr.low_pass(x, f)) + _sr.upsample(l, f), "changes x_hat's detail"),
    (lambda x, l, f: x - _sr.low_pass(x, 2) + _sr.upsample(l, f), "changes x_hat's detail"),
    (lambda x, l, f: (x - _sr.low_pass(x, f)) * 0 + _sr.upsample(l, f) + 0.1, "does not even downsample"),
    (lambda x, l, f: l, "expected (5, 1, 8, 8)"),
    (lambda x, l, f: _right_projection(x, l, f).double(), "expected x_hat's dtype torch.float32"),
    (lambda x, l, f: _right_projection(x, l, f) + 1e-3 * torch.randn_like(x), "draws its own random numbers"),
])
def test_each_wrong_projection_gets_its_hint(wrong, hint):
    result = check_consistency_projection(wrong)
    assert not result and hint in result.message, result.message
