"""DDPM (chapter 5) and DDIM (chapter 6) samplers: exact identities between them, randomness, timesteps,
recovery with a perfect model, inversion, callbacks, clipping and precision.

Models here need no training: ``TrueEps`` (conftest) knows the clean batch, ``md.OracleDenoiser`` is the exact
denoiser of a finite point set.
"""
import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ DDPM = DDIM(eta=1)
@pytest.mark.parametrize("clip_x0", [None, 1.0])
def test_ddim_eta1_all_steps_is_ddpm_beta_tilde(small, oracle, gen, clip_x0):
    """DDIM eq. (16) with eta = 1 and consecutive steps is DDPM's posterior variance beta_tilde, and its mean
    (eq. 12) equals the posterior mean (DDPM eq. 7); both draw one noise per step with t > 0, in the same order."""
    x_T = torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    ddpm = md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, clip_x0=clip_x0, generator=gen(1))
    ddim = md.ddim_sample(oracle, (64, 2), small, steps=small.T, eta=1.0, x_T=x_T, clip_x0=clip_x0,
                          generator=gen(1))
    assert ddpm.dtype == torch.float64
    # float64: per step the two formulas differ by rounding, amplified where 1 - a / a_prev (>= beta = 5e-4)
    # cancels in DDIM's sigma (~eps64 / 5e-4 = 4e-13 relative); over 200 steps ~1e-10 at worst
    torch.testing.assert_close(ddim, ddpm, rtol=1e-9, atol=1e-9)
    # and the noise really matters: another seed lands elsewhere
    other = md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, clip_x0=clip_x0, generator=gen(2))
    assert (other - ddpm).abs().max() > 0.1


def test_ddim_eta1_step_is_ddpm_step(cosine, gen):
    x_t = torch.randn(5, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(5, 3, generator=gen(1), dtype=torch.float64)
    z = torch.randn(5, 3, generator=gen(2), dtype=torch.float64)
    for t in (1, 10, 500, 999):
        a, a0 = md.ddpm_step(x_t, eps, t, cosine, noise=z)
        b, b0 = md.ddim_step(x_t, eps, t, t - 1, cosine, eta=1.0, noise=z)
        # float64, elementwise (the same on every CPU). At t = 1 DDIM's 1 - a / a_prev (5e-5) and
        # 1 - a_prev - sigma^2 (2e-5) cancel: ~eps64 / 2e-5 = 1e-11 relative in coefficients <= 7e-3 of |eps|, |z|
        # <= 3: ~1e-12, inside 1e-10
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b0, a0, rtol=0, atol=0)
        sigma = md.ddim_sigma(float(cosine.alpha_bars[t]), float(cosine.alpha_bars[t - 1]), 1.0)
        # both <= 1; the relative error ~2 eps64 / beta_t of the cancellation is at most ~1e-16 absolute
        assert abs(sigma**2 - float(cosine.posterior_variance[t])) < 1e-14


