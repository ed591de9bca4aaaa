"""Likelihoods (minidiff.likelihood): the exact likelihood through the probability-flow ODE and DDPM's ELBO.

* Gaussian data: the flow of x_T ~ N(0, I) is linear, so the model's density at index 0 is a known Gaussian;
  the ODE's log-likelihood converges to it at Heun's order 2.
* A point set with the oracle: the ODE's log-likelihood approaches the noised mixture's log-density, and
  Hutchinson's estimate is unbiased for the exact-trace value (seeded Monte Carlo, in standard errors).
* The discretised decoder's probabilities over the 256 levels sum to 1, also far in the tails.
* The ELBO equals a sum written independently with torch.distributions, and its Monte Carlo version over t is
  unbiased.
"""
import math

import pytest
import torch

import minidiff as md
from minidiff import likelihood as L
from test_sde import GaussianData, mixture_log_density

pytestmark = pytest.mark.usefixtures("one_thread")

SCHED = md.NoiseSchedule.linear()


def gaussian_model_log_density(x, sched, s2):
    """x_T ~ N(0, I) pushed down the exact flow of N(0, s2 I) data: N(0, v_0 / v_T) with v = a s2 + 1 - a."""
    v = lambda i: float(sched.alpha_bars[i]) * s2 + 1 - float(sched.alpha_bars[i])    # noqa: E731
    var = v(0) / v(sched.T - 1)
    return -0.5 * (x.pow(2).sum(1) / var + x.shape[1] * math.log(2 * math.pi * var))


def test_ode_likelihood_converges_at_order_two_for_gaussian_data():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    exact = gaussian_model_log_density(x, SCHED, 0.3)
    errors = [float((L.ode_log_likelihood(GaussianData(SCHED), x, SCHED, steps=s, divergence="exact")["log_p"]
                     - exact).abs().max()) for s in (25, 50, 100)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(1.8 < o < 2.2 for o in orders), (errors, orders)


def oracle_case():
    g = torch.Generator().manual_seed(1)
    points = torch.randn(8, 2, generator=g, dtype=torch.float64)
    a0 = float(SCHED.alpha_bars[0])
    spread = torch.tensor([0.5] * 4 + [2.0] * 4, dtype=torch.float64)[:, None]   # near a point, and farther off
    x = a0**0.5 * points[:4].repeat(2, 1) + (1 - a0) ** 0.5 * spread * torch.randn(8, 2, generator=g,
                                                                                   dtype=torch.float64)
    return md.OracleDenoiser(points, SCHED), points, x


def test_ode_likelihood_of_the_oracle_approaches_the_noised_mixture():
    oracle, points, x = oracle_case()
    exact = mixture_log_density(x, points, float(SCHED.alpha_bars[0]))
    errors = [float((L.ode_log_likelihood(oracle, x, SCHED, steps=s, divergence="exact")["log_p"]
                     - exact).abs().max()) for s in (50, 100, 999)]
    # near index 0 the mixture is peaked (sigma_0 = 0.01 against point spacings ~1), so Heun needs the fine grid;
    # even the full integer grid leaves a few 0.01 nats, against a start 100x further off at 50 steps
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05 and errors[2] < errors[0] / 50, errors


def test_hutchinson_is_unbiased_for_the_exact_trace():
    oracle, points, x = oracle_case()
    exact = L.ode_log_likelihood(oracle, x, SCHED, steps=30, divergence="exact")["log_p"]
    reps = 400
    est = L.ode_log_likelihood(oracle, x.repeat(reps, 1), SCHED, steps=30,
                               generator=torch.Generator().manual_seed(2))["log_p"].view(reps, -1)
    z = (est.mean(0) - exact) / (est.std(0) / reps**0.5)
    assert z.abs().max() < 4.5, z                  # 8 points: |z| < 4.5 fails with probability ~5e-5


def test_hutchinson_uses_one_probe_per_sample_along_the_path():
    oracle, _, x = oracle_case()
    a = L.ode_log_likelihood(oracle, x, SCHED, steps=10, generator=torch.Generator().manual_seed(5))
    b = L.ode_log_likelihood(oracle, x, SCHED, steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a["log_p"], b["log_p"]) and a["nfe"] == 2 * (len(L.likelihood_timesteps(SCHED, 10)) - 1)
    assert torch.allclose(a["log_p"], a["prior"] + a["delta"], rtol=0, atol=1e-12)


def test_likelihood_timesteps_run_from_the_first_to_the_last_index():
    ts = L.likelihood_timesteps(SCHED, 100)
    assert ts[0] == 0 and ts[-1] == SCHED.T - 1 and ts == sorted(set(ts)) and 80 <= len(ts) <= 101
    assert L.likelihood_timesteps(SCHED, 999) == list(range(SCHED.T)) or len(L.likelihood_timesteps(SCHED, 999)) > 700


def test_bits_per_dim_of_the_uniform_density_is_log2_of_the_levels():
    D = 784
    log_p = torch.full((3,), -D * math.log(2.0), dtype=torch.float64)      # density 1/2 per pixel on [-1, 1]
    assert torch.allclose(L.bits_per_dim(log_p, D), torch.full((3,), math.log2(255.0), dtype=torch.float64))


def test_dequantize_stays_in_its_own_bin():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    x = levels.repeat(200)
    d = L.dequantize(x, generator=torch.Generator().manual_seed(0))
    assert (d - x).abs().max() <= L.BIN / 2
    assert abs(float((d - x).mean())) < 4 * L.BIN / 12**0.5 / len(x) ** 0.5      # uniform: sd = BIN / sqrt(12)


@pytest.mark.parametrize("mean,var", [(0.0, 1e-2), (0.3, 1e-5), (0.9999, 1e-6), (-5.0, 1e-4), (3.0, 0.5)])
def test_discretised_decoder_is_a_distribution_over_the_levels(mean, var):
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    logp = L.discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), var)
    assert torch.isfinite(logp).all()
    assert abs(float(torch.logsumexp(logp, 0))) < 1e-10


