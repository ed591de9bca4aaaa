"""Chapter 9's checkers: check_score_from_eps and check_reverse_sde_step pass right answers, written several
ways, and name each typical mistake."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex

pytestmark = pytest.mark.usefixtures("one_thread")


def _ab(sched, t, like):
    """alpha_bar_t shaped (B, 1, ..., 1) in like's dtype."""
    return sched.alpha_bars.to(like.dtype)[t].view(-1, *[1] * (like.ndim - 1))


# ------------------------------------------------------------------------------------------ Tweedie's score
@pytest.mark.parametrize("right", [
    lambda e, t, s: -e / (1 - _ab(s, t, e)).sqrt(),
    lambda e, t, s: -e * (1 - _ab(s, t, e)).rsqrt(),
    lambda e, t, s: md.score_from_eps(e, _ab(s, t, e)),
    lambda e, t, s: -e / md.NoiseSchedule(s.betas).alpha_bars.to(e.dtype)[t].neg().add(1).sqrt().view(
        -1, *[1] * (e.ndim - 1)),
])
def test_score_right_answers_pass(right):
    result = ex.check_score_from_eps(right)
    assert result, result.message
    assert "matches minidiff.score_from_eps" in result.message


def _score_in_place(e, t, s):
    e /= -(1 - _ab(s, t, e)).sqrt()
    return e


@pytest.mark.parametrize("wrong, hint", [
    (lambda e, t, s: e / (1 - _ab(s, t, e)).sqrt(), "the sign"),
    (lambda e, t, s: -e / (1 - _ab(s, t, e)), "not by its variance"),
    (lambda e, t, s: -e * (1 - _ab(s, t, e)).sqrt(), "inverse conversion"),
    (lambda e, t, s: -e / _ab(s, t, e).sqrt(), "signal's scale"),
    (lambda e, t, s: -e / s.betas.to(e.dtype)[t].view(-1, *[1] * (e.ndim - 1)).sqrt(), "one-step noise variance"),
    (lambda e, t, s: -e, "you returned -eps"),
    (lambda e, t, s: -e * _ab(s, t, e).sqrt() / (1 - _ab(s, t, e)), "not sqrt(alpha_bar_t) / (1 - alpha_bar_t)"),
    (lambda e, t, s: -e / (1 - s.alpha_bars_prev.to(e.dtype)[t].view(-1, *[1] * (e.ndim - 1))).sqrt(), "index t - 1"),
    (lambda e, t, s: -e / (1 - s.alpha_bars.to(e.dtype)[(t + 1).clamp(max=s.T - 1)].view(
        -1, *[1] * (e.ndim - 1))).sqrt(), "index t + 1"),
    (lambda e, t, s: -e / (1 - s.alpha_bars.to(e.dtype)[t][:, None, None]).sqrt(), "fits only 3-d x"),
    (lambda e, t, s: -e / (1 - s.alpha_bars[t].view(-1, *[1] * (e.ndim - 1))).sqrt(), "sched.alpha_bars[t].to(x.dtype)"),
    (lambda e, t, s: -e / (1 - s.alpha_bars[t]).sqrt(), "broadcasting error"),
    (lambda e, t, s: -e / (1 - _ab(s, t, e)).sqrt() + 1e-3 * torch.randn_like(e), "draws its own random numbers"),
    (_score_in_place, "in place"),
    (lambda e, t, s: (-e / (1 - _ab(s, t, e)).sqrt()).tolist(), "torch.Tensor"),
    (lambda e, t: -e, "TypeError"),
])
def test_score_mistakes_get_their_hint(wrong, hint):
    result = ex.check_score_from_eps(wrong)
    assert not result
    assert hint in result.message, result.message


def test_score_unknown_mistake_reports_the_error():
    result = ex.check_score_from_eps(lambda e, t, s: -e / (1 - _ab(s, t, e)).sqrt() * 1.01)
    assert not result and "differs from the package's" in result.message, result.message


# ------------------------------------------------------------------------------------------ the reverse SDE
def _parts(t, s):
    return float(s.betas[t]), float(s.alpha_bars[t])


def _sde(x, e, t, s, z):
    b, a = _parts(t, s)
    return x + 0.5 * b * x + b * (-e / (1 - a) ** 0.5) + b**0.5 * z


@pytest.mark.parametrize("right", [
    _sde,
    lambda x, e, t, s, z: md.sde.reverse_sde_step(x, e, float(s.betas[t]), float(s.alpha_bars[t]), z),
    lambda x, e, t, s, z: (1 + 0.5 * s.betas[t]) * x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * e
    + s.betas[t].sqrt() * z,                                          # 0-d float64 tensors keep x's dtype
])
def test_sde_right_answers_pass(right):
    result = ex.check_reverse_sde_step(right)
    assert result, result.message
    assert "matches minidiff.sde.reverse_sde_step" in result.message


