"""Noise schedules (chapter 1): ranges, monotonicity, the closed forms they come from, storage and configs."""
import dataclasses
import json
import math

import pytest
import torch

import minidiff as md
from tolerances import F32_EPS

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = {
    "linear": lambda T: md.NoiseSchedule.linear(T=T),
    "cosine": lambda T: md.NoiseSchedule.cosine(T=T),
    "sigmoid": lambda T: md.NoiseSchedule.sigmoid(T=T),
    "cosine_capped": lambda T: md.NoiseSchedule.cosine(T=T, max_beta=0.5),
}


def cosine_f(i: int, T: int, s: float = 0.008) -> float:
    """Improved DDPM eq. (17): f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), in plain Python floats."""
    return math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2


@pytest.mark.parametrize("T", [1000, 50, 2])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_betas_in_open_unit_interval_and_alpha_bar_strictly_decreasing(name, T):
    sched = BUILDERS[name](T)
    assert sched.T == T and sched.betas.shape == (T,)
    assert bool(((sched.betas > 0) & (sched.betas < 1)).all())
    ab = sched.alpha_bars
    assert bool(((ab > 0) & (ab < 1)).all())
    assert bool((ab[1:] < ab[:-1]).all()), "alpha_bar must be strictly decreasing"
    # alpha_bar is the cumulative product of alpha = 1 - beta (DDPM eq. 4's definition), checked in a loop:
    # two float64 products of <= 1000 factors, each step rounding by <= eps64/2, agree to <= 2.2e-13 relative.
    prod = 1.0
    for i in range(T):
        prod *= 1.0 - float(sched.betas[i])
        assert math.isclose(float(ab[i]), prod, rel_tol=1e-12)


