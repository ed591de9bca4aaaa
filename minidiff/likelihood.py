"""Likelihoods in bits per dimension: the ELBO of chapter 3 and the exact likelihood of chapter 9.

Both are upper bounds on the negative log-likelihood of the *discrete* images (pixel levels k = 0..255, stored as
x = k / 127.5 - 1, one level = ``BIN`` = 2/255 wide), in bits per dimension (nats / (D ln 2)):

* :func:`elbo_bpd` — DDPM's variational bound (Ho et al. 2020, eq. 5): the prior term, the T - 1 Gaussian KLs
  and the discretised Gaussian decoder of their Section 3.3, which gives the probability of each pixel's bin.
* :func:`ode_log_likelihood` — the probability-flow ODE as a continuous normalising flow (Song et al. 2021,
  Section 4.3; Chen et al. 2018): with dx/dt = f(x, t), log p_0(x_0) = log p_T(x_T) + int_0^T div f dt. Its
  density is that of a generative model — x_T ~ N(0, I), then the ODE down to index 0 — and
  :func:`bits_per_dim` turns it into a bound on the discrete NLL by uniform dequantisation (Theis et al. 2016):
  -log P(k) <= E_u[-log p(x_k + u)] - D log BIN, u uniform over one bin.

The ODE is integrated in the DDIM variables x_bar = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar),
where d x_bar / d sigma = eps(x, t) and div = sqrt(alpha_bar) tr(d eps / d x), with Heun's method on the schedule's
own timesteps (so a discrete-time model is only called at the indices it was trained on); the divergence is
integrated by the trapezoidal rule in log sigma, which is exact where the data look like one point (div = D / sigma). The trace is exact
(D backward passes, for small D) or Hutchinson's estimate v^T (d eps / d x) v with a Rademacher v (Hutchinson
1989; Grathwohl et al. 2019), unbiased, one backward pass.
"""
from __future__ import annotations

import math

import torch

from ._validate import (check_choice, check_generator, check_int, check_real, check_sampling, check_tensor, rand,
                        randint, noise_like)
from .conversions import _x0_from_eps
from .schedules import NoiseSchedule

BIN = 2.0 / 255.0          # the width of one pixel level in [-1, 1] (minidiff.data: x = k / 127.5 - 1)
DIVERGENCES = ("hutchinson", "exact")
VARIANCES = ("beta_tilde", "beta")


