"""What the network predicts and how the loss weights the timesteps — eps, x_0 and v targets, min-SNR-gamma.

With x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps and SNR = alpha_bar / (1 - alpha_bar), a network can
be trained to predict eps (DDPM), x_0, or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho
2022). At fixed x_t the three errors are proportional::

    || x0_hat - x_0 ||^2 = || eps_hat - eps ||^2 / SNR
    || v_hat - v ||^2    = || eps_hat - eps ||^2 (SNR + 1) / SNR

so every choice of target and weight w(t) is the eps loss with an *effective* weight on the eps error,
:func:`eps_weight`. Hang et al. 2023 ("min-SNR-gamma") weight the x_0 error by min(SNR, gamma): the eps loss at
high noise (SNR < gamma) and a capped weight near the data, where SNR grows without bound.

:func:`target_loss` is the training loss for any (target, weighting); :class:`PredictionAsEps` turns an x_0- or
v-network back into an eps-model, so that every sampler of the package runs it unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from ._validate import check_choice, check_real, check_schedule
from .conversions import _eps_from_v, _eps_from_x0, _v_from_eps
from .forward import add_noise
from .losses import _check_eps_loss, _draw_training_inputs
from .schedules import NoiseSchedule, gather

TARGETS = ("eps", "x0", "v")
WEIGHTINGS = ("uniform", "min_snr")


def target_of(x0: torch.Tensor, noise: torch.Tensor, alpha_bar, target: str) -> torch.Tensor:
    """The regression target: eps, x_0 or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0.

    Introduced in chapter 10.
    """
    if target == "eps":
        return noise
    return x0 if target == "x0" else _v_from_eps(x0, noise, alpha_bar)


def eps_from_prediction(x_t: torch.Tensor, pred: torch.Tensor, alpha_bar, target: str) -> torch.Tensor:
    """The eps that a prediction of ``target`` at x_t implies (chapter 3's conversions).

    Introduced in chapter 10.
    """
    if target == "eps":
        return pred
    return _eps_from_x0(x_t, pred, alpha_bar) if target == "x0" else _eps_from_v(x_t, pred, alpha_bar)


def loss_weight(snr: torch.Tensor, target: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """w(t), the weight on the squared error of ``target``: 1 (``"uniform"``), or min-SNR-gamma (Hang et al.
    2023, eq. 11 and its v form): min(SNR, gamma) / SNR for eps, min(SNR, gamma) for x_0, min(SNR, gamma) /
    (SNR + 1) for v. Introduced in chapter 10.
    """
    return _loss_weight(snr, *_check_weighting(target, weighting, gamma))


def _loss_weight(snr: torch.Tensor, target: str, weighting: str, gamma: float) -> torch.Tensor:
    if weighting == "uniform":
        return torch.ones_like(snr)
    capped = snr.clamp(max=gamma)
    return {"eps": capped / snr, "x0": capped, "v": capped / (snr + 1)}[target]


def eps_weight(snr: torch.Tensor, target: str, weighting: str, gamma: float = 5.0) -> torch.Tensor:
    """The weight that (target, weighting) puts on the eps error: loss_weight times 1, 1 / SNR or (SNR + 1) / SNR.

    Introduced in chapter 10.
    """
    target, weighting, gamma = _check_weighting(target, weighting, gamma)
    unit = {"eps": torch.ones_like(snr), "x0": 1 / snr, "v": (snr + 1) / snr}[target]
    return _loss_weight(snr, target, weighting, gamma) * unit


def target_loss(model, x0: torch.Tensor, sched: NoiseSchedule, y: torch.Tensor | None = None,
                p_uncond: float = 0.0, generator: torch.Generator | None = None, *, target: str = "eps",
                weighting: str = "uniform", gamma: float = 5.0, t: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """The loss w(t) ||f_theta(x_t, t) - target||^2 for a network that predicts ``target``.

    Args:
        model: ``model(x_t, t, y)``, the prediction of ``target``.
        target: ``"eps"``, ``"x0"`` or ``"v"``.
        weighting: ``"uniform"`` (w = 1) or ``"min_snr"`` (Hang et al. 2023, with ``gamma``).
        x0, sched, y, p_uncond, generator, t, noise, reduction: as in :func:`minidiff.eps_loss` (the same random
            draws in the same order, so ``target="eps"``, ``weighting="uniform"`` is L_simple exactly).

    Introduced in chapter 10.
    """
    target, weighting, gamma = _check_weighting(target, weighting, gamma)
    model, t, y, p_uncond = _check_eps_loss(model, x0, sched, y, p_uncond, t, noise, reduction)
    t, noise, y = _draw_training_inputs(model, x0, sched, y, p_uncond, generator, t, noise)
    return _target_loss(model, x0, sched, t, noise, y, target, weighting, gamma, reduction)


def _target_loss(model, x0, sched, t, noise, y, target, weighting, gamma, reduction):
    a = gather(sched.alpha_bars, t, x0).to(x0.dtype)                              # (B, 1, ...)
    x_t = add_noise(x0, t, sched, noise)
    err = model(x_t, t, y) - target_of(x0, noise, a, target)                     # (B, ...)
    if err.dtype != torch.float64:
        err = err.float()
    w = _loss_weight(sched.snr.to(x0.device)[t], target, weighting, gamma).to(err.dtype)     # (B,)
    per_sample = w * err.pow(2).reshape(x0.shape[0], -1).mean(dim=1)                        # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample


class PredictionAsEps(nn.Module):
    """A network that predicts ``target`` (x_0 or v) as an eps-model ``(x_t, t, y) -> eps_hat`` on ``sched``.

    Introduced in chapter 10.
    """

    def __init__(self, model, sched: NoiseSchedule, target: str):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y), got {type(model).__name__}")
        check_schedule(sched)
        self.model, self.sched = model, sched
        self.target = check_choice(target, "target", TARGETS)
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a = alpha_bar_at(self.sched, t, x_t)                                           # (B, 1, ...)
        return eps_from_prediction(x_t, self.model(x_t, t, y), a, self.target)


def alpha_bar_at(sched: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """alpha_bar at timestep indices ``t`` (B,), shaped to broadcast against ``like``: the schedule's entry for an
    integer index, and between two indices the level whose log sigma is interpolated linearly — the inverse of
    :func:`minidiff.solvers.sigma_to_t`, so fractional timesteps from chapter 11's solvers convert exactly.
    """
    if not t.is_floating_point():
        return gather(sched.alpha_bars, t, like)
    a = sched.alpha_bars.double().to(t.device)
    log_sigma = 0.5 * ((1 - a) / a).log()                                              # (T,)
    t = t.double()
    lo = t.floor().long().clamp(0, sched.T - 2)
    w = t - lo
    s2 = (2 * ((1 - w) * log_sigma[lo] + w * log_sigma[lo + 1])).exp()                  # sigma^2, (B,)
    return (1 / (1 + s2)).to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _check_weighting(target, weighting, gamma) -> tuple[str, str, float]:
    return (check_choice(target, "target", TARGETS), check_choice(weighting, "weighting", WEIGHTINGS),
            check_real(gamma, "gamma", low=0.0, low_open=True))
