"""The training objective — chapter 3.

The loss of DDPM's Algorithm 1 (eq. 14), with t uniform over the steps and eps ~ N(0, I)::

    L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2
    x_t      = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
"""
from __future__ import annotations

import torch

from ._validate import check_choice, check_labels, check_real, check_same_shape, check_timesteps, randn
from .forward import _q_sample
from .guidance import num_classes_of
from .schedules import NoiseSchedule


def eps_loss(model, x0: torch.Tensor, sched: NoiseSchedule, y: torch.Tensor | None = None,
             p_uncond: float = 0.0, generator: torch.Generator | None = None, *,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             reduction: str = "mean") -> torch.Tensor:
    """The epsilon-prediction loss L_simple on one batch (DDPM Algorithm 1, lines 2-5).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) clean data.
        sched: the noise schedule.
        y: optional (B,) class labels for a conditional model.
        p_uncond: probability of replacing each label by the "no label" index ``model.num_classes``
            (classifier-free guidance training, Ho & Salimans 2022, Algorithm 1).
        generator: the source of every random draw, in the order t, noise, label dropout.
        t: optional (B,) timestep indices; uniform in [0, T-1] when omitted.
        noise: optional (B, ...) eps; standard normal when omitted.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one loss per sample, shape (B,)).

    Introduced in chapter 3.
    """
    check_choice(reduction, "reduction", ("mean", "none"))
    p_uncond = check_real(p_uncond, "p_uncond", low=0.0, high=1.0)
    if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.ndim < 1:
        raise TypeError(f"x0 must be a floating-point tensor with a batch dimension, got {x0!r:.80}")
    B, device = x0.shape[0], x0.device
    gen_device = generator.device if generator is not None else device
    if t is None:
        t = torch.randint(0, sched.T, (B,), generator=generator, device=gen_device).to(device)
    else:
        t = check_timesteps(t, sched.T, B, device)
    if noise is None:
        noise = randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    else:
        check_same_shape(x0, noise, "x0", "noise")
    num_classes = num_classes_of(model)
    if p_uncond > 0:
        if y is None or num_classes is None:
            raise ValueError(f"p_uncond={p_uncond} needs labels y and a conditional model with num_classes")
    y = check_labels(y, B, num_classes, device) if y is not None else None
    if p_uncond > 0:
        drop = torch.rand(B, generator=generator, device=gen_device).to(device) < p_uncond
        y = torch.where(drop, torch.full_like(y, num_classes), y)

    x_t = _q_sample(x0, t, sched, noise)                                     # DDPM eq. (4)
    eps_hat = model(x_t, t, y)
    if not torch.is_tensor(eps_hat) or eps_hat.shape != noise.shape:
        got = tuple(eps_hat.shape) if torch.is_tensor(eps_hat) else type(eps_hat).__name__
        raise ValueError(f"the model output (eps_hat) must have the shape of x0 {tuple(x0.shape)}, got {got}")
    err = eps_hat - noise                                                    # (B, ...)
    if err.dtype != torch.float64:
        err = err.float()                    # half precision -> float32 for the loss; float64 stays float64
    per_sample = err.pow(2).reshape(B, -1).mean(dim=1)                       # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample
