"""The forward-process posterior q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7), checked against Gaussian conditioning.

Given x_0, the pair (x_{t-1}, x_t) is jointly Gaussian per coordinate:
    x_{t-1} ~ N(sqrt(ab_prev) x_0, 1 - ab_prev),   x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps,
so  Var(x_t) = alpha_t (1 - ab_prev) + beta_t,  Cov(x_{t-1}, x_t) = sqrt(alpha_t) (1 - ab_prev),
and conditioning on x_t gives  mean = mu_1 + S_12 / S_22 (x_t - mu_2),  var = S_11 - S_12^2 / S_22.
The test builds ab_prev from the betas itself, independently of the schedule's tables.
"""
import math

import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULES = {
    "linear": lambda: md.NoiseSchedule.linear(T=1000),
    "cosine": lambda: md.NoiseSchedule.cosine(T=1000),
    "zero_snr": lambda: md.NoiseSchedule.linear(T=1000).rescale_zero_terminal_snr(),
}


def gaussian_conditioning(betas: list[float], t: int, x0: torch.Tensor, x_t: torch.Tensor):
    """Mean and variance of x_{t-1} given (x_t, x_0) by the standard bivariate-Gaussian formula."""
    ab_prev = 1.0
    for beta in betas[:t]:
        ab_prev *= 1.0 - beta
    beta = betas[t]
    alpha = 1.0 - beta
    mu1, mu2 = math.sqrt(ab_prev) * x0, math.sqrt(alpha * ab_prev) * x0
    s11 = 1.0 - ab_prev
    s12 = math.sqrt(alpha) * s11
    s22 = alpha * s11 + beta
    return mu1 + s12 / s22 * (x_t - mu2), s11 - s12**2 / s22


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_posterior_is_gaussian_conditioning(name, gen):
    sched = SCHEDULES[name]()
    betas = sched.betas.tolist()
    ts = [0, 1, 2, 10, 99, 500, 998, 999]
    x0 = torch.randn(len(ts), 3, generator=gen(0), dtype=torch.float64)
    x_t = torch.randn(len(ts), 3, generator=gen(1), dtype=torch.float64) * 2
    mean, var = md.q_posterior(x0, x_t, torch.tensor(ts), sched)
    assert mean.shape == (len(ts), 3) and var.shape == (len(ts), 1)
    for row, t in enumerate(ts):
        m, v = gaussian_conditioning(betas, t, x0[row], x_t[row])
        # float64: s11 = 1 - ab_prev cancels to ~1e-4 at t = 1 (relative error ~2 eps64 / 1e-4 = 4e-12) and the
        # loop's product differs from the cumulative one by <= t eps64: the mean to ~1e-11, variances (<= 1) to ~1e-15
        torch.testing.assert_close(mean[row], m, rtol=1e-10, atol=1e-10)
        assert abs(float(var[row]) - v) < 1e-12


def test_posterior_matches_monte_carlo_conditioning(small, gen):
    """Draw (x_{t-1}, x_t) pairs by the forward process and regress x_{t-1} on x_t: slope, intercept and
    residual variance are the posterior's, within 5 standard errors."""
    n, t, x0 = 200_000, 20, 0.8
    g = gen(3)
    x_prev = md.q_sample(torch.full((n,), x0, dtype=torch.float64), t - 1, small, generator=g)
    x_t = md.q_step(x_prev, t, small, generator=g)
    # posterior mean is affine in x_t: read its slope and intercept off q_posterior
    ones = torch.ones(1, dtype=torch.float64)
    m0, var = md.q_posterior(x0 * ones, 0 * ones, t, small)
    m1, _ = md.q_posterior(x0 * ones, ones, t, small)
    slope, intercept, var = float(m1 - m0), float(m0), float(var)
    cov = torch.cov(torch.stack([x_prev, x_t]))
    fit_slope = float(cov[0, 1] / cov[1, 1])
    fit_intercept = float(x_prev.mean() - fit_slope * x_t.mean())
    residual = x_prev - (fit_intercept + fit_slope * x_t)
    # ordinary least squares: SE(slope)^2 = var / (n s_x^2), SE(intercept)^2 = var (1/n + mean_x^2 / (n s_x^2))
    s_xx, mean_x = float(cov[1, 1]), float(x_t.mean())
    assert abs(fit_slope - slope) < 5 * math.sqrt(var / (n * s_xx))
    assert abs(fit_intercept - intercept) < 5 * math.sqrt(var * (1 / n + mean_x**2 / (n * s_xx)))
    assert abs(float(residual.var()) - var) < 5 * var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_beta_tilde_identity(name):
    sched = SCHEDULES[name]()
    ab, abp, b = sched.alpha_bars, sched.alpha_bars_prev, sched.betas
    x = torch.zeros(sched.T, 1, dtype=torch.float64)
    _, var = md.q_posterior(x, x, torch.arange(sched.T), sched)
    # the same float64 product in another order: a few ulps
    torch.testing.assert_close(var.flatten(), (1 - abp) / (1 - ab) * b, rtol=1e-12, atol=0)
    assert bool((var.flatten()[1:] < b[1:]).all())                    # beta_tilde_t < beta_t for t > 1


def test_t0_edge_is_the_point_mass_at_x0(linear, gen):
    x0 = torch.randn(4, 2, 3, generator=gen(0), dtype=torch.float64)
    x_t = torch.randn(4, 2, 3, generator=gen(1), dtype=torch.float64)
    mean, var = md.q_posterior(x0, x_t, 0, linear)
    assert torch.equal(var, torch.zeros(4, 1, 1, dtype=torch.float64))
    # x_t has no weight at all, and coef_x0 = beta_1 / (1 - (1 - beta_1)) is 1 up to the rounding of 1 - beta_1
    # (2^-54) relative to beta_1 = 1e-4: <= 5.6e-13, inside rtol
    torch.testing.assert_close(mean, x0, rtol=1e-12, atol=1e-12)
    assert float(linear.posterior_mean_coef_xt[0]) == 0.0


def test_posterior_mean_in_eps_form(cosine, gen):
    """With x_0 written through eps, the posterior mean is DDPM eq. (11):
    (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)."""
    t = torch.tensor([1, 50, 400, 900])
    x0 = torch.randn(4, 5, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 5, generator=gen(1), dtype=torch.float64)
    x_t = md.q_sample(x0, t, cosine, noise=eps)
    mean, _ = md.q_posterior(x0, x_t, t, cosine)
    b, ab = cosine.betas[t].view(4, 1), cosine.alpha_bars[t].view(4, 1)
    # float64: 1 - ab cancels to 9e-5 at t = 1 (~3e-12 relative), the rest is a few ulps
    torch.testing.assert_close(mean, (x_t - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt(), rtol=1e-9, atol=1e-9)


def test_posterior_dtype_follows_input(linear):
    x = torch.zeros(2, 3, dtype=torch.float32)
    mean, var = md.q_posterior(x, x, 5, linear)
    assert mean.dtype == var.dtype == torch.float32
