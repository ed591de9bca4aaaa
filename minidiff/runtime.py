"""Where code runs and how long it may take: the device choice, the book's one budget switch, and the
description of the machine that result files record."""
from __future__ import annotations

import os
import platform

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


def cpu_model() -> str:
    """The processor's name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows), for result files."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """One line naming what ran on ``device``, for result files: the GPU's name, or the CPU's cores and threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), {torch.get_num_threads()} threads"


def model_device(model) -> torch.device:
    """Where ``model`` computes: the device of its first parameter (the CPU for a callable without parameters,
    such as :class:`~minidiff.OracleDenoiser`)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def seconds_per_call(fn, *, repeats: int = 3, device: torch.device | str | None = None) -> float:
    """Wall-clock seconds of one call of ``fn()``: one warm-up call, then the mean of ``repeats`` calls.

    On CUDA the work is queued asynchronously, so the clock is read only after the device has finished
    (``torch.cuda.synchronize``); elsewhere a call has finished when it returns. For the chapters' timing cells.
    """
    import time

    from ._validate import check_int

    repeats = check_int(repeats, "repeats", low=1)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    cuda = torch.device(device).type == "cuda" if device is not None else False
    fn()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats
