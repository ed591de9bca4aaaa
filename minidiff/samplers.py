"""Sampling: DDPM ancestral sampling (chapter 5) and DDIM (chapter 6).

Every sampler is a plain function under ``torch.no_grad()`` that returns x_0 of ``shape``. Timesteps are
0-based indices (paper t = index + 1); "index -1" stands for the clean data, where alpha_bar = 1.
``callback(i, t, x_t, x0_hat)`` is called once per step with the step number ``i``, the timestep ``t``, the
state ``x_t`` the step starts from and the model's clean-data estimate ``x0_hat`` from it.

Each public function checks its arguments in one call and then runs the math, which the book prints:
:func:`ddpm_step` runs :func:`ddpm_update`, :func:`ddpm_sample` runs :func:`ddpm_loop`, :func:`ddim_step`
runs :func:`ddim_update`, and :func:`ddim_sample` runs :func:`ddim_loop` over a :func:`ddim_plan`. The math
functions take their arguments as valid.

A model whose prediction holds NaN or inf makes the public samplers raise ``FloatingPointError`` naming the
model call and its timestep. That is checked once, after the loop: a check per step would cost a host sync per
step on a GPU.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch

from ._validate import (check_choice, check_clip, check_ddim_plan, check_int, check_real, check_same_shape,
                        check_sampling, check_schedule, check_tensor, noise_like, randn)
from .conversions import _eps_from_x0, _x0_from_eps
from .fast import CompiledModel  # noqa: F401  (it lives with the other speed paths; this import keeps working)
from .guidance import guided_eps
from .schedules import NoiseSchedule

VARIANCES = ("beta_tilde", "beta")
SPACINGS = ("trailing", "leading", "linspace")
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def _alpha_bar(sched: NoiseSchedule, t: int) -> float:
    """alpha_bar at index t as a Python float; index -1 is the clean data (alpha_bar = 1)."""
    return 1.0 if t < 0 else float(sched.alpha_bars[t])


def _start_noise(shape, x_T, generator, device, dtype) -> torch.Tensor:
    """x_T as given (on ``device``, in ``dtype`` if given), or x_T ~ N(0, I) drawn from ``generator``."""
    if x_T is not None:
        return x_T.to(device=device, dtype=dtype or x_T.dtype)
    return randn(shape, generator=generator, device=device, dtype=dtype or torch.float32)


# ------------------------------------------------------------------------------------------ DDPM
def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, sched: NoiseSchedule, *,
              variance: str = "beta_tilde", clip_x0: float | None = None,
              noise: torch.Tensor | None = None, t_prev: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2, line 4), via the posterior mean.

    x0_hat by eq. (15), the posterior mean by eq. (7), and no noise (z = 0) at t = 0::

        x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        mean    = coef_x0 * x0_hat + coef_xt * x_t
        x_{t-1} = mean + sigma_t z,   sigma_t^2 = beta_tilde_t or beta_t

    Without clipping the mean equals eq. (11): (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).
    The arguments are checked, then :func:`ddpm_update` takes the step.

    Args:
        x_t: (B, ...) the current state.
        eps: (B, ...) the noise prediction at ``x_t``.
        t: the step's 0-based index, an int in [0, T-1].
        sched: the noise schedule.
        variance: ``"beta_tilde"`` (sigma^2 = beta_tilde_t) or ``"beta"`` (sigma^2 = beta_t).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        noise: (B, ...) the fresh z; required when ``t > 0``.
        t_prev: where the step goes, default ``t - 1``. A ``t_prev`` < t - 1 skips timesteps: the step goes
            to ``t_prev`` (-1: the data) as DDPM on the respaced chain t -> t_prev, whose single step has
            beta = 1 - alpha_bar_t / alpha_bar_prev (Nichol & Dhariwal 2021): the same formulas with that
            beta, alpha = 1 - beta and alpha_bar_prev.

    Returns:
        ``(x_prev, x0_hat)``: the new state and the clean-data estimate, both (B, ...).
    """
    t, t_prev = _check_ddpm_step(x_t, eps, t, sched, variance, clip_x0, noise, t_prev)
    return ddpm_update(x_t, eps, t, t_prev, sched, variance=variance, clip_x0=clip_x0, noise=noise)