def test_log_normal_mass_is_accurate_in_the_tails():
    # Phi(b) - Phi(a) for a bin far in the upper tail, against the asymptotic tail of the normal CDF
    a, b = torch.tensor([30.0], dtype=torch.float64), torch.tensor([30.01], dtype=torch.float64)
    got = L.log_normal_mass(a, b)
    reference = torch.special.log_ndtr(-a) + torch.log1p(-torch.exp(torch.special.log_ndtr(-b)
                                                                    - torch.special.log_ndtr(-a)))
    assert torch.isfinite(got).all() and torch.allclose(got, reference, rtol=1e-12)
    assert torch.allclose(L.log_normal_mass(-b, -a), got, rtol=1e-12)        # symmetric


def reference_elbo(model, x0, sched, generator):
    """The ELBO written out with torch.distributions, drawing the noise in the order elbo_bpd does."""
    N = torch.distributions.Normal
    T, D = sched.T, x0[0].numel()
    a_T = float(sched.alpha_bars[-1])
    prior = torch.distributions.kl_divergence(N(a_T**0.5 * x0, (1 - a_T) ** 0.5), N(0.0, 1.0)).flatten(1).sum(1)
    diffusion = 0
    for i in range(1, T):
        t = torch.full((len(x0),), i)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        x_t = md.q_sample(x0, t, sched, noise=noise)
        mean_q, var_q = md.q_posterior(x0, x_t, t, sched)
        x0_hat = md.x0_from_eps(x_t, model(x_t, t), float(sched.alpha_bars[i]))
        mean_p, _ = md.q_posterior(x0_hat, x_t, t, sched)
        diffusion = diffusion + torch.distributions.kl_divergence(N(mean_q, var_q.sqrt()),
                                                                  N(mean_p, var_q.sqrt())).flatten(1).sum(1)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    x_1 = md.q_sample(x0, 0, sched, noise=noise)
    mean = md.x0_from_eps(x_1, model(x_1, 0), float(sched.alpha_bars[0]))
    dec = N(mean, float(sched.posterior_variance[1]) ** 0.5)
    hi = torch.where(x0 > 1 - L.BIN / 2, torch.ones_like(x0), dec.cdf(x0 + L.BIN / 2))
    lo = torch.where(x0 < -1 + L.BIN / 2, torch.zeros_like(x0), dec.cdf(x0 - L.BIN / 2))
    decoder = -(hi - lo).log().flatten(1).sum(1)
    return (prior + diffusion + decoder) / (D * math.log(2))


def short_case():
    sched = md.NoiseSchedule.linear(T=8, beta_start=0.01, beta_end=0.4)
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(256, (6, 1, 2, 2), generator=g).double() / 127.5 - 1          # 8-bit images
    model = md.OracleDenoiser(levels, sched)
    return sched, levels, model


def test_elbo_matches_an_independent_reference():
    sched, x0, model = short_case()
    ours = L.elbo_bpd(model, x0, sched, generator=torch.Generator().manual_seed(4))
    ref = reference_elbo(model, x0, sched, torch.Generator().manual_seed(4))
    assert torch.allclose(ours["bpd"], ref, rtol=1e-9), (ours["bpd"], ref)
    assert torch.allclose(ours["bpd"], ours["prior"] + ours["diffusion"] + ours["decoder"], rtol=1e-12)


def test_elbo_monte_carlo_over_t_is_unbiased():
    sched, x0, model = short_case()
    x = x0[:1].repeat(3000, 1, 1, 1)
    full = L.elbo_bpd(model, x, sched, generator=torch.Generator().manual_seed(5))["diffusion"]
    mc = L.elbo_bpd(model, x, sched, timesteps=2, generator=torch.Generator().manual_seed(6))["diffusion"]
    se = (full.var() / len(full) + mc.var() / len(mc)) ** 0.5
    assert abs(float(full.mean() - mc.mean())) < 4.5 * float(se)


def test_bad_inputs_name_the_argument():
    sched, x0, model = short_case()
    with pytest.raises(ValueError, match="x0 must hold 8-bit images"):
        L.elbo_bpd(model, x0 * 3, sched)
    with pytest.raises(ValueError, match="variance"):
        L.elbo_bpd(model, x0, sched, variance="large")
    with pytest.raises(ValueError, match="divergence"):
        L.ode_log_likelihood(model, x0, sched, steps=4, divergence="trace")
    with pytest.raises(ValueError, match="steps"):
        L.ode_log_likelihood(model, x0, sched, steps=sched.T)
    with pytest.raises(ValueError, match="dims"):
        L.bits_per_dim(torch.zeros(2), 0)
