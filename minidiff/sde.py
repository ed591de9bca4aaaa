"""The score, the SDE and the probability-flow ODE — chapter 9.

Tweedie's formula turns a noise prediction into a score. For x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps::

    grad_x log p_t(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar)

DDPM's forward chain is the Euler-Maruyama discretisation, one unit of time per step, of the variance-preserving
SDE of Song et al. 2021 (their eq. 11), with beta(t) = beta_t on the step::

    dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW

Its time reversal (Anderson 1982; Song et al. 2021, eq. 6) and its probability-flow ODE (eq. 13), which has the
same marginals p_t and no noise, are::

    dx = [-1/2 beta x - beta score] dt + sqrt(beta) dW_bar
    dx/dt = -1/2 beta x - 1/2 beta score

with score = -eps / sqrt(1 - alpha_bar): :func:`reverse_sde_step` is one Euler-Maruyama step of the first,
:func:`pf_ode_step` one Euler step of the second.

In the variables of the DDIM paper (its eq. 14), x_bar = x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) /
alpha_bar), the same ODE reads d x_bar / d sigma = eps(x, t): a plain integral of the noise prediction. Its Euler
step (:func:`euler_sigma_step`) *is* the DDIM update with eta = 0, exactly; :func:`pf_ode_step` agrees with it
only to first order in beta.

Timesteps are the package's 0-based indices (paper t = index + 1); a step from index t to t_prev < t uses the
beta of the respaced chain, 1 - alpha_bar_t / alpha_bar_prev (Nichol & Dhariwal 2021), as DDPM's respacing does.
Each public function checks its arguments, then runs the math function the book prints.
"""
from __future__ import annotations

import torch

from ._validate import (check_int, check_real, check_same_shape, check_sampling, check_schedule, check_tensor,
                        noise_like)
from .conversions import Scalar, _check
from .guidance import guided_eps
from .samplers import Callback, _alpha_bar, _start_noise, ddim_timesteps
from .schedules import NoiseSchedule