@pytest.mark.parametrize("base", ["linear", "cosine", "sigmoid"])
def test_zero_terminal_snr_rescale(base):
    sched = BUILDERS[base](1000)
    z = sched.rescale_zero_terminal_snr()
    assert float(z.betas[-1]) == 1.0 and float(z.alpha_bars[-1]) == 0.0 and float(z.snr[-1]) == 0.0
    assert bool(((z.betas[:-1] > 0) & (z.betas[:-1] < 1)).all())
    ab = z.alpha_bars[:-1]
    assert bool(((ab > 0) & (ab < 1)).all()) and bool((z.alpha_bars[1:] < z.alpha_bars[:-1]).all())
    # Lin et al. 2023, Algorithm 1 keeps sqrt(alpha_bar_1) and shifts/scales sqrt(alpha_bar) linearly.
    # (float64: a few roundings of the rescale, and the re-derived cumulative product of <= 1000 alphas: <= ~2e-13
    # relative; atol covers the last entry, 0 exactly on both sides)
    assert math.isclose(float(z.alpha_bars[0].sqrt()), float(sched.alpha_bars[0].sqrt()), rel_tol=1e-12)
    first, last = sched.alpha_bars[0].sqrt(), sched.alpha_bars[-1].sqrt()
    expected = (sched.alpha_bars.sqrt() - last) * first / (first - last)
    torch.testing.assert_close(z.alpha_bars.sqrt(), expected, rtol=1e-10, atol=1e-12)
    # Everything derived from it stays finite, including the posterior at the last step.
    for name in ("snr", "posterior_variance", "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        assert bool(torch.isfinite(getattr(z, name)).all()), name


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_terminal_snr_is_tiny_for_T_1000(name):
    sched = BUILDERS[name](1000)
    ab = sched.alpha_bars
    torch.testing.assert_close(sched.snr, ab / (1 - ab), rtol=0, atol=0)         # the same operations: exact
    assert 0 < float(sched.snr[-1]) < 1e-4
    assert float(sched.snr[0]) > 1e3                                 # and x_1 is almost clean


def test_linear_betas_are_evenly_spaced():
    sched = md.NoiseSchedule.linear(T=1000, beta_start=1e-4, beta_end=0.02)
    # linspace starts exactly at its start and ends within an ulp of its end (4.5 ulps allowed)
    assert float(sched.betas[0]) == 1e-4 and math.isclose(float(sched.betas[-1]), 0.02, rel_tol=1e-15)
    diffs = sched.betas.diff()
    # differences of values <= 0.02 (ulp 3.5e-18) are within ~1e-17 of the step 2e-5: ~5e-13 relative
    torch.testing.assert_close(diffs, torch.full_like(diffs, (0.02 - 1e-4) / 999), rtol=1e-9, atol=0)


def test_cosine_matches_closed_form_where_uncapped():
    T = 1000
    sched = md.NoiseSchedule.cosine(T=T)
    uncapped = int((sched.betas < 0.999).sum())
    assert uncapped == T - 1                                          # only the last beta hits the default cap
    f0 = cosine_f(0, T)
    # float64: near the end cos(...) approaches 0 (1.6e-3 at the last uncapped index), so the argument's rounding
    # near pi/2 (~eps64) costs ~eps64 / cos ~ 2e-13 relative, doubled by the square; the 1000-factor product adds
    # ~2e-13
    for i in range(uncapped):                                         # index i is the paper's t = i + 1
        assert math.isclose(float(sched.alpha_bars[i]), cosine_f(i + 1, T) / f0, rel_tol=1e-10)


def test_cosine_cap_binds():
    T = 1000
    capped = md.NoiseSchedule.cosine(T=T, max_beta=0.5)
    free = md.NoiseSchedule.cosine(T=T, max_beta=0.999)
    assert float(capped.betas.max()) == 0.5 and float(free.betas.max()) == 0.999
    hit = capped.betas == 0.5
    n_hit = int(hit.sum())
    assert n_hit > 1, "a cap of 0.5 must bind on the last steps of the cosine schedule"
    # The cap binds exactly where the uncapped cosine beta 1 - f(t)/f(t-1) would exceed it ...
    raw = torch.tensor([1 - cosine_f(i + 1, T) / cosine_f(i, T) for i in range(T)], dtype=torch.float64)
    assert torch.equal(hit, raw >= 0.5)
    # ... and nowhere else: elsewhere the betas are the closed form (1 - f_t / f_{t-1} cancels to beta >= 4e-5:
    # ~eps64 / 4e-5 = 6e-12 relative).
    torch.testing.assert_close(capped.betas[~hit], raw[~hit], rtol=1e-9, atol=1e-15)
    # A binding cap keeps more signal at the end than the mildly capped schedule.
    assert float(capped.alpha_bars[-1]) > float(free.alpha_bars[-1])
    # multiplying by alpha = 1 - 0.5 = 0.5 is exact in floating point, so the identity is too
    assert float(capped.alpha_bars[-1]) == float(capped.alpha_bars[-1 - n_hit]) * 0.5**n_hit


def test_sigmoid_schedule_shape():
    T, b0, b1 = 1000, 1e-4, 0.02
    sched = md.NoiseSchedule.sigmoid(T=T, beta_start=b0, beta_end=b1)
    betas = sched.betas
    assert bool((betas.diff() > 0).all())                              # increasing
    assert b0 < float(betas[0]) < float(betas[-1]) < b1
    # beta = b0 + (b1 - b0) sigmoid(x) on x = linspace(-6, 6): symmetric since sigmoid(-x) = 1 - sigmoid(x).
    # float64, a few roundings (a vectorised exp within an ulp or two): ~1e-15 relative.
    torch.testing.assert_close(betas + betas.flip(0), torch.full_like(betas, b0 + b1), rtol=1e-12, atol=0)
    assert math.isclose(float(betas[0]), b0 + (b1 - b0) / (1 + math.exp(6.0)), rel_tol=1e-12)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_float64_storage(name):
    sched = BUILDERS[name](100)
    for field in ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "snr", "posterior_variance",
                  "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        value = getattr(sched, field)
        assert value.dtype == torch.float64 and value.device.type == "cpu" and value.shape == (100,), field


def test_float32_betas_are_stored_as_float64_copies():
    betas = torch.linspace(1e-4, 0.02, 10, dtype=torch.float32)
    sched = md.NoiseSchedule(betas)
    assert sched.betas.dtype == torch.float64
    betas[0] = 0.5                                                     # the schedule owns its copy
    assert float(sched.betas[0]) == pytest.approx(1e-4, rel=F32_EPS)  # float32's 1e-4, within eps32/2


def test_schedule_is_frozen(linear):
    with pytest.raises(dataclasses.FrozenInstanceError):
        linear.betas = torch.zeros(3)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_config_round_trip(name):
    sched = BUILDERS[name](100)
    cfg = json.loads(json.dumps(sched.config()))                       # JSON-friendly
    back = md.NoiseSchedule.from_config(cfg)
    assert back.name == sched.name
    assert torch.equal(back.betas, sched.betas) and torch.equal(back.alpha_bars, sched.alpha_bars)


def test_config_round_trip_zero_snr(zero_snr):
    back = md.NoiseSchedule.from_config(json.loads(json.dumps(zero_snr.config())))
    assert torch.equal(back.betas, zero_snr.betas) and back.name == zero_snr.name


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_from_name_matches_constructor(name):
    assert torch.equal(md.NoiseSchedule.from_name(name, T=64).betas, BUILDERS[name](64).betas)


def test_posterior_tables_follow_ddpm_eq_7(cosine):
    """The stored posterior coefficients are DDPM eq. (7) evaluated from betas and alpha_bars."""
    b, ab, abp = cosine.betas, cosine.alpha_bars, cosine.alpha_bars_prev
    assert float(abp[0]) == 1.0 and torch.equal(abp[1:], ab[:-1])
    # float64, the same products and quotients in another order: a few ulps
    torch.testing.assert_close(cosine.posterior_variance, (1 - abp) / (1 - ab) * b, rtol=1e-12, atol=0)
    torch.testing.assert_close(cosine.posterior_mean_coef_x0, abp.sqrt() * b / (1 - ab), rtol=1e-12, atol=0)
    torch.testing.assert_close(cosine.posterior_mean_coef_xt, (1 - abp) * (1 - b).sqrt() / (1 - ab),
                               rtol=1e-12, atol=0)
