"""Editing with a trained model: inpainting, SDEdit and interpolation between noise latents.

None of these needs retraining: each one runs the sampler of chapter 6 with a twist.

* :func:`inpaint` (RePaint, Lugmayr et al. 2022): after every reverse step, overwrite the known pixels with
  the forward-noised original at that noise level, and "resample" — jump back up one step with fresh noise
  and redo it — so the generated part has time to agree with the known part.
* :func:`sdedit` (Meng et al. 2022): noise an image part of the way with q(x_t | x_0), then denoise it; the
  strength decides how much of the input survives.
* :func:`slerp`: spherical interpolation, the right path between two Gaussian latents (e.g. two DDIM
  inversions), since a straight line passes through low-norm points a sampler never saw.

Introduced in chapters 6 and 8.
"""
from __future__ import annotations

import torch

from ._validate import (check_ddim_plan, check_int, check_real, check_same_shape, check_sampling, check_tensor,
                        noise_like)
from .forward import add_noise
from .guidance import guided_eps
from .samplers import ddim_loop, ddim_plan, ddim_timesteps, ddim_update
from .schedules import NoiseSchedule


@torch.no_grad()
def inpaint(model, x0: torch.Tensor, mask: torch.Tensor, sched: NoiseSchedule, *, steps: int = 50,
            resample: int = 5, eta: float = 1.0, spacing: str = "trailing", y: torch.Tensor | None = None,
            guidance_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill in the pixels where ``mask == 0``, keeping those where ``mask == 1`` (RePaint on DDIM steps).

    Each of the ``steps`` reverse steps t -> t' (the timesteps of :func:`minidiff.ddim_timesteps`) is:

    1. unknown part: a DDIM step (eq. 12) with noise level ``eta`` (1 is DDPM-like, as in RePaint);
    2. known part:   x_{t'} ~ q(x_{t'} | x_0) from the original image (x_0 itself at the last step);
    3. x_{t'} = mask * known + (1 - mask) * unknown;
    4. ``resample - 1`` times: go back up with q(x_t | x_{t'}) = N(sqrt(a_t / a_t') x_{t'}, (1 - a_t / a_t') I)
       and redo steps 1-3 (RePaint's resampling with jump length 1). Not at the last step.

    The model is called ``steps * resample - (resample - 1)`` times.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) images whose known pixels are kept.
        mask: 1 where ``x0`` is known, 0 where it is generated; broadcasts to ``x0``'s shape, e.g. (1, 1, H, W).
        sched: the noise schedule the model was trained with.
        steps: reverse steps, as in :func:`minidiff.ddim_sample`.
        resample: passes per step (>= 1); 1 is no resampling.
        eta: the DDIM noise level of the unknown part.
        spacing: which timesteps (see :func:`minidiff.ddim_timesteps`).
        y: optional (B,) class labels, for a conditional model.
        guidance_scale: the guidance scale, as in the samplers.
        generator: the source of every noise draw.

    Returns:
        The inpainted images, shape of ``x0``; exactly ``x0`` where ``mask == 1``.
    """
    model, mask, y, guidance_scale, eta = _check_inpaint(model, x0, mask, sched, steps, resample, eta, spacing,
                                                         y, guidance_scale)
    x = noise_like(x0, generator)                                                   # x_T ~ N(0, I)
    plan = ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta)
    x = repaint(model, x, x0, mask, sched, plan, resample=resample, y=y, guidance_scale=guidance_scale,
                generator=generator)
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


@torch.no_grad()
def repaint(model, x: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor, sched: NoiseSchedule,
            plan: list[tuple], *, resample: int = 5, y: torch.Tensor | None = None, guidance_scale: float = 1.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022) from x = x_T over the DDIM steps of ``plan``, steps 1-4 of :func:`inpaint`.

    ``x``, ``x0`` and ``mask`` are (B, ...); ``plan`` is :func:`minidiff.samplers.ddim_plan`'s; the other
    arguments are :func:`inpaint`'s, which checks them all. Returns the inpainted images.
    """
    B = x.shape[0]
    for t, t_prev, a, a_prev, sigma in plan:
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)                # (B,)
        t_prev_batch = torch.full((B,), t_prev, dtype=torch.long, device=x.device)      # (B,)
        for u in range(resample if t_prev >= 0 else 1):
            eps = guided_eps(model, x, t_batch, y, guidance_scale)
            noise = noise_like(x, generator) if sigma > 0 else None
            unknown, _ = ddim_update(x, eps, a, a_prev, sigma=sigma, noise=noise)       # 1. DDIM eq. (12)
            # 2. the known part from q(x_t' | x_0), eq. (4) (the data itself at the last step)
            known = x0 if t_prev < 0 else add_noise(x0, t_prev_batch, sched, noise_like(x0, generator))
            x_prev = mask * known + (1 - mask) * unknown                                # 3. merge by the mask
            if u < resample - 1 and t_prev >= 0:                                        # 4. back up: t' -> t
                ratio = a / a_prev
                x = ratio**0.5 * x_prev + (1 - ratio) ** 0.5 * noise_like(x, generator)
        x = x_prev
    return x


