"""The forward (noising) process — chapters 1 and 2.

One step, the closed form and the posterior (DDPM eqs. 2, 4 and 6-7)::

    q(x_t | x_{t-1})      = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)

``t`` is the 0-based index (paper step t = index + 1), see :mod:`minidiff.schedules`.
"""
from __future__ import annotations

import torch

from ._validate import check_same_shape, check_tensor, check_timesteps, randn
from .schedules import NoiseSchedule, gather


def _noise_for(x: torch.Tensor, noise, generator, name: str) -> torch.Tensor:
    if noise is None:
        return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    check_tensor(noise, "noise")
    check_same_shape(x, noise, name, "noise")
    return noise


def q_step(x_prev: torch.Tensor, t, sched: NoiseSchedule, noise: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """One forward step: draw x_t ~ q(x_t | x_{t-1}) (DDPM eq. 2).

    Args:
        x_prev: (B, ...) the previous state (the paper's x_{t-1}; clean data when ``t == 0``).
        t: (B,) int tensor or int, the index of the step taken, in [0, T-1].
        sched: the noise schedule ``t`` indexes.
        noise: optional (B, ...) standard normal noise; drawn from ``generator`` otherwise.
        generator: the source of ``noise`` when it is not given.

    Returns:
        x_t, the shape of ``x_prev``.

    Introduced in chapter 1.
    """
    check_tensor(x_prev, "x_prev")
    t = check_timesteps(t, sched.T, x_prev.shape[0], x_prev.device)
    noise = _noise_for(x_prev, noise, generator, "x_prev")
    beta = gather(sched.betas, t, x_prev)                     # (B, 1, ...)
    return (1.0 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_sample(x0: torch.Tensor, t, sched: NoiseSchedule, noise: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Jump straight to step t: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4).

    Args:
        x0: (B, ...) clean data.
        t: (B,) int tensor or int in [0, T-1].
        sched: the noise schedule ``t`` indexes.
        noise: optional (B, ...) eps ~ N(0, I); drawn from ``generator`` otherwise.
        generator: the source of ``noise`` when it is not given.

    Returns:
        x_t, the shape of ``x0``.

    Introduced in chapter 2. Same as diffusers' ``scheduler.add_noise(x0, noise, t)``.
    """
    check_tensor(x0, "x0")
    t = check_timesteps(t, sched.T, x0.shape[0], x0.device)
    return _q_sample(x0, t, sched, _noise_for(x0, noise, generator, "x0"))


def _q_sample(x0: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule, noise: torch.Tensor) -> torch.Tensor:
    """DDPM eq. (4) without argument checks (no host syncs): for the training loop."""
    alpha_bar = gather(sched.alpha_bars, t, x0)               # (B, 1, ...)
    return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise


def q_posterior(x0: torch.Tensor, x_t: torch.Tensor, t, sched: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the forward-process posterior q(x_{t-1} | x_t, x_0) (DDPM eqs. 6-7)::

        mean    = coef_x0 x_0 + coef_xt x_t
        coef_x0 = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
        coef_xt = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)
        var     = beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

    At ``t == 0`` (paper t = 1) the posterior is the point mass at x_0: mean = x_0, variance = 0.

    Args:
        x0: (B, ...) clean data.
        x_t: (B, ...) the noised data at index ``t``.
        t: (B,) int tensor or int in [0, T-1].
        sched: the noise schedule ``t`` indexes.

    Returns:
        mean (B, ...) and variance (B, 1, ..., 1), in ``x_t``'s dtype.

    Introduced in chapter 2.
    """
    check_tensor(x0, "x0")
    check_tensor(x_t, "x_t")
    check_same_shape(x0, x_t, "x0", "x_t")
    t = check_timesteps(t, sched.T, x_t.shape[0], x_t.device)
    mean = gather(sched.posterior_mean_coef_x0, t, x_t) * x0 + gather(sched.posterior_mean_coef_xt, t, x_t) * x_t
    return mean, gather(sched.posterior_variance, t, x_t)
