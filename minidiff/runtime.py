"""Where code runs and how long it may take: the device choice and the book's one budget switch."""
from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """CUDA if available, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def quick_mode() -> bool:
    """The budget switch: ``MINIDIFF_QUICK=1`` shortens training and sweeps; ``=0`` forces full runs.

    Unset, quick mode is on exactly when no GPU is available, so a laptop reader still finishes a chapter.
    """
    value = os.environ.get("MINIDIFF_QUICK", "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    if value:
        raise ValueError(f"MINIDIFF_QUICK must be 1/0 (or true/false), got {value!r}")
    return default_device().type == "cpu"
