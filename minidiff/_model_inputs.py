"""The input check shared by the denoisers (:class:`~minidiff.UNet`, :class:`~minidiff.MLPDenoiser`).

``model(x, t, y=None)``: ``x`` a floating-point batch, ``t`` timesteps of shape (B,) (or a number, broadcast),
``y`` labels of shape (B,) in [0, num_classes] (num_classes = "no label") or None. Cheap: no pass over the data
except the label range on the CPU.
"""
from __future__ import annotations

from numbers import Integral, Real

import torch


def check_model_inputs(model, x, t, y, *, features: tuple, multiple: int = 1,
                       multiple_note: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a denoiser's ``(x, t, y)``; return ``t`` (B,) and ``y`` (B,) or None.

    ``features`` is the expected ``x.shape[1:]``, with ``None`` for a free (spatial) size, which must then be a
    multiple of ``multiple`` (``multiple_note``, if given, says it in the error message). ``model.num_classes`` says whether labels are taken;
    ``y=None`` on a conditional model is "no label" for every sample.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    free_names = iter("HW")
    expected = ", ".join(str(f) if f is not None else next(free_names) for f in features)
    if x.ndim != 1 + len(features) or any(f is not None and s != f for s, f in zip(x.shape[1:], features)):
        raise ValueError(f"x must have shape (B, {expected}), got {tuple(x.shape)}")
    free = [s for s, f in zip(x.shape[1:], features) if f is None]
    if any(s % multiple for s in free):
        raise ValueError(f"x's height and width must be divisible by {multiple_note or multiple}, "
                         f"got H={free[0]}, W={free[-1]}")
    B = x.shape[0]
    return _timesteps(t, B, x.device), _labels(model, y, B, x.device)


def _timesteps(t, B: int, device: torch.device) -> torch.Tensor:
    if isinstance(t, (Integral, Real)) and not isinstance(t, bool):
        t = torch.full((B,), t, device=device)
    if not isinstance(t, torch.Tensor) or t.dtype == torch.bool:
        raise TypeError(f"t must be a tensor of timesteps of shape (B,) or a number, got {t!r:.60}")
    if t.ndim == 0:
        return t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"t must have shape ({B},) to match x's batch, got {tuple(t.shape)}")
    return t


def _labels(model, y, B: int, device: torch.device) -> torch.Tensor | None:
    num_classes = model.num_classes
    if num_classes is None:
        if y is not None:
            raise ValueError(f"y must be None: this {type(model).__name__} is unconditional (num_classes=None)")
        return None
    if y is None:
        return torch.full((B,), num_classes, dtype=torch.long, device=device)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer tensor of class labels, got {y!r:.60}")
    if y.shape != (B,):
        raise ValueError(f"y must have shape ({B},) to match x's batch, got {tuple(y.shape)}")
    # Range check where it is free (CPU, eager); on accelerators it would cost a host sync per call, and under
    # torch.compile a graph break. An out-of-range index fails in the embedding lookup anyway.
    if y.device.type == "cpu" and not torch.compiler.is_compiling() and y.numel() and \
            (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(f"y must contain labels in [0, {num_classes}] ({num_classes} = no label), "
                         f"got values in [{int(y.min())}, {int(y.max())}]")
    return y
