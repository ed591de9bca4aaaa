"""Converters between minidiff's conventions and the papers' — the book's notation page.

* Timestep index: minidiff's 0-based index ``i`` is the DDPM paper's step ``t = i + 1``.
* DDIM paper's ``alpha_t`` is minidiff's ``alpha_bars`` (the cumulative product), not ``alphas``.
* Guidance: minidiff's (and diffusers') scale ``s`` is the CFG paper's ``1 + w``.
* DDIM's ``eta`` sets the per-step noise: ``sigma = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev)``
  (DDIM eq. 16, a = alpha_bar); ``eta = 0`` is deterministic DDIM, ``eta = 1`` is DDPM's posterior variance.
"""
from __future__ import annotations

import torch

from .schedules import NoiseSchedule


def paper_t(index: int) -> int:
    """The DDPM paper's step number ``t`` for minidiff's 0-based index (``paper_t(0) == 1``)."""
    return index + 1


def index_from_paper_t(t: int) -> int:
    """minidiff's 0-based index for the DDPM paper's step ``t`` in 1..T."""
    return t - 1


def ddim_paper_alpha(sched: NoiseSchedule) -> torch.Tensor:
    """The DDIM paper's ``alpha_t`` sequence: minidiff's ``alpha_bars`` (shape (T,))."""
    return sched.alpha_bars


def cfg_w_from_scale(scale: float) -> float:
    """The CFG paper's guidance weight ``w`` for minidiff's scale ``s``: ``w = s - 1``."""
    return scale - 1.0


def scale_from_cfg_w(w: float) -> float:
    """minidiff's guidance scale ``s`` for the CFG paper's weight ``w``: ``s = 1 + w``."""
    return w + 1.0


def ddim_sigma(alpha_bar: float, alpha_bar_prev: float, eta: float) -> float:
    """DDIM eq. (16): the standard deviation of the noise added when stepping alpha_bar -> alpha_bar_prev.

    With ``eta = 1`` and consecutive steps, ``sigma**2`` equals DDPM's posterior variance beta_tilde.
    """
    return eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * (1.0 - alpha_bar / alpha_bar_prev)) ** 0.5