# ------------------------------------------------------------------------------------------ DDPM on skipped steps
def test_skipped_ddpm_step_is_the_posterior_of_the_respaced_chain(cosine, gen):
    """From t to t' < t the forward chain is x_t = sqrt(a_t / a_t') x_t' + noise; Gaussian conditioning gives
    q(x_t' | x_t, x_0) in closed form, which the step's mean and both variances must match."""
    x_t = torch.randn(5, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(5, 3, generator=gen(1), dtype=torch.float64)
    z = torch.randn(5, 3, generator=gen(2), dtype=torch.float64)
    for t, t_prev in ((999, 899), (500, 250), (40, 3), (99, 0)):
        a, a_prev = float(cosine.alpha_bars[t]), float(cosine.alpha_bars[t_prev])
        x0 = (x_t - (1 - a) ** 0.5 * eps) / a**0.5
        mean = a_prev**0.5 * x0 + (a / a_prev) ** 0.5 * (1 - a_prev) / (1 - a) * (x_t - a**0.5 * x0)   # E[x_t' | x_t, x0]
        beta = 1 - a / a_prev
        for variance, var in (("beta_tilde", beta * (1 - a_prev) / (1 - a)), ("beta", beta)):
            got, x0_hat = md.ddpm_step(x_t, eps, t, cosine, variance=variance, noise=z, t_prev=t_prev)
            # float64, elementwise; x0_hat is the same formula (a few ulps of up to 5e4 at t = 999)
            torch.testing.assert_close(got, mean + var**0.5 * z, rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(x0_hat, x0, rtol=1e-12, atol=1e-12)
    last, x0_hat = md.ddpm_step(x_t, eps, 300, cosine, t_prev=-1)          # to the data: x0_hat, no noise
    torch.testing.assert_close(last, x0_hat, rtol=1e-12, atol=1e-12)
    one, _ = md.ddpm_step(x_t, eps, 10, cosine, noise=z, t_prev=9)         # t_prev = t - 1 is the plain step
    torch.testing.assert_close(one, md.ddpm_step(x_t, eps, 10, cosine, noise=z)[0], rtol=0, atol=0)


def test_ddpm_on_skipped_steps_is_ddim_eta1(small, oracle, gen):
    x_T = torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    for steps, spacing in ((10, "trailing"), (7, "linspace"), (small.T, "trailing")):    # float64, as above
        ddpm = md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, steps=steps, spacing=spacing, generator=gen(1))
        ddim = md.ddim_sample(oracle, (64, 2), small, steps=steps, spacing=spacing, eta=1.0, x_T=x_T,
                              generator=gen(1))
        torch.testing.assert_close(ddpm, ddim, rtol=1e-9, atol=1e-9)
    full = md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, generator=gen(1))
    torch.testing.assert_close(md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, steps=small.T, generator=gen(1)),
                               full, rtol=0, atol=0)
    seen = []
    md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, steps=10, variance="beta", generator=gen(1),
                   callback=lambda i, t, x_t, x0_hat: seen.append(t))
    assert seen == md.ddim_timesteps(small.T, 10)
    with pytest.raises(ValueError, match="steps"):
        md.ddpm_sample(oracle, (4, 2), small, steps=small.T + 1)
    with pytest.raises(ValueError, match="spacing"):
        md.ddpm_sample(oracle, (4, 2), small, steps=10, spacing="uniform")
    with pytest.raises(ValueError, match="t_prev"):
        md.ddpm_step(x_T, x_T, 10, small, noise=x_T, t_prev=10)


# ------------------------------------------------------------------------------------------ randomness
def test_eta0_consumes_no_randomness_and_is_deterministic(small, oracle, gen):
    x_T = torch.randn(16, 2, generator=gen(0))
    g = gen(5)
    state = g.get_state()
    a = md.ddim_sample(oracle, (16, 2), small, steps=20, eta=0.0, x_T=x_T, generator=g)
    assert torch.equal(g.get_state(), state)
    b = md.ddim_sample(oracle, (16, 2), small, steps=20, eta=0.0, x_T=x_T, generator=gen(6))
    assert torch.equal(a, b)
    # without x_T the only draw is x_T itself
    c = md.ddim_sample(oracle, (16, 2), small, steps=20, generator=gen(9))
    d = md.ddim_sample(oracle, (16, 2), small, steps=20, x_T=torch.randn(16, 2, generator=gen(9)))
    assert torch.equal(c, d)


def test_stochastic_samplers_are_seeded(small, oracle, gen):
    for sample in (lambda g: md.ddpm_sample(oracle, (8, 2), small, generator=g),
                   lambda g: md.ddim_sample(oracle, (8, 2), small, steps=10, eta=0.5, generator=g)):
        assert torch.equal(sample(gen(3)), sample(gen(3)))
        assert not torch.equal(sample(gen(3)), sample(gen(4)))


# ------------------------------------------------------------------------------------------ timesteps
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("T,steps", [(1000, 1), (1000, 10), (1000, 50), (1000, 7), (1000, 999), (1000, 1000),
                                     (50, 12), (50, 29), (10, 3), (1, 1)])