def dequantize(x: torch.Tensor, *, bin_width: float = BIN, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation: x + (u - 1/2) * bin_width with u ~ U(0, 1) per pixel, so each discrete value
    spreads over its own bin. Introduced in chapter 9."""
    check_tensor(x, "x")
    bin_width = check_real(bin_width, "bin_width", low=0.0, low_open=True)
    check_generator(generator)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return x + (u - 0.5) * bin_width


def bits_per_dim(log_p: torch.Tensor, dims: int, *, bin_width: float = BIN) -> torch.Tensor:
    """Bits per dimension of a density evaluated at dequantised data: -(log_p / D + log bin_width) / ln 2.

    Args:
        log_p: (B,) log-densities in nats, e.g. ``ode_log_likelihood(...)["log_p"]``.
        dims: D, the number of dimensions of one sample (784 for a 28x28 image).
        bin_width: the width of one discrete level (``BIN`` for 8-bit images in [-1, 1]).

    Introduced in chapter 9.
    """
    check_tensor(log_p, "log_p")
    dims = check_int(dims, "dims", low=1)
    bin_width = check_real(bin_width, "bin_width", low=0.0, low_open=True)
    return -(log_p / dims + math.log(bin_width)) / math.log(2.0)


# ------------------------------------------------------------------------------------------ exact likelihood
def likelihood_timesteps(sched: NoiseSchedule, steps: int) -> list[int]:
    """About ``steps`` + 1 increasing indices from 0 to T - 1, evenly spaced in log sigma (distinct after
    rounding, so fewer where the grid is coarser than the schedule). Introduced in chapter 9."""
    from ._validate import check_schedule
    check_schedule(sched)
    steps = check_int(steps, "steps", low=1, high=sched.T - 1)
    log_sigma = (0.5 * ((1 - sched.alpha_bars) / sched.alpha_bars).log())             # (T,) increasing
    targets = torch.linspace(float(log_sigma[0]), float(log_sigma[-1]), steps + 1, dtype=torch.float64)
    idx = torch.searchsorted(log_sigma, targets).clamp(max=sched.T - 1)
    return sorted(set(idx.tolist()) | {0, sched.T - 1})


def ode_log_likelihood(model, x: torch.Tensor, sched: NoiseSchedule, *, steps: int = 100,
                       y: torch.Tensor | None = None, divergence: str = "hutchinson",
                       generator: torch.Generator | None = None) -> dict:
    """log p(x) under the probability-flow ODE of an eps-model, per sample.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``, in eval mode; each sample's output may depend only on that
            sample (true of the U-Net and the oracle; not of batch norm in training mode).
        x: (B, ...) the points, e.g. dequantised images (:func:`dequantize`).
        sched: the model's noise schedule.
        steps: the number of Heun steps, about (see :func:`likelihood_timesteps`); 2 model calls each.
        y: optional (B,) labels: the likelihood of the class-conditional model.
        divergence: ``"hutchinson"`` (one Rademacher probe per sample, drawn once and kept along the path) or
            ``"exact"`` (D backward passes per call: for small D).
        generator: the source of the probes.

    Returns:
        a dict: ``log_p`` (B,) in nats, its parts ``prior`` (B,) = log N(x_T; 0, I) and ``delta`` (B,) = the
        integral of the divergence plus the change of variables x -> x_bar, the end point ``x_T`` (B, ...) and
        ``nfe`` (model calls per sample). Introduced in chapter 9.
    """
    model, y, divergence = _check_likelihood(model, x, sched, steps, y, divergence, generator)
    ts = likelihood_timesteps(sched, steps)
    probe = None
    if divergence == "hutchinson":                               # Rademacher v: E[v v^T] = I
        probe = (rand(x.numel(), generator=generator, device=x.device) < 0.5).to(x.dtype).view(x.shape) * 2 - 1
    out = ode_likelihood_loop(model, x, ts, sched, y, probe)
    model.check_finite()
    return out


def ode_likelihood_loop(model, x: torch.Tensor, ts: list[int], sched: NoiseSchedule, y=None,
                        probe: torch.Tensor | None = None) -> dict:
    """Heun's method on d x_bar / d sigma = eps and d (log p) / d sigma = -div, from x at index ts[0] = 0 up
    the increasing indices ``ts``; ``probe`` None means the exact trace. See :func:`ode_log_likelihood`."""
    a = sched.alpha_bars.tolist()
    sigma = [((1 - ab) / ab) ** 0.5 for ab in a]
    x_bar = x / a[ts[0]] ** 0.5
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for t, t_next in zip(ts, ts[1:]):
        h = sigma[t_next] - sigma[t]
        d, div = eps_and_divergence(model, a[t] ** 0.5 * x_bar, t, y, probe)
        x_euler = x_bar + h * d                                          # Euler predictor
        d_next, div_next = eps_and_divergence(model, a[t_next] ** 0.5 * x_euler, t_next, y, probe)
        x_bar = x_bar + h * (d + d_next) / 2                             # trapezoidal corrector
        # int div d sigma = int sigma div d(log sigma), trapezoidal in log sigma (exact where div ~ 1 / sigma);
        # the divergence in x_bar is sqrt(alpha_bar) times the divergence in x
        u, u_next = math.log(sigma[t]), math.log(sigma[t_next])
        delta += (u_next - u) * (sigma[t] * a[t] ** 0.5 * div + sigma[t_next] * a[t_next] ** 0.5 * div_next) / 2
    x_T = a[ts[-1]] ** 0.5 * x_bar
    D = x[0].numel()
    delta += 0.5 * D * (math.log(a[ts[-1]]) - math.log(a[ts[0]]))      # x -> x_bar at both ends
    prior = -0.5 * (x_T.flatten(1).double().pow(2).sum(1) + D * math.log(2 * math.pi))   # log N(x_T; 0, I)
    return {"log_p": prior + delta, "prior": prior, "delta": delta, "x_T": x_T, "nfe": 2 * (len(ts) - 1)}


def eps_and_divergence(model, x: torch.Tensor, t: int, y, probe: torch.Tensor | None):
    """The model's eps at (x, t) and tr(d eps / d x) per sample: Hutchinson's v^T J v with ``probe`` v, else
    exact (one backward pass per dimension). Returns ``(eps, div)``, (B, ...) and (B,) float64, detached."""
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)          # (B,)
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        eps = model(x, t_batch, y)
        if probe is not None:
            (vjp,) = torch.autograd.grad(eps, x, probe)                                # v^T J, (B, ...)
            div = (vjp * probe).flatten(1).sum(1)
        else:
            flat = eps.flatten(1)                                                      # (B, D)
            div = sum(torch.autograd.grad(flat[:, d].sum(), x, retain_graph=True)[0].flatten(1)[:, d]
                      for d in range(flat.shape[1]))
    return eps.detach(), div.detach().double()


# ------------------------------------------------------------------------------------------ the ELBO
@torch.no_grad()
def elbo_bpd(model, x0: torch.Tensor, sched: NoiseSchedule, *, y: torch.Tensor | None = None,
             variance: str = "beta_tilde", timesteps: int | None = None,
             generator: torch.Generator | None = None) -> dict:
    """DDPM's variational bound on -log p(x_0) for 8-bit images in [-1, 1], in bits per dimension, per image.

    L = L_T + sum_{t=2}^T L_{t-1} + L_0 (Ho et al. 2020, eq. 5; paper t = index + 1)::

        L_T     = KL( q(x_T | x_0) || N(0, I) )
        L_{t-1} = KL( q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t) )
        L_0     = -log p(x_0 | x_1)

    with x_t ~ q(x_t | x_0), p(x_{t-1} | x_t) of variance sigma_t^2 and p(x_0 | x_1) the discretised Gaussian
    decoder (Ho et al. 2020, eq. 13).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) images on the 8-bit grid in [-1, 1].
        sched: the model's noise schedule.
        y: optional (B,) labels: the bound of the class-conditional model.
        variance: sigma_t^2 of the reverse steps, ``"beta_tilde"`` or ``"beta"``; the decoder's variance is
            beta_tilde of paper step 2 (improved-diffusion's clipped value; beta_tilde_1 = 0) or beta_1.
        timesteps: None sums all T - 1 KL terms (T - 1 model calls per image); an int K estimates the sum from K
            indices per image drawn uniformly (unbiased: (T - 1) / K times their sum).
        generator: the source of the noise of each x_t and of the drawn indices.

    Returns:
        a dict of (B,) float64 tensors in bits per dimension: ``prior``, ``diffusion`` (the sum of the KLs),
        ``decoder`` and ``bpd`` (their total). Introduced in chapter 3; computed in chapter 9.
    """
    model, y, variance, timesteps = _check_elbo(model, x0, sched, y, variance, timesteps, generator)
    out = elbo_terms(model, x0, sched, y, variance=variance, timesteps=timesteps, generator=generator)
    model.check_finite()
    return out


@torch.no_grad()
def elbo_terms(model, x0, sched, y=None, *, variance="beta_tilde", timesteps=None, generator=None) -> dict:
    """The math of :func:`elbo_bpd`, which checks the arguments."""
    B, T = x0.shape[0], sched.T
    x64 = x0.double()
    a_T = float(sched.alpha_bars[-1])                             # L_T: a KL between Gaussians, per pixel
    prior = 0.5 * (a_T * x64.pow(2) + (1 - a_T) - 1 - math.log(1 - a_T)).flatten(1).sum(1)

    def kl_term(t):                                               # t: (B,) indices >= 1
        noise = noise_like(x0, generator)
        a = sched.alpha_bars.to(x0.device)[t].view(-1, *[1] * (x0.ndim - 1))             # (B, 1, ...) float64
        x_t = (a.sqrt() * x64 + (1 - a).sqrt() * noise.double()).to(x0.dtype)
        x0_hat = _x0_from_eps(x_t.double(), model(x_t, t, y).double(), a)
        c0, ct = (v.to(x0.device)[t].view_as(a) for v in (sched.posterior_mean_coef_x0,
                                                            sched.posterior_mean_coef_xt))
        q_var = sched.posterior_variance.to(x0.device)[t].view_as(a)                     # beta_tilde_t
        p_var = q_var if variance == "beta_tilde" else sched.betas.to(x0.device)[t].view_as(a)
        mean_gap = c0 * (x64 - x0_hat)                            # mu_tilde - mu_theta: the x_t parts cancel
        kl = 0.5 * ((p_var / q_var).log() + q_var / p_var - 1 + mean_gap.pow(2) / p_var)
        return kl.flatten(1).sum(1)                                # (B,) nats

    if timesteps is None:
        diffusion = sum(kl_term(torch.full((B,), i, dtype=torch.long, device=x0.device)) for i in range(1, T))
    else:
        draws = [kl_term(1 + randint(T - 1, B, generator=generator, device=x0.device)) for _ in range(timesteps)]
        diffusion = (T - 1) / timesteps * sum(draws)

    t0 = torch.zeros(B, dtype=torch.long, device=x0.device)        # L_0 at paper step 1
    noise = noise_like(x0, generator)
    a0 = float(sched.alpha_bars[0])
    x_1 = (a0**0.5 * x64 + (1 - a0) ** 0.5 * noise.double()).to(x0.dtype)
    mean = _x0_from_eps(x_1.double(), model(x_1, t0, y).double(), a0)   # mu_theta(x_1, 1) = x0_hat
    var0 = float(sched.posterior_variance[1]) if variance == "beta_tilde" else float(sched.betas[0])
    decoder = -discretized_gaussian_log_likelihood(x64, mean, var0).flatten(1).sum(1)

    to_bits = 1.0 / (x0[0].numel() * math.log(2.0))
    parts = {"prior": prior * to_bits, "diffusion": diffusion * to_bits, "decoder": decoder * to_bits}
    parts["bpd"] = parts["prior"] + parts["diffusion"] + parts["decoder"]
    return parts


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """log of the probability N(mean, var) gives the bin of width ``BIN`` around each value of x, the end bins
    reaching to -inf and +inf (Ho et al. 2020, eq. 13); per element, float64. Introduced in chapter 9."""
    x, std = x.double(), var**0.5
    z_lo = torch.where(x < -1 + BIN / 2, -math.inf, (x - BIN / 2 - mean.double()) / std)
    z_hi = torch.where(x > 1 - BIN / 2, math.inf, (x + BIN / 2 - mean.double()) / std)
    return log_normal_mass(z_lo, z_hi)


def log_normal_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails: a bin above the mean is mirrored below it, where
    log Phi(b) + log(1 - Phi(a) / Phi(b)) loses nothing (log Phi is ``torch.special.log_ndtr``)."""
    above = a > 0
    a, b = torch.where(above, -b, a), torch.where(above, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b))


# ------------------------------------------------------------------------------------------ argument checks
def _check_likelihood(model, x, sched, steps, y, divergence, generator):
    check_tensor(x, "x")
    checked, y, _, _ = check_sampling(model, x.shape, sched, y=y, guidance_scale=1.0, x_T=x)
    check_int(steps, "steps", low=1, high=sched.T - 1)
    check_choice(divergence, "divergence", DIVERGENCES)
    check_generator(generator)
    return checked, y, divergence


def _check_elbo(model, x0, sched, y, variance, timesteps, generator):
    check_tensor(x0, "x0")
    checked, y, _, _ = check_sampling(model, x0.shape, sched, y=y, guidance_scale=1.0, x_T=x0)
    check_choice(variance, "variance", VARIANCES)
    if timesteps is not None:
        timesteps = check_int(timesteps, "timesteps", low=1)
    check_generator(generator)
    lo, hi = float(x0.min()), float(x0.max())
    if lo < -1 - 1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"x0 must hold 8-bit images in [-1, 1] (x = k / 127.5 - 1), got values in [{lo}, {hi}]")
    return checked, y, variance, timesteps
