"""The score, the SDE and the probability-flow ODE (minidiff.sde, chapter 9).

* Tweedie: the score read off the oracle's eps is the gradient of the noised mixture's log-density (autograd).
* Denoising score matching is L_simple weighted by 1 / (1 - alpha_bar), sample by sample.
* DDIM with eta = 0 is *exactly* Euler on the probability-flow ODE in (sigma, x_bar); Euler in t agrees with it,
  and DDPM (sigma^2 = beta) with Euler-Maruyama on the reverse SDE, only to first order: their per-step gap
  shrinks as beta^2.
* Both ODE discretisations converge, at order 1, to the exact flow of Gaussian data (known in closed form).
"""
import math

import pytest
import torch

import minidiff as md
from minidiff import sde
from minidiff.samplers import ddim_update, ddpm_update
from tolerances import F64_EPS, assert_within

pytestmark = pytest.mark.usefixtures("one_thread")

SCHED = md.NoiseSchedule.linear()


def mixture_log_density(x, points, alpha_bar):
    """log p_t(x) of (1/N) sum_n N(sqrt(a) p_n, (1 - a) I), the noised empirical distribution."""
    d2 = (x[:, None, :] - alpha_bar**0.5 * points[None]).pow(2).sum(-1)                 # (B, N)
    D = points.shape[1]
    return torch.logsumexp(-d2 / (2 * (1 - alpha_bar)), 1) - math.log(len(points)) \
        - 0.5 * D * math.log(2 * math.pi * (1 - alpha_bar))


class GaussianData:
    """The exact eps-prediction for data N(0, s2 I): E[eps | x_t] = sqrt(1 - a) x_t / (a s2 + 1 - a)."""

    def __init__(self, sched, s2=0.3):
        self.sched, self.s2 = sched, s2

    def __call__(self, x, t, y=None):
        a = self.sched.alpha_bars.to(x.dtype)[t].view(-1, *[1] * (x.ndim - 1))
        return (1 - a).sqrt() * x / (a * self.s2 + 1 - a)


