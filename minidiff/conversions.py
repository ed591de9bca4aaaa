"""Converting between the three things a network can predict: eps, x_0 and v — chapters 3 and 5.

With x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (the first line is DDPM eq. 15 rearranged, v is
Salimans & Ho 2022's target)::

    x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)
    v   = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0
    x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
    eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v

``alpha_bar`` is a Python float or a tensor that broadcasts against ``x_t`` (see :func:`minidiff.schedules.gather`).
"""
from __future__ import annotations

import torch

# Guard for the x_0-from-eps division where alpha_bar reaches 0 (zero terminal SNR, Lin et al. 2023).
# There an eps prediction carries no information about x_0; dividing by sqrt(ALPHA_BAR_MIN) instead of 0
# keeps the estimate finite (diffusers uses the same value, 2**-24, for the zero-SNR Euler sigmas).
# Only an alpha_bar of exactly 0 is replaced: a small positive one is a valid schedule entry (the cosine
# schedule ends at alpha_bar ~ 2.4e-9 < 2**-24) and must be inverted exactly.
ALPHA_BAR_MIN = 2.0**-24


Scalar = float | torch.Tensor   # a Python float, or a tensor broadcasting against x_t


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """Predicted clean data from a noise prediction (guarded where alpha_bar = 0).

    Args:
        x_t: (B, ...) the noised data.
        eps: (B, ...) the noise prediction.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).

    Where alpha_bar is exactly 0 (zero terminal SNR) the division uses ``ALPHA_BAR_MIN`` = 2^-24 instead.
    """
    if torch.is_tensor(alpha_bar):
        safe = torch.where(alpha_bar > 0, alpha_bar, ALPHA_BAR_MIN)
    else:
        safe = alpha_bar if alpha_bar > 0 else ALPHA_BAR_MIN
    return (x_t - (1.0 - alpha_bar) ** 0.5 * eps) / safe**0.5


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The noise implied by a clean-data estimate (1 - alpha_bar > 0 for every valid schedule index).

    Args:
        x_t: (B, ...) the noised data.
        x0: (B, ...) the clean-data estimate.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    return (x_t - alpha_bar**0.5 * x0) / (1.0 - alpha_bar) ** 0.5


def v_from_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The "velocity" target v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0.

    Args:
        x0: (B, ...) clean data.
        eps: (B, ...) the noise.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x0``, e.g. (B, 1, 1, 1).
    """
    return alpha_bar**0.5 * eps - (1.0 - alpha_bar) ** 0.5 * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """Clean data from a v prediction: x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v.

    Args:
        x_t: (B, ...) the noised data.
        v: (B, ...) the v prediction.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    return alpha_bar**0.5 * x_t - (1.0 - alpha_bar) ** 0.5 * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The noise from a v prediction: eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v.

    Args:
        x_t: (B, ...) the noised data.
        v: (B, ...) the v prediction.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    return (1.0 - alpha_bar) ** 0.5 * x_t + alpha_bar**0.5 * v