def sdedit_start(strength: float, T: int) -> int:
    """The timestep index SDEdit starts from: round(strength * T) - 1, for strength in (0, 1]."""
    strength = _check_sdedit_start(strength, T)
    return round(strength * T) - 1


@torch.no_grad()
def sdedit(model, x0: torch.Tensor, sched: NoiseSchedule, *, strength: float = 0.5, steps: int = 25,
           eta: float = 0.0, y: torch.Tensor | None = None, guidance_scale: float = 1.0,
           noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """SDEdit: noise ``x0`` to the level ``t0 = round(strength * T) - 1`` in closed form, then denoise it.

    x_{t0} = sqrt(a_{t0}) x0 + sqrt(1 - a_{t0}) eps, followed by ``steps`` DDIM steps (eq. 12, noise level
    ``eta``) on trailing timesteps from t0 down to the data. strength near 0 returns the input; strength 1
    keeps only a trace of it (sqrt(a_T) x0, about 0.006 x0 for the linear schedule).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) the images to edit (a rough sketch, a corrupted or a real image) in the data range.
        sched: the noise schedule the model was trained with.
        strength: in (0, 1]: how far to noise, as a fraction of T.
        steps: model calls, 1 <= steps <= t0 + 1.
        eta: the DDIM noise level of the denoising steps.
        y: optional (B,) class labels, for a conditional model.
        guidance_scale: the guidance scale, as in the samplers.
        noise: optional eps (B, ...) for the closed-form jump; drawn from ``generator`` otherwise.
        generator: the source of every noise draw.

    Returns:
        The edited images, shape of ``x0``.
    """
    model, t0, y, guidance_scale, eta = _check_sdedit(model, x0, sched, strength, steps, eta, y, guidance_scale,
                                                      noise)
    noise = noise_like(x0, generator) if noise is None else noise
    t0_batch = torch.full((x0.shape[0],), t0, dtype=torch.long, device=x0.device)     # (B,)
    x_t0 = add_noise(x0, t0_batch, sched, noise)                                       # DDPM eq. (4)
    plan = ddim_plan(sched, ddim_timesteps(t0 + 1, steps, "trailing"), eta)   # trailing over [0, t0]: from t0
    x = ddim_loop(model, x_t0, plan, y, guidance_scale, generator=generator)
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical interpolation between latents z0 and z1 (B, ...), per sample, at ``alpha`` in [0, 1]::

        slerp = (sin((1 - alpha) theta) z0 + sin(alpha theta) z1) / sin(theta)

    where theta is the angle between the flattened z0 and z1 (Shoemake 1985; used for DDIM latents by
    Song et al. 2020, sec. 5.3). Falls back to the straight line where theta is ~0.

    Args:
        z0: (B, ...) the latent at ``alpha = 0``.
        z1: (B, ...) the latent at ``alpha = 1``.
        alpha: a float or a tensor (B,) of them, in [0, 1].

    Returns:
        A tensor of z0's shape; exactly z0 at alpha = 0 and z1 at alpha = 1.
    """
    alpha = _check_slerp(z0, z1, alpha)                                                       # () or (B,)
    a = alpha.reshape(-1, *[1] * (z0.ndim - 1)) if alpha.ndim else alpha                       # (B, 1, ...)
    flat0, flat1 = z0.flatten(1), z1.flatten(1)                                                # (B, D)
    cos = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1)).clamp_min(1e-30)   # (B,)
    theta = torch.acos(cos.clamp(-1, 1)).reshape(-1, *[1] * (z0.ndim - 1))                    # (B, 1, ...)
    sin = torch.sin(theta)
    small = sin.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(sin), sin)
    w0 = torch.where(small, 1 - a, torch.sin((1 - a) * theta) / safe)
    w1 = torch.where(small, a, torch.sin(a * theta) / safe)
    out = w0 * z0 + w1 * z1
    out = torch.where(a == 0, z0, out)
    return torch.where(a == 1, z1, out)


# ------------------------------------------------------------------------------------------ argument checks
def _check_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    check_tensor(mask, "mask")
    try:
        mask = torch.broadcast_to(mask, x.shape)
    except RuntimeError:
        raise ValueError(f"mask must broadcast to the image shape {tuple(x.shape)}, got {tuple(mask.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must contain only 0 (generate) and 1 (keep), got other values")
    return mask.to(device=x.device, dtype=x.dtype)


def _check_inpaint(model, x0, mask, sched, steps, resample, eta, spacing, y, guidance_scale) -> tuple:
    """Returns the output-checked model, the mask broadcast to ``x0``, the labels, the scale and eta."""
    check_tensor(x0, "x0")
    mask = _check_mask(mask, x0)
    check_int(resample, "resample", low=1)
    eta = check_real(eta, "eta", low=0.0)
    check_int(steps, "steps", low=1, high=sched.T if isinstance(sched, NoiseSchedule) else None)
    model, y, guidance_scale, _ = check_sampling(model, x0.shape, sched, y=y, guidance_scale=guidance_scale,
                                                 device=x0.device, dtype=x0.dtype)
    check_ddim_plan(ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta), eta)
    return model, mask, y, guidance_scale, eta


def _check_sdedit_start(strength, T: int) -> float:
    strength = check_real(strength, "strength", low=0.0, high=1.0, low_open=True)
    if round(strength * T) - 1 < 0:
        raise ValueError(f"strength={strength} is below one step of T={T}; use strength >= {1 / T:.3g}")
    return strength


def _check_sdedit(model, x0, sched, strength, steps, eta, y, guidance_scale, noise) -> tuple:
    """Returns the output-checked model, the start index t0, the labels, the scale and eta."""
    check_tensor(x0, "x0")
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    t0 = sdedit_start(strength, sched.T)
    check_int(steps, "steps", low=1, high=t0 + 1)
    eta = check_real(eta, "eta", low=0.0)
    if noise is not None:
        check_same_shape(x0, noise, "x0", "noise")
        check_tensor(noise, "noise")
    model, y, guidance_scale, _ = check_sampling(model, x0.shape, sched, y=y, guidance_scale=guidance_scale,
                                                 device=x0.device, dtype=x0.dtype)
    check_ddim_plan(ddim_plan(sched, ddim_timesteps(t0 + 1, steps, "trailing"), eta), eta)
    return model, t0, y, guidance_scale, eta


def _check_slerp(z0, z1, alpha) -> torch.Tensor:
    """Returns ``alpha`` as a tensor in ``z0``'s dtype and device."""
    check_tensor(z0, "z0")
    check_tensor(z1, "z1")
    check_same_shape(z0, z1, "z0", "z1")
    alpha = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device)
    if alpha.ndim > 1 or (alpha.ndim == 1 and alpha.shape[0] != z0.shape[0]):
        raise ValueError(f"alpha must be a float or a tensor of shape ({z0.shape[0]},), got shape "
                         f"{tuple(alpha.shape)}")
    if not bool(((alpha >= 0) & (alpha <= 1)).all()):
        raise ValueError(f"alpha must lie in [0, 1], got {alpha.tolist()}")
    return alpha
