"""Argument checks shared by the public functions.

Every check raises ``ValueError`` (or ``TypeError`` for a wrong type) with a message that names the
argument, the value received and what is allowed. Nothing is silently clamped.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from .runtime import model_device


def check_tensor(x, name: str, *, finite: bool = True) -> torch.Tensor:
    """``x`` must be a floating-point tensor (and, by default, contain no NaN/inf)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); it needs at least one example")
    if finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values; all entries must be finite")
    return x


def check_model_dtype(model, dtype: torch.dtype, what: str) -> None:
    """A model with floating-point weights must compute in their precision: ``what`` (the input, in ``dtype``)
    in another one would fail inside the first layer with a message about bias types."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    if first is not None and first.is_floating_point() and first.dtype != dtype:
        raise TypeError(f"{what} is {dtype} but the model's weights are {first.dtype}; use one precision for both, "
                        f"e.g. model.to({first.dtype}) and dtype={first.dtype}")


def check_dtype(dtype) -> None:
    """``dtype`` is None (the default precision) or a floating-point torch.dtype."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.float32 or torch.float64, "
                        f"got {dtype!r}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the same shape as {name_a}: got {tuple(b.shape)} vs {tuple(a.shape)}"
        )


def check_timesteps(t, T: int, batch: int, device: torch.device, name: str = "t") -> torch.Tensor:
    """Return ``t`` as an int64 tensor of shape ``(batch,)`` on ``device``, with values in ``[0, T-1]``.

    ``t`` may be a Python int (broadcast to the batch) or an integer tensor of shape ``()`` or ``(batch,)``.
    """
    if isinstance(t, bool) or (isinstance(t, torch.Tensor) and t.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer timestep index, got a bool")
    if isinstance(t, Integral):
        t = torch.full((batch,), int(t), dtype=torch.long, device=device)
    elif isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(f"{name} must be an integer tensor, got dtype {t.dtype}")
        if t.ndim == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
        t = t.to(device=device, dtype=torch.long)
    else:
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(
            f"{name} must lie in [0, {T - 1}] (0-based index, paper step t = index + 1), "
            f"got values in [{int(t.min())}, {int(t.max())}]"
        )
    return t


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def check_real(value, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    lo, hi = ("-inf" if low is None else low), ("inf" if high is None else high)
    interval = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
    if not math.isfinite(value):                 # NaN compares False with everything; inf is never meant
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    bad = False
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value >= high if high_open else value > high
    if bad:
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def check_choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_labels(y, batch: int, num_classes: int | None, device: torch.device, name: str = "y",
                 allow_null: bool = True) -> torch.Tensor | None:
    """Class labels: ``None`` or an integer tensor ``(batch,)`` in ``[0, num_classes]``.

    The extra value ``num_classes`` means "no label" (classifier-free guidance), allowed if ``allow_null``.
    """
    if y is None:
        return None
    if isinstance(y, Integral) and not isinstance(y, bool):
        y = torch.full((batch,), int(y), dtype=torch.long, device=device)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of class labels, got {y!r}")
    if y.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(y.shape)}")
    if num_classes is not None and y.numel():
        top = num_classes if allow_null else num_classes - 1
        if int(y.min()) < 0 or int(y.max()) > top:
            raise ValueError(
                f"{name} must contain class labels in [0, {top}]"
                + (f" ({num_classes} = no label)" if allow_null else "")
                + f", got values in [{int(y.min())}, {int(y.max())}]"
            )
    return y.to(device=device, dtype=torch.long)


def check_schedule(sched) -> None:
    """``sched`` must be a :class:`~minidiff.NoiseSchedule`."""
    from .schedules import NoiseSchedule          # imported here: schedules imports this module
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__} ({sched!r:.60}); build one "
                        "with e.g. NoiseSchedule.linear(T=1000)")


def check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {generator!r} ({type(generator).__name__})"
                        "; seed one with torch.Generator().manual_seed(0)")