def ddpm_update(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, sched: NoiseSchedule, *,
                variance: str = "beta_tilde", clip_x0: float | None = None,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM's step x_t -> x_{t_prev} through the posterior mean (Algorithm 2, line 4), for valid arguments.

    ``x_t``, ``eps`` and ``noise`` (the fresh z, unused when t_prev = -1) are (B, ...); the other arguments are
    :func:`ddpm_step`'s. Returns ``(x_prev, x0_hat)``, both (B, ...).
    """
    coef_x0, coef_xt, var = _posterior(sched, t, t_prev, variance)              # eq. (7)'s coefficients
    x0_hat = _x0_from_eps(x_t, eps, _alpha_bar(sched, t))                        # DDPM eq. (15)
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
    mean = coef_x0 * x0_hat + coef_xt * x_t                                     # DDPM eq. (7)
    if t_prev < 0:
        return mean, x0_hat                                                     # z = 0 at the last step
    return mean + var**0.5 * noise, x0_hat


def _posterior(sched: NoiseSchedule, t: int, t_prev: int, variance: str) -> tuple[float, float, float]:
    """(coef_x0, coef_xt, sigma^2) of the reverse step t -> t_prev: q(x_{t_prev} | x_t, x_0)'s mean coefficients
    and the chosen variance. One step (t_prev = t - 1) reads the schedule's own tensors (chapter 2); a skip
    uses the respaced beta = 1 - alpha_bar_t / alpha_bar_prev in the same formulas."""
    if t_prev == t - 1:
        var = sched.posterior_variance[t] if variance == "beta_tilde" else sched.betas[t]
        return float(sched.posterior_mean_coef_x0[t]), float(sched.posterior_mean_coef_xt[t]), float(var)
    a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
    beta = 1.0 - a / a_prev                                                   # the respaced chain's beta
    coef_x0 = a_prev**0.5 * beta / (1.0 - a)
    coef_xt = (1.0 - beta) ** 0.5 * (1.0 - a_prev) / (1.0 - a)
    return coef_x0, coef_xt, beta * (1.0 - a_prev) / (1.0 - a) if variance == "beta_tilde" else beta


@torch.no_grad()
def ddpm_sample(model, shape, sched: NoiseSchedule, *, y: torch.Tensor | None = None,
                guidance_scale: float = 1.0, variance: str = "beta_tilde", clip_x0: float | None = None,
                x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                device=None, dtype: torch.dtype | None = None, callback: Callback | None = None,
                steps: int | None = None, spacing: str = "trailing") -> torch.Tensor:
    """DDPM ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        shape: (B, ...) of the samples.
        sched: the noise schedule the model was trained with.
        y: optional (B,) class labels; with ``guidance_scale != 1`` classifier-free guidance is applied.
        guidance_scale: s in eps_uncond + s (eps_cond - eps_uncond); 1 is plain conditional sampling, one model
            call per step (see :mod:`minidiff.guidance`).
        variance: ``"beta_tilde"`` (posterior variance, sigma^2 = beta_tilde_t) or ``"beta"`` (sigma^2 = beta_t).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        x_T: optional starting noise (B, ...); drawn from ``generator`` otherwise, then one noise draw per
            step except the last.
        generator: the source of every noise draw.
        device: where to sample (default: ``x_T``'s device, else the model's).
        dtype: the sampling precision (default: ``x_T``'s dtype, else float32; float64 works).
        callback: ``callback(i, t, x_t, x0_hat)``, called once per step (see :mod:`minidiff.samplers`).
        steps: visit only ``steps`` of the T timesteps (those of :func:`ddim_timesteps` with ``spacing``) and run
            DDPM on that respaced chain (:func:`ddpm_step` with ``t_prev``). With ``variance="beta_tilde"`` this
            is DDIM with eta = 1; ``variance="beta"`` is the DDIM paper's sigma-hat sampler. Default: all T.
        spacing: how ``steps`` timesteps are picked (see :func:`ddim_timesteps`).

    Returns:
        x_0, the samples, of ``shape``. Introduced in chapter 5.
    """
    model, y, guidance_scale, device = _check_ddpm_sample(model, shape, sched, variance, steps, spacing, y,
                                                          guidance_scale, clip_x0, x_T, device, dtype, callback)
    x = _start_noise(shape, x_T, generator, device, dtype)
    ts = ddim_timesteps(sched.T, sched.T if steps is None else steps, spacing)     # all T: T-1, ..., 0
    x = ddpm_loop(model, x, ts, sched, y, guidance_scale, variance=variance, clip_x0=clip_x0,
                  generator=generator, callback=callback)
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


@torch.no_grad()
def ddpm_loop(model, x: torch.Tensor, ts: list[int], sched: NoiseSchedule, y: torch.Tensor | None = None,
              guidance_scale: float = 1.0, *, variance: str = "beta_tilde", clip_x0: float | None = None,
              generator: torch.Generator | None = None, callback: Callback | None = None) -> torch.Tensor:
    """DDPM's reverse chain (Algorithm 2) from x = x_T over the decreasing timesteps ``ts``, then the data.

    Per step: one (guided) model call, :func:`ddpm_update`, and fresh noise except before the last step.
    The arguments are those of :func:`ddpm_sample`, which checks them; returns x_0.
    """
    B = x.shape[0]
    for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)          # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        noise = noise_like(x, generator) if t_prev >= 0 else None
        x_prev, x0_hat = ddpm_update(x, eps, t, t_prev, sched, variance=variance, clip_x0=clip_x0, noise=noise)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x_prev
    return x


# ------------------------------------------------------------------------------------------ DDIM
def ddim_timesteps(T: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The ``steps`` timestep indices DDIM visits, in decreasing order.

    * ``"trailing"``: round(T - k T/steps) - 1, k = 0..steps-1 — starts at T-1 (Lin et al. 2023, Table 2).
    * ``"leading"``:  k * (T // steps), reversed — ends at 0 (the DDIM code's "uniform" skip).
    * ``"linspace"``: round(k (T-1)/(steps-1)), reversed — includes both ends.

    Rounding is of the exact fraction, half to even (Python's ``round``), so exact ties such as 499.5 do not
    depend on floating-point error (diffusers' numpy version can differ there by one).

    The step after timestep ``ts[k]`` goes to ``ts[k+1]`` (and to -1, the data, after the last one). We take
    the previous timestep from this sequence; diffusers instead subtracts ``T // steps``, which is wrong for
    ``"linspace"`` (diffusers issues #12633, #11347).
    """
    T, steps = _check_ddim_timesteps(T, steps, spacing)
    if spacing == "trailing":
        return [round(Fraction(T * (steps - k), steps)) - 1 for k in range(steps)]
    if spacing == "leading":
        return [k * (T // steps) for k in reversed(range(steps))]
    return [round(Fraction(k * (T - 1), max(steps - 1, 1))) for k in reversed(range(steps))]


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM eq. (16): the standard deviation of the noise added when stepping alpha_bar -> alpha_bar_prev.

    With ``eta = 1`` and consecutive steps, ``sigma**2`` equals DDPM's posterior variance beta_tilde.
    """
    return eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)) ** 0.5


def ddim_update(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float, alpha_bar_prev: float, *,
                sigma: float = 0.0, clip_x0: float | None = None,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z.

    Runs in either direction (``alpha_bar_prev`` < ``alpha_bar`` encodes: DDIM inversion). ``x_t``, ``eps``
    and ``noise`` (the z, used when sigma > 0) are (B, ...). Returns (x_prev, x0_hat).
    """
    x0_hat = _x0_from_eps(x_t, eps, alpha_bar)                                  # the predicted x_0
    if clip_x0 is not None:
        x0_hat = x0_hat.clamp(-clip_x0, clip_x0)
        eps = _eps_from_x0(x_t, x0_hat, alpha_bar)      # the noise consistent with the clipped x0_hat
    x_prev = alpha_bar_prev**0.5 * x0_hat + (1.0 - alpha_bar_prev - sigma**2) ** 0.5 * eps
    if sigma > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0_hat


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, sched: NoiseSchedule, *,
              eta: float = 0.0, clip_x0: float | None = None,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from index ``t`` to ``t_prev < t`` (``t_prev = -1`` is the data), DDIM eq. (12).

    The arguments are checked, then :func:`ddim_update` takes the step with sigma from :func:`ddim_sigma`.

    Args:
        x_t: (B, ...) the current state.
        eps: (B, ...) the noise prediction at ``x_t``.
        t: the step's 0-based index, an int in [0, T-1].
        t_prev: where the step goes, an int in [-1, t - 1].
        sched: the noise schedule.
        eta: noise level, eta >= 0 (0: deterministic); sets sigma by DDIM eq. (16).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        noise: (B, ...) the fresh z; required when the step's sigma is positive.

    Returns:
        ``(x_prev, x0_hat)``: the new state and the clean-data estimate, both (B, ...).
    """
    t, t_prev, eta = _check_ddim_step(x_t, eps, t, t_prev, sched, eta, clip_x0, noise)
    a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
    return ddim_update(x_t, eps, a, a_prev, sigma=ddim_sigma(a, a_prev, eta), clip_x0=clip_x0, noise=noise)


@torch.no_grad()
def ddim_sample(model, shape, sched: NoiseSchedule, *, steps: int = 50, eta: float = 0.0,
                spacing: str = "trailing", y: torch.Tensor | None = None, guidance_scale: float = 1.0,
                clip_x0: float | None = None, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """DDIM sampling with ``steps`` of the T timesteps (Song et al. 2020, eq. 12).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        shape: (B, ...) of the samples.
        sched: the noise schedule the model was trained with.
        steps: number of model evaluations, 1 <= steps <= T.
        eta: noise level, eta >= 0: 0 is deterministic (consumes no randomness once x_T is given);
            1 with steps = T is DDPM with sigma^2 = beta_tilde. Noise is drawn once per step whose sigma > 0.
        spacing: ``"trailing"``, ``"leading"`` or ``"linspace"``: which timesteps (see :func:`ddim_timesteps`).
        y: optional (B,) class labels; with ``guidance_scale != 1`` classifier-free guidance is applied.
        guidance_scale: s in eps_uncond + s (eps_cond - eps_uncond); 1 is plain conditional sampling, one model
            call per step (see :mod:`minidiff.guidance`).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        x_T: optional starting noise (B, ...); drawn from ``generator`` otherwise.
        generator: the source of every noise draw.
        device: where to sample (default: ``x_T``'s device, else the model's).
        dtype: the sampling precision (default: ``x_T``'s dtype, else float32; float64 works).
        callback: ``callback(i, t, x_t, x0_hat)``, called once per step (see :mod:`minidiff.samplers`).

    Returns:
        x_0, the samples, of ``shape``.

    Introduced in chapter 6.
    """
    model, y, guidance_scale, eta, device = _check_ddim_sample(model, shape, sched, steps, eta, spacing, y,
                                                               guidance_scale, clip_x0, x_T, device, dtype,
                                                               callback)
    x = _start_noise(shape, x_T, generator, device, dtype)
    plan = ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta)
    x = ddim_loop(model, x, plan, y, guidance_scale, clip_x0=clip_x0, generator=generator, callback=callback)
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


def ddim_plan(sched: NoiseSchedule, ts: list[int], eta: float) -> list[tuple[int, int, float, float, float]]:
    """``(t, t_prev, alpha_bar, alpha_bar_prev, sigma)`` for each DDIM step along the decreasing timesteps
    ``ts``, the last one going to the data (t_prev = -1, alpha_bar_prev = 1); sigma by DDIM eq. (16)."""
    plan = []
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
        plan.append((t, t_prev, a, a_prev, ddim_sigma(a, a_prev, eta)))
    return plan


@torch.no_grad()
def ddim_loop(model, x: torch.Tensor, plan: list[tuple], y: torch.Tensor | None = None,
              guidance_scale: float = 1.0, *, clip_x0: float | None = None,
              generator: torch.Generator | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Run the DDIM steps of ``plan`` (:func:`ddim_plan`) from x = x_T: per step one (guided) model call and
    eq. (12), with fresh noise where sigma > 0. The arguments are those of :func:`ddim_sample`, which checks
    them; returns x_0."""
    B = x.shape[0]
    for i, (t, t_prev, a, a_prev, sigma) in enumerate(plan):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)          # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        noise = noise_like(x, generator) if sigma > 0 else None
        x_prev, x0_hat = ddim_update(x, eps, a, a_prev, sigma=sigma, clip_x0=clip_x0, noise=noise)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x_prev
    return x


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, sched: NoiseSchedule, *, steps: int = 50, spacing: str = "trailing",
                y: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """Encode data into noise by running the deterministic DDIM update (eta = 0) backwards in time.

    Visits the timesteps of :func:`ddim_timesteps` in increasing order, starting from the data (index -1).
    Going from index ``t`` to the next ``t_next``, the model is evaluated at the current state and at
    ``t_next`` (the usual explicit approximation, as in diffusers' ``DDIMInverseScheduler``); the
    reconstruction error of ``ddim_sample(..., x_T=ddim_invert(...), eta=0)`` shrinks as ``steps`` grows.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) the data to encode.
        sched: the noise schedule the model was trained with.
        steps: number of model evaluations, 1 <= steps <= T.
        spacing: which timesteps (see :func:`ddim_timesteps`); use the sampler's.
        y: optional (B,) class labels, for a conditional model.
        guidance_scale: the guidance scale, as in :func:`ddim_sample`.

    Returns:
        x_T, the shape of ``x0``.

    Introduced in chapter 6.
    """
    model, y, guidance_scale = _check_ddim_invert(model, x0, sched, steps, spacing, y, guidance_scale)
    ts = ddim_timesteps(sched.T, steps, spacing)[::-1]                      # increasing
    x, B = x0, x0.shape[0]
    for t, t_next in zip([-1] + ts[:-1], ts):
        t_batch = torch.full((B,), t_next, dtype=torch.long, device=x.device)     # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        x, _ = ddim_update(x, eps, _alpha_bar(sched, t), _alpha_bar(sched, t_next))
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


# ------------------------------------------------------------------------------------------ argument checks
def _check_ddpm_step(x_t, eps, t, sched, variance, clip_x0, noise, t_prev) -> tuple[int, int]:
    check_schedule(sched)
    t = check_int(t, "t", low=0, high=sched.T - 1)
    t_prev = t - 1 if t_prev is None else check_int(t_prev, "t_prev", low=-1, high=t - 1)
    check_choice(variance, "variance", VARIANCES)
    check_clip(clip_x0)
    check_tensor(x_t, "x_t")
    check_tensor(eps, "eps")
    check_same_shape(x_t, eps, "x_t", "eps")
    if t_prev >= 0:
        if noise is None:
            raise ValueError(f"noise is required for the DDPM step at t={t} > 0")
        check_tensor(noise, "noise")
        check_same_shape(x_t, noise, "x_t", "noise")
    return t, t_prev


def _check_ddpm_sample(model, shape, sched, variance, steps, spacing, y, guidance_scale, clip_x0, x_T,
                       device, dtype, callback) -> tuple:
    check_choice(variance, "variance", VARIANCES)
    checked = check_sampling(model, shape, sched, y=y, guidance_scale=guidance_scale, clip_x0=clip_x0, x_T=x_T,
                             device=device, dtype=dtype, callback=callback)
    _check_ddim_timesteps(sched.T, sched.T if steps is None else steps, spacing)
    return checked


def _check_ddim_timesteps(T, steps, spacing) -> tuple[int, int]:
    T = check_int(T, "T", low=1)
    steps = check_int(steps, "steps", low=1, high=T)
    check_choice(spacing, "spacing", SPACINGS)
    return T, steps


def _check_ddim_step(x_t, eps, t, t_prev, sched, eta, clip_x0, noise) -> tuple[int, int, float]:
    check_schedule(sched)
    t = check_int(t, "t", low=0, high=sched.T - 1)
    t_prev = check_int(t_prev, "t_prev", low=-1, high=t - 1)
    eta = check_real(eta, "eta", low=0.0)
    check_clip(clip_x0)
    check_tensor(x_t, "x_t")
    check_tensor(eps, "eps")
    check_same_shape(x_t, eps, "x_t", "eps")
    a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
    sigma = ddim_sigma(a, a_prev, eta)
    check_ddim_plan([(t, t_prev, a, a_prev, sigma)], eta)
    if sigma > 0:
        if noise is None:
            raise ValueError(f"noise is required for the DDIM step {t} -> {t_prev} with eta={eta}")
        check_tensor(noise, "noise")
        check_same_shape(x_t, noise, "x_t", "noise")
    return t, t_prev, eta


def _check_ddim_sample(model, shape, sched, steps, eta, spacing, y, guidance_scale, clip_x0, x_T,
                       device, dtype, callback) -> tuple:
    eta = check_real(eta, "eta", low=0.0)
    check_int(steps, "steps", low=1, high=sched.T if isinstance(sched, NoiseSchedule) else None)
    model, y, guidance_scale, device = check_sampling(model, shape, sched, y=y, guidance_scale=guidance_scale,
                                                      clip_x0=clip_x0, x_T=x_T, device=device, dtype=dtype,
                                                      callback=callback)
    check_ddim_plan(ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta), eta)
    return model, y, guidance_scale, eta, device


def _check_ddim_invert(model, x0, sched, steps, spacing, y, guidance_scale) -> tuple:
    check_tensor(x0, "x0")
    check_int(steps, "steps", low=1, high=sched.T)
    model, y, guidance_scale, _ = check_sampling(model, x0.shape, sched, y=y, guidance_scale=guidance_scale,
                                                 x_T=x0)
    _check_ddim_timesteps(sched.T, steps, spacing)
    return model, y, guidance_scale
