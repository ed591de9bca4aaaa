"""The training objective — chapter 3.

The loss of DDPM's Algorithm 1 (eq. 14), with t uniform over the steps and eps ~ N(0, I)::

    L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2
    x_t      = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
"""
from __future__ import annotations

import torch

from ._validate import (ShapeCheckedModel, check_choice, check_labels, check_model_dtype, check_real, check_same_shape,
                        check_schedule, check_tensor, check_timesteps, noise_like, rand, randint)
from .forward import add_noise
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

    Raises ValueError when ``x0`` or ``noise`` holds NaN or inf (a check that waits for the device once per call).
    Introduced in chapter 3.
    """
    model, t, y, p_uncond = _check_eps_loss(model, x0, sched, y, p_uncond, t, noise, reduction)
    t, noise, y = _draw_training_inputs(model, x0, sched, y, p_uncond, generator, t, noise)
    return simple_loss(model, x0, sched, t, noise, y, reduction=reduction)


def _draw_training_inputs(model, x0: torch.Tensor, sched: NoiseSchedule, y, p_uncond: float,
                         generator: torch.Generator | None, t=None, noise=None) -> tuple:
    """(t, eps, y) for one batch of a training loss: t ~ Uniform{0, ..., T-1} and eps ~ N(0, I) where not given,
    then each label dropped with probability ``p_uncond``, drawn from ``generator`` in that order."""
    if t is None:                                                            # t ~ Uniform{0, ..., T-1}
        t = randint(sched.T, x0.shape[0], generator=generator, device=x0.device)
    if noise is None:                                                        # eps ~ N(0, I)
        noise = noise_like(x0, generator)
    if p_uncond > 0:                                   # drop each label with probability p_uncond (CFG training)
        drop = rand(x0.shape[0], generator=generator, device=x0.device) < p_uncond       # (B,)
        y = torch.where(drop, torch.full_like(y, model.num_classes), y)
    return t, noise, y


def simple_loss(model, x0: torch.Tensor, sched: NoiseSchedule, t: torch.Tensor, noise: torch.Tensor,
                y: torch.Tensor | None = None, *, reduction: str = "mean") -> torch.Tensor:
    """L_simple = ||eps - eps_theta(x_t, t)||^2 at given t (B,) and eps (B, ...) (DDPM eq. 14).

    The mean over each sample's dimensions, then over the batch (``reduction="mean"``) or not (``"none"``).
    :func:`eps_loss` checks the arguments and draws t and eps.
    """
    x_t = add_noise(x0, t, sched, noise)                                     # DDPM eq. (4)
    eps_hat = model(x_t, t, y)                                               # (B, ...)
    err = eps_hat - noise                                                    # (B, ...)
    if err.dtype != torch.float64:
        err = err.float()                    # half precision -> float32 for the loss; float64 stays float64
    per_sample = err.pow(2).reshape(x0.shape[0], -1).mean(dim=1)             # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample


# ------------------------------------------------------------------------------------------ argument checks
def _check_eps_loss(model, x0, sched, y, p_uncond, t, noise, reduction) -> tuple:
    """Returns the model with its output shape checked, ``t`` as a (B,) tensor (or None), the labels on
    ``x0``'s device and ``p_uncond`` as a float."""
    check_schedule(sched)
    check_choice(reduction, "reduction", ("mean", "none"))
    p_uncond = check_real(p_uncond, "p_uncond", low=0.0, high=1.0)
    check_tensor(x0, "x0")
    check_model_dtype(model, x0.dtype, "x0")
    B, device = x0.shape[0], x0.device
    if t is not None:
        t = check_timesteps(t, sched.T, B, device)
    if noise is not None:
        check_tensor(noise, "noise")
        check_same_shape(x0, noise, "x0", "noise")
    num_classes = num_classes_of(model)
    if p_uncond > 0 and (y is None or num_classes is None):
        raise ValueError(f"p_uncond={p_uncond} needs labels y and a conditional model with num_classes")
    y = check_labels(y, B, num_classes, device)
    return ShapeCheckedModel(model, num_classes, output="eps_hat", like="x0"), t, y, p_uncond