def randn(shape, *, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn from ``generator`` (on the generator's own device), moved to ``device``."""
    check_generator(generator)
    check_dtype(dtype)
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator`` (see :func:`randn`)."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def rand(n: int, *, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) uniform numbers in [0, 1) drawn from ``generator`` (on its own device), moved to ``device``."""
    check_generator(generator)
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gen_device).to(device)


def randint(high: int, n: int, *, generator: torch.Generator | None, device) -> torch.Tensor:
    """(n,) integers uniform in [0, high) drawn from ``generator`` (on its own device), moved to ``device``."""
    check_generator(generator)
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def check_sampling(model, shape, sched, *, y, guidance_scale, clip_x0=None, x_T=None,
                   device=None, dtype=None, callback=None, output: str = "eps") -> tuple:
    """The arguments every sampler shares. Returns ``(model, y, guidance_scale, device)``: the model wrapped
    in :class:`ShapeCheckedModel`, the labels on the sampling device, the scale as a float, and that device
    (``device``, else ``x_T``'s, else the model's). The sampling precision (``dtype``, else ``x_T``'s, else
    float32) must be the model's. ``sched`` None: a sampler without a schedule (a flow's, whose model
    predicts ``output`` = "v")."""
    from .guidance import num_classes_of          # imported here: guidance imports this module
    if sched is not None:
        check_schedule(sched)
    if not callable(model):
        raise TypeError(f"model must be callable as model(x_t, t, y) -> {output}, got {type(model).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, t, x_t, x0_hat) or None, got "
                        f"{type(callback).__name__}")
    check_dtype(dtype)
    shape = tuple(shape)
    if len(shape) < 1 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...), got {shape}")
    guidance_scale = check_real(guidance_scale, "guidance_scale")
    check_clip(clip_x0)
    if y is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale} needs class labels y (guidance compares the "
                         "conditional and unconditional predictions); pass y or use guidance_scale=1")
    if x_T is not None:
        check_tensor(x_T, "x_T")
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
    check_model_dtype(model, dtype or (x_T.dtype if x_T is not None else torch.float32),
                      "the sampling precision" + ("" if dtype else " (x_T's dtype)" if x_T is not None else
                                                  " (float32 by default)"))
    device = _sampling_device(model, x_T, device)
    y = check_labels(y, shape[0], num_classes_of(model), device)
    return ShapeCheckedModel(model, num_classes_of(model), output=output, track_finite=True), y, guidance_scale, device


def _sampling_device(model, x_T, device) -> torch.device:
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got "
                             f"{device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={str(device)!r} was requested but CUDA is not available; use 'cpu'")
        return device
    if x_T is not None:
        return x_T.device
    return model_device(model)


def check_ddim_plan(plan: list[tuple], eta: float) -> None:
    """Every step ``(t, t_prev, alpha_bar, alpha_bar_prev, sigma)`` of a DDIM plan must leave a real square
    root in eq. (12), sigma^2 <= 1 - alpha_bar_prev: checked before sampling, to fail fast."""
    for t, t_prev, _, a_prev, sigma in plan:
        if sigma**2 > 1.0 - a_prev:
            raise ValueError(f"eta={eta} is too large for the DDIM step {t} -> {t_prev}: sigma^2 = {sigma**2:.4g} "
                             f"would exceed 1 - alpha_bar_prev = {1.0 - a_prev:.4g}")


def check_clip(clip_x0: float | None) -> None:
    """``clip_x0`` is None (no clipping) or a positive bound."""
    if clip_x0 is not None:
        check_real(clip_x0, "clip_x0", low=0, low_open=True)


class ShapeCheckedModel:
    """``model``, with a check that every output has the shape of the input ``x_t``: a model that returned,
    say, (B, 1) for (B, 2) data would otherwise broadcast silently and corrupt the loss or the samples.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        num_classes: the model's number of classes, or None (guidance reads it from the wrapper).
        track_finite: record whether each output is finite, for :meth:`check_finite` (the samplers do).
        output: the output's name in the error message.
        like: the name of the tensor whose shape the output must have, in the error message.
    """

    def __init__(self, model, num_classes: int | None, *, output: str = "eps", like: str = "x_t",
                 track_finite: bool = False):
        self.model, self.num_classes, self.output, self.like = model, num_classes, output, like
        self.track_finite = track_finite            # record, per call, whether every output is finite
        self.finite: list[torch.Tensor] = []       # (on the device: no host sync until check_finite)
        self.timesteps: list = []

    def __call__(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        eps = self.model(x_t, t, y)
        if not torch.is_tensor(eps) or eps.shape != x_t.shape:
            got = tuple(eps.shape) if torch.is_tensor(eps) else type(eps).__name__
            raise ValueError(f"the model output ({self.output}) must have the shape of {self.like} "
                             f"{tuple(x_t.shape)}, got {got}")
        if self.track_finite:
            self.finite.append(torch.isfinite(eps).all())
            self.timesteps.append(t)
        return eps

    def check_finite(self) -> None:
        """Raise ``FloatingPointError`` naming the first call whose output held NaN or inf: one host sync for
        the whole run, made after the loop (a check per step would stall a GPU every step)."""
        if not self.finite:
            return
        bad = (~torch.stack([f.to("cpu") for f in self.finite])).nonzero()
        if len(bad):
            i = int(bad[0])
            t = self.timesteps[i]
            t = int(t.flatten()[0]) if torch.is_tensor(t) else t
            raise FloatingPointError(f"the model's prediction ({self.output}) held NaN or inf at model call {i + 1} "
                                     f"of {len(self.finite)} (timestep t={t}); the samples are not usable")