def test_ddim_timesteps_are_valid(T, steps, spacing):
    ts = md.ddim_timesteps(T, steps, spacing)
    assert len(ts) == steps and all(isinstance(t, int) for t in ts)
    assert all(0 <= t <= T - 1 for t in ts)
    assert all(a > b for a, b in zip(ts, ts[1:])), ts
    if spacing == "trailing" or (spacing == "linspace" and steps > 1):
        assert ts[0] == T - 1                                          # start from pure noise
    if spacing == "leading" or (spacing == "linspace" and steps > 1):
        assert ts[-1] == 0                              # (linspace with one step is [0], as in diffusers)
    if steps == T:
        assert ts == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("T,steps,spacing,position,expected", [
    (27, 26, "trailing", 13, 13),      # 27 - 13 * 27/26 = 13.5 -> 14 (even), minus 1; float64 gives 13.4999.. -> 12
    (28, 27, "linspace", 13, 14),      # 13 * 27/26 = 13.5 -> 14 (even); float64 linspace gives 13.4999.. -> 13
    (1000, 61, "linspace", 30, 500),   # 30 * 999/60 = 499.5 -> 500 (even)
])
def test_ddim_timesteps_round_exact_ties_half_to_even(T, steps, spacing, position, expected):
    assert md.ddim_timesteps(T, steps, spacing)[position] == expected


def test_ddim_sample_visits_its_timesteps(small, oracle, gen):
    for spacing in ("trailing", "leading", "linspace"):
        seen = []
        md.ddim_sample(oracle, (2, 2), small, steps=13, spacing=spacing, generator=gen(0),
                       callback=lambda i, t, x, x0: seen.append(t))
        assert seen == md.ddim_timesteps(small.T, 13, spacing)


# ------------------------------------------------------------------------------------------ perfect model
@pytest.mark.parametrize("name", ["linear", "cosine", "zero_snr"])
def test_true_eps_recovers_x0_at_every_t(name, linear, cosine, zero_snr, true_eps, gen):
    sched = {"linear": linear, "cosine": cosine, "zero_snr": zero_snr}[name]
    x0 = torch.randn(3, 4, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    model = true_eps(x0, sched)
    last = sched.T - 1 if name == "zero_snr" else sched.T      # at alpha_bar = 0, x_T carries nothing of x_0
    for t in range(last):
        x_t = md.q_sample(x0, t, sched, noise=eps)
        eps_hat = model(x_t, torch.full((3,), t))
        _, x0_hat = md.ddpm_step(x_t, eps_hat, t, sched, noise=torch.zeros_like(x_t))
        x_data, _ = md.ddim_step(x_t, eps_hat, t, -1, sched)
        # float64: x0_hat divides the ulps of O(1) values (~1e-15) by sqrt(alpha_bar): a scaled tolerance, generous
        tol = 1e-9 / float(sched.alpha_bars[t]) ** 0.5
        torch.testing.assert_close(x0_hat, x0, rtol=0, atol=tol)
        torch.testing.assert_close(x_data, x0, rtol=0, atol=tol)


def test_true_eps_steps_stay_on_the_forward_marginals(cosine, true_eps, gen):
    """With the true eps, a deterministic DDIM step t -> s lands exactly on q_sample(x0, s) with the same eps,
    and a DDPM step without noise lands on the posterior mean."""
    x0 = torch.randn(3, 4, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    model = true_eps(x0, cosine)
    for t, s in [(999, 979), (500, 100), (10, 9), (1, 0)]:
        x_t = md.q_sample(x0, t, cosine, noise=eps)
        eps_hat = model(x_t, torch.full((3,), t))
        x_s, _ = md.ddim_step(x_t, eps_hat, t, s, cosine)
        # float64: x0_hat magnifies rounding by 1 / sqrt(ab_999) = 2e4, times sqrt(ab_979) = 0.03: ~1e-13; at
        # (1, 0) the cancellation of 1 - a_prev (4e-5) costs ~1e-12 relative
        torch.testing.assert_close(x_s, md.q_sample(x0, s, cosine, noise=eps), rtol=1e-8, atol=1e-8)
        mean, _ = md.q_posterior(x0, x_t, t, cosine)
        x_prev, _ = md.ddpm_step(x_t, eps_hat, t, cosine, noise=torch.zeros_like(x_t))
        torch.testing.assert_close(x_prev, mean, rtol=1e-8, atol=1e-8)


def test_true_eps_full_ddim_loop_returns_x0(linear, true_eps, gen):
    x0 = torch.randn(4, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 3, generator=gen(1), dtype=torch.float64)
    x_T = md.q_sample(x0, linear.T - 1, linear, noise=eps)
    out = md.ddim_sample(true_eps(x0, linear), (4, 3), linear, steps=25, x_T=x_T)
    # float64, 25 steps exact in theory: rounding only (x0_hat's 1 / sqrt(ab) <= 160), ~1e-13
    torch.testing.assert_close(out, x0, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ inversion
def test_inversion_error_shrinks_with_steps(linear, gen):
    """ddim_invert then ddim_sample(eta=0) returns to x_0, with an error that shrinks as steps grow.

    The setting matters. The exact denoiser of N points defines an ODE whose decoder ends on the data set, so
    only inputs on the data set can be reconstructed: we encode 200 of the N = 256 points themselves. For an
    input off the data set the error does not shrink (next test): the smallest timestep of the grid decreases as
    steps grow, the posterior collapses onto one point, and decoding snaps to the data.
    """
    points = torch.randn(256, 2, generator=gen(0), dtype=torch.float64)
    oracle = md.OracleDenoiser(points, linear)
    x0 = points[:200]
    errors = []
    for steps in (10, 20, 50, 100, 200):
        x_T = md.ddim_invert(oracle, x0, linear, steps=steps)
        assert x_T.shape == x0.shape and float(x_T.std()) > 0.5     # it really is noise-like
        back = md.ddim_sample(oracle, x0.shape, linear, steps=steps, eta=0.0, x_T=x_T)
        errors.append(float((back - x0).norm(dim=1).mean()))
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.1 * errors[0] and errors[-1] < 5e-3, errors


def test_inversion_off_the_data_set_snaps_to_the_data(linear, points2d, gen):
    points, _ = points2d
    oracle = md.OracleDenoiser(points, linear)
    x0 = torch.randn(50, 2, generator=gen(1), dtype=torch.float64)
    back = md.ddim_sample(oracle, x0.shape, linear, steps=200, x_T=md.ddim_invert(oracle, x0, linear, steps=200))
    to_data = torch.cdist(back, points).min(dim=1).values
    # decoded onto the data set (to rounding; cdist of > 25 rows cancels in ||x||^2 + ||p||^2 - 2 x.p, leaving
    # ~sqrt(eps64 * 4 ||p||^2) ~ 1e-7) ...
    assert float(to_data.max()) < 1e-6
    assert float((back - x0).norm(dim=1).mean()) > 0.5              # ... hence not back to x_0


def test_inversion_with_true_eps_is_exact_for_one_point(linear, gen):
    """For a single data point the oracle is the true eps, the ODE is a straight line and inversion is exact."""
    x0 = torch.randn(1, 5, generator=gen(0), dtype=torch.float64)
    oracle = md.OracleDenoiser(x0, linear)
    x_T = md.ddim_invert(oracle, x0, linear, steps=10)
    # float64, as above
    torch.testing.assert_close(md.ddim_sample(oracle, (1, 5), linear, steps=10, x_T=x_T), x0, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------------------------ callback
def test_ddim_callback_arguments(small, oracle, gen):
    calls = []
    x_T = torch.randn(6, 2, generator=gen(0), dtype=torch.float64)
    out = md.ddim_sample(oracle, (6, 2), small, steps=8, x_T=x_T,
                         callback=lambda i, t, x_t, x0_hat: calls.append((i, t, x_t.clone(), x0_hat.clone())))
    ts = md.ddim_timesteps(small.T, 8)
    assert [c[0] for c in calls] == list(range(8)) and [c[1] for c in calls] == ts
    assert torch.equal(calls[0][2], x_T)                             # x_t is the state the step starts from
    for k, (i, t, x_t, x0_hat) in enumerate(calls):
        eps = oracle(x_t, torch.full((6,), t))
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        x_prev, x0_expected = md.ddim_step(x_t, eps, t, t_prev, small)
        torch.testing.assert_close(x0_hat, x0_expected, rtol=0, atol=0)
        nxt = calls[k + 1][2] if k + 1 < len(calls) else out
        torch.testing.assert_close(nxt, x_prev, rtol=0, atol=0)


def test_ddpm_callback_arguments(small, oracle, gen):
    calls = []
    out = md.ddpm_sample(oracle, (3, 2), small, generator=gen(0), dtype=torch.float64,
                         callback=lambda i, t, x_t, x0_hat: calls.append((i, t, x_t.shape, x0_hat)))
    assert [c[0] for c in calls] == list(range(small.T))
    assert [c[1] for c in calls] == list(range(small.T - 1, -1, -1))
    assert all(c[2] == (3, 2) for c in calls)
    # the last step (t = 0) returns its x0_hat: the posterior at t = 0 is the point mass at x_0 (its coefficient
    # beta_1 / (1 - (1 - beta_1)) is 1 to ~eps64 / beta_1 = 2e-13 relative)
    torch.testing.assert_close(out, calls[-1][3], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ options
def test_clip_x0_clips(small, gen):
    def far(x_t, t, y=None):                                          # an eps that implies |x0_hat| >> 1
        return -3.0 * torch.ones_like(x_t)

    x_T = torch.randn(8, 2, generator=gen(0))
    for sample in (lambda **kw: md.ddpm_sample(far, (8, 2), small, x_T=x_T, generator=gen(1), **kw),
                   lambda **kw: md.ddim_sample(far, (8, 2), small, steps=10, x_T=x_T, **kw)):
        seen = []
        clipped = sample(clip_x0=0.5, callback=lambda i, t, x, x0: seen.append(x0.abs().max()))
        # the last step returns the clipped x0_hat times a coefficient that is 1 up to float32 rounding: 1e-6 is
        # 17 ulps of 0.5
        assert max(seen) <= 0.5 and float(clipped.abs().max()) <= 0.5 + 1e-6
        assert float(sample().abs().max()) > 2.0                       # without clipping it is far outside


def test_float64_sampling(small, oracle, points2d, gen):
    points, _ = points2d
    for sample in (lambda **kw: md.ddpm_sample(oracle, (8, 2), small, generator=gen(0), **kw),
                   lambda **kw: md.ddim_sample(oracle, (8, 2), small, steps=20, eta=0.3, generator=gen(0), **kw)):
        x64, x32 = sample(dtype=torch.float64), sample()
        assert x64.dtype == torch.float64 and x32.dtype == torch.float32
        # float64 on the points (8 rows: cdist's direct, cancellation-free path): rounding, ~1e-13
        assert float(torch.cdist(x64, points).min(dim=1).values.max()) < 1e-9
    # a deterministic run from the same x_T agrees across precisions
    x_T = torch.randn(8, 2, generator=gen(1), dtype=torch.float64)
    x64 = md.ddim_sample(oracle, (8, 2), small, steps=20, x_T=x_T)
    x32 = md.ddim_sample(oracle, (8, 2), small, steps=20, x_T=x_T.float())
    assert x64.dtype == torch.float64 and x32.dtype == torch.float32
    # float32 rounding (~2e-7 of values ~2) magnified by x0_hat's 1 / sqrt(ab) <= 182 on this schedule, then
    # contracted onto the points: <= ~4e-5
    torch.testing.assert_close(x32.double(), x64, rtol=1e-4, atol=1e-4)


def test_ddpm_variance_beta_differs_from_beta_tilde(small, oracle, gen):
    x_t = torch.randn(4, 2, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 2, generator=gen(1), dtype=torch.float64)
    z = torch.randn(4, 2, generator=gen(2), dtype=torch.float64)
    for t in (1, 50, 199):
        mean, _ = md.ddpm_step(x_t, eps, t, small, noise=torch.zeros_like(z))
        a, _ = md.ddpm_step(x_t, eps, t, small, variance="beta_tilde", noise=z)
        b, _ = md.ddpm_step(x_t, eps, t, small, variance="beta", noise=z)
        # float64: (mean + std z) - mean gives std z back up to an ulp of |mean| <= 3: ~1e-15 absolute
        torch.testing.assert_close(a - mean, float(small.posterior_variance[t]) ** 0.5 * z, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b - mean, float(small.betas[t]) ** 0.5 * z, rtol=1e-10, atol=1e-12)
    # over a whole run (same x_T, same noise) the trajectories part
    x_T = torch.randn(64, 2, generator=gen(3), dtype=torch.float64)
    states = {}
    for variance in ("beta_tilde", "beta"):
        md.ddpm_sample(oracle, (64, 2), small, x_T=x_T, variance=variance, generator=gen(4),
                       callback=lambda i, t, x_t, x0_hat: states.update({variance: x_t}) if t == 10 else None)
    assert not torch.allclose(states["beta"], states["beta_tilde"], atol=1e-3)      # apart by up to 0.04 here


def test_zero_snr_sampling_stays_finite(zero_snr, points2d, gen):
    points, _ = points2d
    oracle = md.OracleDenoiser(points, zero_snr)
    for out in (md.ddim_sample(oracle, (32, 2), zero_snr, steps=20, generator=gen(0), dtype=torch.float64),
                md.ddpm_sample(oracle, (32, 2), zero_snr, generator=gen(0), dtype=torch.float64)):
        assert bool(torch.isfinite(out).all())
        # on the points as in test_float64_sampling; 32 rows take cdist's ||x||^2 + ||p||^2 - 2 x.p path (~1e-7)
        assert float(torch.cdist(out, points).min(dim=1).values.max()) < 1e-6


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_theorem_1_the_ddim_mean_is_affine_in_eps_with_slope_b_t(linear, eta):
    """Chapter 6's proof sketch of DDIM's Theorem 1: with x_0 written through eps, the mean of q_sigma(x_{t-1} |
    x_t, x_0) is a_t x_t + b_t eps, b_t = sqrt(1 - a_prev - sigma^2) - sqrt(a_prev (1 - a) / a), so the KL to the
    model's step is b_t^2 / (2 sigma^2) ||eps - eps_theta||^2. float64; the update is a few products of O(1)
    values, so agreement to 1e-12 leaves ample room over float64 rounding."""
    gen = torch.Generator().manual_seed(0)
    x_t, eps1, eps2, z = (torch.randn(4, 3, 2, generator=gen, dtype=torch.float64) for _ in range(4))
    for t, t_prev in [(999, 899), (500, 499), (10, 0)]:
        a, a_prev = float(linear.alpha_bars[t]), float(linear.alpha_bars[t_prev])
        sigma = md.ddim_sigma(a, a_prev, eta)
        b = (1 - a_prev - sigma**2) ** 0.5 - (a_prev * (1 - a) / a) ** 0.5
        (m1, _), (m2, _) = (md.samplers.ddim_update(x_t, e, a, a_prev, sigma=sigma, noise=z) for e in (eps1, eps2))
        torch.testing.assert_close(m1 - m2, b * (eps1 - eps2), rtol=0, atol=1e-12)
        torch.testing.assert_close(m1 - sigma * z - b * eps1, (a_prev / a) ** 0.5 * x_t, rtol=0, atol=1e-12)  # a_t x_t