def _with(drift=None, noise=None):
    """A step with the right parts except the one given: drift(x, e, b, a) and noise(b, t, s) -> coefficient."""
    def step(x, e, t, s, z):
        b, a = _parts(t, s)
        d = x + 0.5 * b * x + b * (-e / (1 - a) ** 0.5) if drift is None else drift(x, e, b, a)
        c = b**0.5 if noise is None else noise(b, t, s)
        return d + c * z
    return step


def _shifted(k):
    def step(x, e, t, s, z):
        i = min(max(t + k, 0), s.T - 1)
        return _sde(x, e, i, s, z * (float(s.betas[t]) / float(s.betas[i])) ** 0.5)
    return step


@pytest.mark.parametrize("wrong, hint", [
    (_with(drift=lambda x, e, b, a: x + 0.5 * b * (x - e / (1 - a) ** 0.5)), "probability-flow ODE"),
    (_with(drift=lambda x, e, b, a: x + 0.5 * b * x + b * e / (1 - a) ** 0.5), "plus sign"),
    (_with(drift=lambda x, e, b, a: x - 0.5 * b * x - b * e / (1 - a) ** 0.5), "changes sign"),
    (_with(drift=lambda x, e, b, a: x - b * e / (1 - a) ** 0.5), "left out the 1/2 beta_t x_t"),
    (_with(drift=lambda x, e, b, a: x + 0.5 * b * x - b * e / (1 - a)), "without the square root"),
    (_with(drift=lambda x, e, b, a: x + 0.5 * b * x - b * e), "used -eps as the score"),
    (_with(drift=lambda x, e, b, a: (x - b / (1 - a) ** 0.5 * e) / (1 - b) ** 0.5), "DDPM's posterior mean"),
    (_with(noise=lambda b, t, s: 0.0), "no noise was added"),
    (_with(noise=lambda b, t, s: b), "not by beta_t"),
    (_with(noise=lambda b, t, s: -b**0.5), "subtracted the noise"),
    (_with(noise=lambda b, t, s: 1.0), "not scaled"),
    (_with(noise=lambda b, t, s: float(s.posterior_variance[t]) ** 0.5), "sqrt(beta_tilde_t)"),
    (_shifted(-1), "index t - 1"),
    (_shifted(+1), "index t + 1"),
    (lambda x, e, t, s, z: (_sde(x, e, t, s, z), x), "return only x_{t-1}"),
    (lambda x, e, t, s, z: _sde(x, e, t, s, torch.randn_like(z)), "draws its own random numbers"),
    (lambda x, e, t, s, z: _sde(x, e, t, s, z).double(), "dtype"),
    (lambda x, e, t, s, z: _sde(x, e, t, s, z) * (1 + 0.01 * z), "one number times the noise"),
])
def test_sde_mistakes_get_their_hint(wrong, hint):
    result = ex.check_reverse_sde_step(wrong)
    assert not result
    assert hint in result.message, result.message


def test_sde_two_mistakes_are_both_named():
    result = ex.check_reverse_sde_step(_with(drift=lambda x, e, b, a: x + 0.5 * b * (x - e / (1 - a) ** 0.5),
                                             noise=lambda b, t, s: 0.0))
    assert not result and "drift: " in result.message and "noise: " in result.message, result.message


def test_every_catalogued_mistake_changes_the_step_where_the_checker_looks():
    """No hint is dead: each catalogued drift mistake moves the step by far more than float32 rounding at one of
    the checker's timesteps at least (where 1 - alpha_bar_t ~ 1, the square-root mistakes cannot show)."""
    from minidiff.exercises.ch09_score_sde import _drift_mistakes, _schedules
    gaps = {}
    for sched in _schedules():                          # the short schedules' large betas show the O(beta^2) ones
        for t in (sched.T - 1, sched.T // 2, 1, 0):
            g = torch.Generator().manual_seed(t)
            x, e = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(2))
            ref = md.sde.reverse_sde_step(x, e, float(sched.betas[t]), float(sched.alpha_bars[t]), None)
            for hint, make in _drift_mistakes(x, e, t, sched):
                gaps[hint[:50]] = max(gaps.get(hint[:50], 0.0), float((make() - ref).abs().max()))
    # float32 rounding of steps whose terms reach 1/sqrt(beta_0) ~ 100 is about 128 * 1.2e-7 * 100 ~ 2e-3
    assert min(gaps.values()) > 1e-2, gaps
