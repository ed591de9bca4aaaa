"""The forward (noising) process — chapters 1 and 2.

One step, the closed form and the posterior (DDPM eqs. 2, 4 and 6-7)::

    q(x_t | x_{t-1})      = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)

``t`` is the 0-based index (paper step t = index + 1), see :mod:`minidiff.schedules`.
"""
from __future__ import annotations

import torch

from ._validate import check_same_shape, check_schedule, check_tensor, check_timesteps, noise_like
from .schedules import NoiseSchedule, gather


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

    Introduced in chapter 1. The arguments are checked, then :func:`add_noise_step` takes the step.
    """
    t = _check_noising(x_prev, t, sched, noise, "x_prev")                   # (B,) int64
    return add_noise_step(x_prev, t, sched, _given_or_drawn(noise, x_prev, generator))


def add_noise_step(x_prev: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps (DDPM eq. 2), for a (B,) index tensor ``t``.

    ``x_prev`` and ``noise`` are (B, ...); see :func:`q_step`.
    """
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

    Introduced in chapter 2. Same as diffusers' ``scheduler.add_noise(x0, noise, t)``. The arguments are
    checked, then :func:`add_noise` computes eq. (4).
    """
    t = _check_noising(x0, t, sched, noise, "x0")                            # (B,) int64
    return add_noise(x0, t, sched, _given_or_drawn(noise, x0, generator))


def add_noise(x0: torch.Tensor, t: torch.Tensor, sched: NoiseSchedule, noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4), for a (B,) index tensor ``t``.

    ``x0`` and ``noise`` are (B, ...). The training loss calls it directly; see :func:`q_sample`.
    """
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

    Introduced in chapter 2. The arguments are checked, then :func:`posterior_mean_variance` computes them.
    """
    t = _check_posterior(x0, x_t, t, sched)                                  # (B,) int64
    return posterior_mean_variance(x0, x_t, t, sched)


def posterior_mean_variance(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                            sched: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_{t-1} | x_t, x_0)'s mean (B, ...) and variance (B, 1, ..., 1) (DDPM eqs. 6-7), for a (B,) index
    tensor ``t``; see :func:`q_posterior`."""
    coef_x0 = gather(sched.posterior_mean_coef_x0, t, x_t)    # (B, 1, ...)
    coef_xt = gather(sched.posterior_mean_coef_xt, t, x_t)    # (B, 1, ...)
    return coef_x0 * x0 + coef_xt * x_t, gather(sched.posterior_variance, t, x_t)


def _given_or_drawn(noise: torch.Tensor | None, like: torch.Tensor, generator) -> torch.Tensor:
    """``noise``, or standard normal noise of ``like``'s shape, dtype and device drawn from ``generator``."""
    return noise if noise is not None else noise_like(like, generator)


# ------------------------------------------------------------------------------------------ argument checks
def _check_noising(x: torch.Tensor, t, sched: NoiseSchedule, noise, name: str) -> torch.Tensor:
    check_schedule(sched)
    check_tensor(x, name)
    t = check_timesteps(t, sched.T, x.shape[0], x.device)
    if noise is not None:
        check_tensor(noise, "noise")
        check_same_shape(x, noise, name, "noise")
    return t


def _check_posterior(x0: torch.Tensor, x_t: torch.Tensor, t, sched: NoiseSchedule) -> torch.Tensor:
    check_schedule(sched)
    check_tensor(x0, "x0")
    check_tensor(x_t, "x_t")
    check_same_shape(x0, x_t, "x0", "x_t")
    return check_timesteps(t, sched.T, x_t.shape[0], x_t.device)
