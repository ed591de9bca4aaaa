"""Converters between minidiff's conventions and the papers' — the book's notation page.

* Timestep index: minidiff's 0-based index ``i`` is the DDPM paper's step ``t = i + 1``.
* DDIM paper's ``alpha_t`` is minidiff's ``alpha_bars`` (the cumulative product), not ``alphas``.
* Guidance: minidiff's (and diffusers') scale ``s`` is the CFG paper's ``1 + w``.
* DDIM's ``eta`` sets the per-step noise: ``sigma = eta * sqrt((1 - a_prev) / (1 - a)) * sqrt(1 - a / a_prev)``
  (DDIM eq. 16, a = alpha_bar); ``eta = 0`` is deterministic DDIM, ``eta = 1`` is DDPM's posterior variance.
  Its converter, :func:`minidiff.samplers.ddim_sigma`, lives beside the DDIM code and is importable from here.
"""
from __future__ import annotations

import torch

from .samplers import ddim_sigma  # noqa: F401 - DDIM's eta -> sigma, beside the DDIM code (chapter 6)
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


def cfg_w_from_scale(guidance_scale: float) -> float:
    """The CFG paper's guidance weight ``w`` for minidiff's scale ``s`` (``guidance_scale``): ``w = s - 1``."""
    return guidance_scale - 1.0


def scale_from_cfg_w(w: float) -> float:
    """minidiff's guidance scale ``s`` for the CFG paper's weight ``w``: ``s = 1 + w``."""
    return w + 1.0
