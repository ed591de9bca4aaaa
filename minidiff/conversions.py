"""Converting between the three things a network can predict: eps, x_0 and v — chapters 3 and 5.

With x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (the first line is DDPM eq. 15 rearranged, v is
Salimans & Ho 2022's target)::

    x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    eps = (x_t - sqrt(alpha_bar) x_0) / sqrt(1 - alpha_bar)
    v   = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0
    x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
    eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v

``alpha_bar`` is a Python float or a tensor that broadcasts against ``x_t`` (see :func:`minidiff.schedules.gather`).

Each public function checks its arguments first (:func:`_check`): two finite floating-point tensors of one shape,
and alpha_bar in [0, 1] (in [0, 1) for :func:`eps_from_x0`, which divides by sqrt(1 - alpha_bar)). The check
waits for the device once per call; the samplers and losses call the unchecked formulas (``_x0_from_eps``,
``_eps_from_x0``, ``_v_from_eps``, ``_eps_from_v``) at every step.
"""
from __future__ import annotations

import torch

from ._validate import check_real, check_same_shape, check_tensor

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
    _check(x_t, "x_t", eps, "eps", alpha_bar)
    return _x0_from_eps(x_t, eps, alpha_bar)


def _x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
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
        alpha_bar: alpha_bar_t in [0, 1), a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    _check(x_t, "x_t", x0, "x0", alpha_bar, one=False)
    return _eps_from_x0(x_t, x0, alpha_bar)


def _eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    return (x_t - alpha_bar**0.5 * x0) / (1.0 - alpha_bar) ** 0.5


def v_from_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The "velocity" target v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0.

    Args:
        x0: (B, ...) clean data.
        eps: (B, ...) the noise.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x0``, e.g. (B, 1, 1, 1).
    """
    _check(x0, "x0", eps, "eps", alpha_bar)
    return _v_from_eps(x0, eps, alpha_bar)


def _v_from_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    return alpha_bar**0.5 * eps - (1.0 - alpha_bar) ** 0.5 * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """Clean data from a v prediction: x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v.

    Args:
        x_t: (B, ...) the noised data.
        v: (B, ...) the v prediction.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    _check(x_t, "x_t", v, "v", alpha_bar)
    return alpha_bar**0.5 * x_t - (1.0 - alpha_bar) ** 0.5 * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    """The noise from a v prediction: eps = sqrt(1 - alpha_bar) x_t + sqrt(alpha_bar) v.

    Args:
        x_t: (B, ...) the noised data.
        v: (B, ...) the v prediction.
        alpha_bar: alpha_bar_t, a float or a tensor that broadcasts against ``x_t``, e.g. (B, 1, 1, 1).
    """
    _check(x_t, "x_t", v, "v", alpha_bar)
    return _eps_from_v(x_t, v, alpha_bar)


def _eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: Scalar) -> torch.Tensor:
    return (1.0 - alpha_bar) ** 0.5 * x_t + alpha_bar**0.5 * v


# ------------------------------------------------------------------------------------------ argument checks
def _check(a: torch.Tensor, name_a: str, b: torch.Tensor, name_b: str, alpha_bar: Scalar, *, one: bool = True) -> None:
    """Two finite floating-point tensors of one shape, and alpha_bar in [0, 1] (``one=False``: [0, 1)) that
    broadcasts against them without changing their shape."""
    check_tensor(a, name_a)
    check_tensor(b, name_b)
    check_same_shape(a, b, name_a, name_b)
    interval = "[0, 1]" if one else "[0, 1)"
    if not torch.is_tensor(alpha_bar):
        check_real(alpha_bar, "alpha_bar", low=0.0, high=1.0, high_open=not one)
        return
    if not alpha_bar.is_floating_point():
        raise TypeError(f"alpha_bar must be a float or a floating-point tensor, got dtype {alpha_bar.dtype}")
    try:
        broadcast = torch.broadcast_shapes(alpha_bar.shape, a.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != a.shape:
        raise ValueError(f"alpha_bar of shape {tuple(alpha_bar.shape)} must broadcast against {name_a} "
                         f"{tuple(a.shape)} without changing its shape, e.g. shape ({a.shape[0]},"
                         f"{' 1,' * (a.ndim - 1)})".replace(",)", ")"))
    low, high = float(alpha_bar.min()), float(alpha_bar.max())
    if not (0.0 <= low and (high <= 1.0 if one else high < 1.0)):        # NaN fails every comparison
        raise ValueError(f"alpha_bar must lie in {interval}, got values in [{low}, {high}]")