# ------------------------------------------------------------------------------------------ the score
def score_from_eps(eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """Tweedie's formula: the score grad log p_t(x_t) from a noise prediction, -eps / sqrt(1 - alpha_bar).

    Args:
        eps: (B, ...) the noise prediction E[eps | x_t] (or a model's estimate of it).
        alpha_bar: alpha_bar_t in [0, 1), a float or a tensor that broadcasts against ``eps``.

    Introduced in chapter 9.
    """
    _check(eps, "eps", eps, "eps", alpha_bar, one=False)
    return -eps / (1.0 - alpha_bar) ** 0.5


def eps_from_score(score: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The inverse of :func:`score_from_eps`: eps = -sqrt(1 - alpha_bar) * score.

    Args:
        score: (B, ...) the score at x_t.
        alpha_bar: alpha_bar_t in [0, 1], a float or a tensor that broadcasts against ``score``.

    Introduced in chapter 9.
    """
    _check(score, "score", score, "score", alpha_bar)
    return -((1.0 - alpha_bar) ** 0.5) * score


def dsm_loss(model, x0: torch.Tensor, sched: NoiseSchedule, t: torch.Tensor, noise: torch.Tensor,
             y: torch.Tensor | None = None) -> torch.Tensor:
    """Denoising score matching (Vincent 2011) with the score read off an eps-model, one value per sample.

    The target is the score of q(x_t | x_0), -eps / sqrt(1 - alpha_bar_t)::

        L_dsm = mean_d (score_theta(x_t, t) + eps / sqrt(1 - alpha_bar_t))^2
              = mean_d (eps_theta(x_t, t) - eps)^2 / (1 - alpha_bar_t)

    so it is the per-sample L_simple weighted by 1 / (1 - alpha_bar_t).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) clean data.
        sched: the noise schedule.
        t: (B,) integer timestep indices in [0, T-1].
        noise: (B, ...) the eps of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps.
        y: optional (B,) class labels.

    Returns:
        (B,) the loss of each sample. Introduced in chapter 9.
    """
    from .losses import _check_eps_loss
    if t is None or noise is None:
        raise ValueError("dsm_loss needs both t (B,) and noise (B, ...): the identity it states holds per sample")
    model, t, y, _ = _check_eps_loss(model, x0, sched, y, 0.0, t, noise, "none")
    a = sched.alpha_bars.to(x0.device, x0.dtype)[t].view(-1, *([1] * (x0.ndim - 1)))    # (B, 1, ...)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    score = -model(x_t, t, y) / (1 - a).sqrt()
    target = -noise / (1 - a).sqrt()                              # grad log q(x_t | x_0)
    return (score - target).pow(2).flatten(1).mean(1)


# ------------------------------------------------------------------------------------------ one step
def step_beta(sched: NoiseSchedule, t: int, t_prev: int) -> float:
    """The beta of one step t -> t_prev of the respaced chain: 1 - alpha_bar_t / alpha_bar_prev (t_prev = -1:
    the data, alpha_bar = 1). For t_prev = t - 1 it is the schedule's beta_t. Introduced in chapter 9."""
    check_schedule(sched)
    t = check_int(t, "t", low=0, high=sched.T - 1)
    t_prev = check_int(t_prev, "t_prev", low=-1, high=t - 1)
    return 1.0 - _alpha_bar(sched, t) / _alpha_bar(sched, t_prev)


def reverse_sde_step(x: torch.Tensor, eps: torch.Tensor, beta: float, alpha_bar: float,
                     noise: torch.Tensor | None) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse VP-SDE, one unit of time back (Song et al. 2021, eq. 6)::

        x_prev = x + (1/2 beta x + beta score) + sqrt(beta) z
        score = -eps / sqrt(1 - alpha_bar)

    Args:
        x: (B, ...) the state at time t; eps: (B, ...) the noise prediction there.
        beta: the step's beta (see :func:`step_beta`); alpha_bar: alpha_bar_t, in [0, 1).
        noise: (B, ...) z ~ N(0, I), or None for no noise (the last step).

    Introduced in chapter 9.
    """
    _check_step(x, eps, beta, alpha_bar, noise)
    return _reverse_sde_update(x, eps, beta, alpha_bar, noise)


def _reverse_sde_update(x, eps, beta, alpha_bar, noise):
    score = -eps / (1 - alpha_bar) ** 0.5                        # Tweedie
    x_prev = x + 0.5 * beta * x + beta * score                   # drift of the reverse SDE, times dt = 1
    return x_prev if noise is None else x_prev + beta**0.5 * noise


def pf_ode_step(x: torch.Tensor, eps: torch.Tensor, beta: float, alpha_bar: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in t, one unit of time back (Song et al. 2021, eq. 13)::

        x_prev = x + 1/2 beta (x + score)
               = x + 1/2 beta (x - eps / sqrt(1 - alpha_bar))

    Args: as :func:`reverse_sde_step`, without noise. Introduced in chapter 9.
    """
    _check_step(x, eps, beta, alpha_bar, None)
    return _pf_ode_update(x, eps, beta, alpha_bar)


def _pf_ode_update(x, eps, beta, alpha_bar):
    score = -eps / (1 - alpha_bar) ** 0.5
    return x + 0.5 * beta * (x + score)


def euler_sigma_step(x: torch.Tensor, eps: torch.Tensor, alpha_bar: float, alpha_bar_prev: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE written in x_bar = x / sqrt(alpha_bar) and
    sigma = sqrt((1 - alpha_bar) / alpha_bar) (DDIM eq. 14), where d x_bar / d sigma = eps::

        x_bar_prev = x_bar + (sigma_prev - sigma) eps
        x_prev = sqrt(alpha_bar_prev) x_bar_prev

    It equals DDIM's update with eta = 0 (:func:`minidiff.samplers.ddim_update`) for every step size.

    Args:
        x: (B, ...) the state; eps: (B, ...) the noise prediction at it.
        alpha_bar: alpha_bar at the state, in (0, 1); alpha_bar_prev: where the step goes, in (0, 1]
            (1 is the data).

    Introduced in chapter 9.
    """
    check_tensor(x, "x")
    check_tensor(eps, "eps")
    check_same_shape(x, eps, "x", "eps")
    alpha_bar = check_real(alpha_bar, "alpha_bar", low=0.0, high=1.0, low_open=True, high_open=True)
    check_real(alpha_bar_prev, "alpha_bar_prev", low=alpha_bar, high=1.0)
    return _euler_sigma_update(x, eps, alpha_bar, alpha_bar_prev)


def _euler_sigma_update(x, eps, alpha_bar, alpha_bar_prev):
    sigma, sigma_prev = ((1 - alpha_bar) / alpha_bar) ** 0.5, ((1 - alpha_bar_prev) / alpha_bar_prev) ** 0.5
    x_bar = x / alpha_bar**0.5
    x_bar_prev = x_bar + (sigma_prev - sigma) * eps              # Euler step of d x_bar / d sigma = eps
    return alpha_bar_prev**0.5 * x_bar_prev


# ------------------------------------------------------------------------------------------ samplers
@torch.no_grad()
def reverse_sde_sample(model, shape, sched: NoiseSchedule, *, y: torch.Tensor | None = None,
                       guidance_scale: float = 1.0, x_T: torch.Tensor | None = None,
                       generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                       callback: Callback | None = None) -> torch.Tensor:
    """Sample by Euler-Maruyama on the reverse VP-SDE, one step per timestep (T model calls).

    It differs from DDPM with sigma^2 = beta (:func:`minidiff.ddpm_sample` with ``variance="beta"``) by O(beta^2)
    per step. The arguments are those of :func:`minidiff.ddpm_sample`; ``callback(i, t, x_t, x_t)`` gets the
    state twice (this sampler makes no clean-data estimate). Returns x_0 of ``shape``. Introduced in chapter 9.
    """
    model, y, guidance_scale, device = check_sampling(model, shape, sched, y=y, guidance_scale=guidance_scale,
                                                      x_T=x_T, device=device, dtype=dtype, callback=callback)
    x = _start_noise(shape, x_T, generator, device, dtype)
    x = reverse_sde_loop(model, x, sched, y, guidance_scale, generator=generator, callback=callback)
    model.check_finite()
    return x


@torch.no_grad()
def reverse_sde_loop(model, x: torch.Tensor, sched: NoiseSchedule, y=None, guidance_scale: float = 1.0, *,
                     generator: torch.Generator | None = None, callback: Callback | None = None) -> torch.Tensor:
    """The loop of :func:`reverse_sde_sample`, from x = x_T at index T-1 to the data: no noise in the last step."""
    for t in range(sched.T - 1, -1, -1):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)        # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        beta, a = float(sched.betas[t]), float(sched.alpha_bars[t])
        noise = noise_like(x, generator) if t > 0 else None
        if callback is not None:
            callback(sched.T - 1 - t, t, x, x)
        x = _reverse_sde_update(x, eps, beta, a, noise)
    return x


@torch.no_grad()
def pf_ode_sample(model, shape, sched: NoiseSchedule, *, steps: int = 50, spacing: str = "trailing",
                  y: torch.Tensor | None = None, guidance_scale: float = 1.0, x_T: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                  callback: Callback | None = None) -> torch.Tensor:
    """Sample by Euler's method on the probability-flow ODE in t (:func:`pf_ode_step`) over the ``steps``
    timesteps of :func:`minidiff.ddim_timesteps`, each step with the beta of :func:`step_beta`.

    The same ODE as DDIM with eta = 0, discretised in another variable: DDIM is Euler in sigma
    (:func:`euler_sigma_step`). The arguments are those of :func:`minidiff.ddim_sample`; ``callback(i, t, x_t,
    x_t)`` gets the state twice. Returns x_0 of ``shape``. Introduced in chapter 9.
    """
    check_int(steps, "steps", low=1, high=sched.T if isinstance(sched, NoiseSchedule) else None)
    model, y, guidance_scale, device = check_sampling(model, shape, sched, y=y, guidance_scale=guidance_scale,
                                                      x_T=x_T, device=device, dtype=dtype, callback=callback)
    ts = ddim_timesteps(sched.T, steps, spacing)
    x = _start_noise(shape, x_T, generator, device, dtype)
    x = pf_ode_loop(model, x, ts, sched, y, guidance_scale, callback=callback)
    model.check_finite()
    return x


@torch.no_grad()
def pf_ode_loop(model, x: torch.Tensor, ts: list[int], sched: NoiseSchedule, y=None, guidance_scale: float = 1.0,
                *, callback: Callback | None = None) -> torch.Tensor:
    """The loop of :func:`pf_ode_sample`: Euler steps of the probability-flow ODE along the decreasing ``ts``,
    the last one to the data."""
    for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)        # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
        if callback is not None:
            callback(i, t, x, x)
        x = _pf_ode_update(x, eps, 1.0 - a / a_prev, a)
    return x


# ------------------------------------------------------------------------------------------ argument checks
def _check_step(x, eps, beta, alpha_bar, noise) -> None:
    check_tensor(x, "x")
    check_tensor(eps, "eps")
    check_same_shape(x, eps, "x", "eps")
    check_real(beta, "beta", low=0.0, high=1.0, low_open=True)
    check_real(alpha_bar, "alpha_bar", low=0.0, high=1.0, high_open=True)
    if noise is not None:
        check_tensor(noise, "noise")
        check_same_shape(x, noise, "x", "noise")
