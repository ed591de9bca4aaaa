"""Classifier-free guidance — chapter 7.

The guided noise prediction (Ho & Salimans 2022, eq. 6, with s = 1 + w)::

    eps = eps_uncond + s * (eps_cond - eps_uncond)

``s = 1`` is plain conditional sampling (one model call), ``s = 0`` is unconditional; the paper's guidance
weight is ``w = s - 1`` (see :func:`minidiff.conventions.cfg_w_from_scale`). In the Python API ``s`` is
called ``guidance_scale``.
"""
from __future__ import annotations

import torch

from ._validate import check_real


def num_classes_of(model) -> int | None:
    """The model's ``num_classes`` (also through a DistributedDataParallel/compile wrapper), or None."""
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        n = getattr(m, "num_classes", None)
        if n is not None:
            return int(n)
    return None


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """eps_uncond + guidance_scale * (eps_cond - eps_uncond), exact at scales 0 and 1 (``torch.lerp``).

    The arguments are checked, then :func:`cfg_lerp` combines the predictions.

    Args:
        eps_uncond: (B, ...) the unconditional noise prediction.
        eps_cond: (B, ...) the conditional noise prediction.
        guidance_scale: the guidance scale s (any real number; the CFG paper's w is s - 1).

    Introduced in chapter 7.
    """
    guidance_scale = _check_cfg_combine(eps_uncond, eps_cond, guidance_scale)
    return cfg_lerp(eps_uncond, eps_cond, guidance_scale)


def cfg_lerp(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """The guided prediction eps_uncond + s (eps_cond - eps_uncond) (CFG eq. 6 with s = 1 + w).

    ``torch.lerp`` computes the same line, but exactly at both ends: s = 0 returns ``eps_uncond`` and s = 1
    returns ``eps_cond`` bit for bit. Both predictions are (B, ...); see :func:`cfg_combine`.
    """
    return torch.lerp(eps_uncond, eps_cond, guidance_scale)                  # (B, ...)


def guided_eps(model, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
               guidance_scale: float) -> torch.Tensor:
    """The noise prediction a sampler uses at one step.

    One model call when ``y`` is None or ``guidance_scale == 1``. Otherwise the conditional and unconditional
    predictions are combined by :func:`cfg_lerp`: for a model with ``num_classes`` they come from one call
    on 2B rows (the B conditional rows, then the same rows with the "no label" index ``num_classes``), which
    is faster than two calls of B rows; a model without ``num_classes`` is called twice (with ``y``, then
    with ``None``). The samplers check their arguments, and the shape of every model output, before this runs.
    """
    if y is None or guidance_scale == 1.0:
        return model(x_t, t, y)
    num_classes = num_classes_of(model)
    if num_classes is None:
        eps_cond = model(x_t, t, y)
        eps_uncond = model(x_t, t, None)
    else:
        x2 = torch.cat([x_t, x_t])                                            # (2B, ...)
        t2 = torch.cat([t, t]) if torch.is_tensor(t) and t.ndim == 1 else t    # (2B,), or one shared step
        y2 = torch.cat([y, torch.full_like(y, num_classes)])                   # (2B,): labels, then "no label"
        eps_cond, eps_uncond = model(x2, t2, y2).chunk(2)                     # (B, ...) each
    return cfg_lerp(eps_uncond, eps_cond, guidance_scale)


# ------------------------------------------------------------------------------------------ argument checks
def _check_cfg_combine(eps_uncond, eps_cond, guidance_scale) -> float:
    guidance_scale = check_real(guidance_scale, "guidance_scale")
    for name, eps in (("eps_uncond", eps_uncond), ("eps_cond", eps_cond)):
        if not torch.is_tensor(eps) or not eps.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {type(eps).__name__}")
        if not bool(torch.isfinite(eps).all()):
            raise ValueError(f"{name} contains NaN or inf values; all entries must be finite")
    if eps_uncond.shape != eps_cond.shape:
        raise ValueError(f"eps_cond must have the shape of eps_uncond: got {tuple(eps_cond.shape)} vs "
                         f"{tuple(eps_uncond.shape)}")
    return guidance_scale