@pytest.mark.parametrize("t", [0, 10, 200, 700, 999])
def test_tweedie_score_is_the_gradient_of_the_log_density(t):
    g = torch.Generator().manual_seed(t)
    points = torch.randn(12, 3, generator=g, dtype=torch.float64)
    oracle = md.OracleDenoiser(points, SCHED)
    a = float(SCHED.alpha_bars[t])
    x = (a**0.5 * points[:6] + (1 - a) ** 0.5 * torch.randn(6, 3, generator=g, dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(mixture_log_density(x, points, a).sum(), x)
    score = sde.score_from_eps(oracle(x.detach(), t), a)
    # both are sums over the 12 points of terms of size |x - sqrt(a) p| / (1 - a)
    scale = (x.detach().abs().max() + points.abs().max()) / (1 - a)
    assert_within(score, grad, 1e3 * F64_EPS * scale, "Tweedie's score vs autograd")


def test_score_and_eps_round_trip_and_errors():
    eps = torch.randn(5, 2, dtype=torch.float64)
    a = torch.rand(5, 1, dtype=torch.float64) * 0.98 + 0.01
    back = sde.eps_from_score(sde.score_from_eps(eps, a), a)
    assert_within(back, eps, 4 * F64_EPS * eps.abs(), "eps -> score -> eps")
    with pytest.raises(ValueError, match="alpha_bar"):
        sde.score_from_eps(eps, 1.0)                  # no noise: the score of the data is not defined
    with pytest.raises(ValueError, match="alpha_bar"):
        sde.score_from_eps(eps, torch.ones(3, 1, dtype=torch.float64) * 0.5)


def test_dsm_is_the_eps_loss_weighted_by_one_over_one_minus_alpha_bar():
    g = torch.Generator().manual_seed(0)
    points = torch.randn(10, 2, generator=g, dtype=torch.float64)
    oracle = md.OracleDenoiser(points, SCHED)
    x0 = points[torch.randint(10, (64,), generator=g)]
    t = torch.randint(SCHED.T, (64,), generator=g)
    noise = torch.randn(64, 2, generator=g, dtype=torch.float64)
    dsm = sde.dsm_loss(oracle, x0, SCHED, t, noise)
    simple = md.eps_loss(oracle, x0, SCHED, t=t, noise=noise, reduction="none")
    weight = 1 / (1 - SCHED.alpha_bars[t])
    # both square differences of terms as large as |eps| and |eps_hat|, then scale by the weight
    a = SCHED.alpha_bars[t][:, None]
    eps_hat = oracle(a.sqrt() * x0 + (1 - a).sqrt() * noise, t)
    scale = weight * (noise.abs() + eps_hat.abs()).pow(2).mean(1)
    assert_within(dsm, simple * weight, 64 * F64_EPS * scale, "DSM = L_simple / (1 - alpha_bar)")
    with pytest.raises(ValueError, match="t .* and noise"):
        sde.dsm_loss(oracle, x0, SCHED, None, noise)


@pytest.mark.parametrize("t,t_prev", [(999, 979), (500, 499), (300, 0), (40, -1), (0, -1), (999, -1)])
def test_ddim_eta0_is_exactly_euler_in_sigma(t, t_prev):
    g = torch.Generator().manual_seed(t)
    x, eps = torch.randn(2, 8, 3, generator=g, dtype=torch.float64)
    a = float(SCHED.alpha_bars[t])
    a_prev = 1.0 if t_prev < 0 else float(SCHED.alpha_bars[t_prev])
    ours = sde.euler_sigma_step(x, eps, a, a_prev)
    ddim, _ = ddim_update(x, eps, a, a_prev, sigma=0.0)
    # a few roundings of terms as large as |x| / sqrt(a) and sigma |eps|
    scale = (x.abs() / a**0.5 + ((1 - a) / a) ** 0.5 * eps.abs())
    assert_within(ours, ddim, 16 * F64_EPS * scale, "Euler in sigma vs DDIM")


def constant_beta(beta, T=20000):
    return md.NoiseSchedule(betas=torch.full((T,), beta, dtype=torch.float64))


def first_order_gaps(step_pair):
    """Per-step gap between two discretisations at betas 1e-2, 1e-3, 1e-4, at alpha_bar ~ 0.5."""
    g = torch.Generator().manual_seed(1)
    x, eps, z = torch.randn(3, 16, 2, generator=g, dtype=torch.float64)
    gaps = []
    for beta in (1e-2, 1e-3, 1e-4):
        sched = constant_beta(beta)
        t = int(round(math.log(0.5) / math.log(1 - beta)))
        gaps.append(float(step_pair(sched, t, x, eps, z).abs().max()))
    return gaps


@pytest.mark.parametrize("pair", ["ddpm-vs-reverse-sde", "ddim-vs-pf-ode"])
def test_the_discrete_samplers_match_the_sde_and_ode_steps_to_first_order(pair):
    def ddpm_vs_sde(sched, t, x, eps, z):
        beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
        ddpm, _ = ddpm_update(x, eps, t, t - 1, sched, variance="beta", noise=z)
        return ddpm - sde.reverse_sde_step(x, eps, beta, a, z)

    def ddim_vs_ode(sched, t, x, eps, z):
        beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
        ddim, _ = ddim_update(x, eps, a, float(sched.alpha_bars[t - 1]), sigma=0.0)
        return ddim - sde.pf_ode_step(x, eps, beta, a)

    gaps = first_order_gaps(ddpm_vs_sde if pair == "ddpm-vs-reverse-sde" else ddim_vs_ode)
    # O(beta^2): ten times smaller beta, a hundred times smaller gap (slope 2 on a log-log plot)
    slopes = [math.log10(gaps[i] / gaps[i + 1]) for i in range(2)]
    assert all(1.9 < s < 2.1 for s in slopes), (gaps, slopes)


def test_both_ode_discretisations_converge_at_order_one_to_the_exact_flow():
    sched = md.NoiseSchedule.linear()
    s2 = 0.3
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_T = float(sched.alpha_bars[-1])
    exact = x_T / a_T**0.5 * (s2 / (s2 + (1 - a_T) / a_T)) ** 0.5     # x_bar ~ sqrt(s2 + sigma^2) on the flow
    errors = {"ddim": [], "pf_ode": []}
    for steps in (20, 40, 80, 160):
        errors["ddim"].append(float((md.ddim_sample(GaussianData(sched, s2), (64, 2), sched, steps=steps,
                                                    x_T=x_T) - exact).abs().max()))
        errors["pf_ode"].append(float((sde.pf_ode_sample(GaussianData(sched, s2), (64, 2), sched, steps=steps,
                                                         x_T=x_T) - exact).abs().max()))
    for name, e in errors.items():
        orders = [math.log2(e[i] / e[i + 1]) for i in range(len(e) - 1)]
        assert all(0.85 < o < 1.15 for o in orders), (name, e, orders)
    assert errors["ddim"][-1] < errors["pf_ode"][-1]        # same order, smaller constant in sigma


def test_reverse_sde_and_ddpm_with_the_same_noise_give_nearly_the_same_samples():
    points = torch.randn(8, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    oracle = md.OracleDenoiser(points, SCHED)
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = md.ddpm_sample(oracle, (256, 2), SCHED, variance="beta", x_T=x_T, generator=torch.Generator().manual_seed(1))
    b = sde.reverse_sde_sample(oracle, (256, 2), SCHED, x_T=x_T, generator=torch.Generator().manual_seed(1))
    c = md.ddpm_sample(oracle, (256, 2), SCHED, variance="beta", x_T=x_T, generator=torch.Generator().manual_seed(2))
    same, other = (a - b).norm(dim=1), (a - c).norm(dim=1)
    # most paths stay together; a few part ways where the oracle's posterior splits between two points
    assert same.median() < 0.02 * other.median()
    assert (same < 1e-2).float().mean() > 0.9


def test_step_beta_is_the_respaced_chains_beta():
    assert sde.step_beta(SCHED, 10, 9) == pytest.approx(float(SCHED.betas[10]), rel=1e-12)
    a, a_prev = float(SCHED.alpha_bars[500]), float(SCHED.alpha_bars[300])
    assert sde.step_beta(SCHED, 500, 300) == pytest.approx(1 - a / a_prev, rel=1e-12)
    assert sde.step_beta(SCHED, 0, -1) == pytest.approx(float(SCHED.betas[0]), rel=1e-12)
    with pytest.raises(ValueError, match="t_prev"):
        sde.step_beta(SCHED, 10, 10)


def test_bad_inputs_name_the_argument():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="beta"):
        sde.reverse_sde_step(x, x, 0.0, 0.5, None)
    with pytest.raises(ValueError, match="alpha_bar"):
        sde.pf_ode_step(x, x, 0.1, 1.0)
    with pytest.raises(ValueError, match="shape"):
        sde.reverse_sde_step(x, torch.zeros(2, 4), 0.1, 0.5, None)
    with pytest.raises(ValueError, match="alpha_bar_prev"):
        sde.euler_sigma_step(x, x, 0.5, 0.4)              # the step must go towards the data
    with pytest.raises(ValueError, match="steps"):
        sde.pf_ode_sample(GaussianData(SCHED), (2, 3), SCHED, steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        sde.reverse_sde_sample(GaussianData(SCHED), (2, 3), SCHED, guidance_scale=3.0)
