"""Flow matching and rectified flow — chapter 10.

The linear path between data and noise (Lipman et al. 2023, conditional flow matching with sigma_min = 0; Liu et
al. 2023, rectified flow), with t in [0, 1], t = 0 the data and t = 1 the noise::

    x_t = (1 - t) x_0 + t eps                       eps ~ N(0, I)
    u   = d x_t / dt = eps - x_0                    the velocity target
    L   = E_t,x_0,eps || v_theta(x_t, t) - (eps - x_0) ||^2

A trained v_theta is a velocity field; samples come from dx/dt = v_theta(x, t), integrated from t = 1 (pure
noise) down to t = 0. At one (x_t, t) a velocity, a clean-data estimate, a noise estimate and a score are the
same information (:func:`x0_from_velocity` and friends)::

    x_0 = x_t - t v        eps = x_t + (1 - t) v        score = -eps / t

The same marginals as the VP process of chapters 2-9, rescaled: x_vp = sqrt(a) x_0 + sqrt(1 - a) eps divided by
sqrt(a) + sqrt(1 - a) is x_t at t = sqrt(1 - a) / (sqrt(a) + sqrt(1 - a)) (:func:`flow_time`). So an eps-model
is also a velocity model (:class:`EpsAsFlow`) and a velocity model an eps-model (:class:`FlowAsEps`), exactly.

Flow networks take ``t`` as a float in [0, 1]: :class:`FlowNet` feeds a U-Net or MLP ``TIME_SCALE * t``, the
range its sinusoidal time embedding was designed for. Each public function checks its arguments, then runs the
math the book prints.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ._validate import check_int, check_real, check_same_shape, check_schedule, check_tensor, noise_like, rand
from .guidance import guided_eps, num_classes_of
from .schedules import NoiseSchedule

TIME_SCALE = 1000.0        # a flow network's time input: TIME_SCALE * t, like the timestep index of an eps-model
FlowCallback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


# ------------------------------------------------------------------------------------------ the path
def flow_path(x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """The linear path x_t = (1 - t) x_0 + t eps, for t in [0, 1] (a float or a (B,) tensor).

    Introduced in chapter 10.
    """
    t = _check_pair(x0, eps, "x0", "eps", t)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The conditional velocity d x_t / dt = eps - x_0 of the linear path. Introduced in chapter 10."""
    _check_pair(x0, eps, "x0", "eps", 0.0)
    return eps - x0


def flow_matching_loss(model, x0: torch.Tensor, y: torch.Tensor | None = None, p_uncond: float = 0.0,
                       generator: torch.Generator | None = None, *, t: torch.Tensor | None = None,
                       noise: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Conditional flow matching on one batch: || v_theta(x_t, t) - (eps - x_0) ||^2.

    Args:
        model: ``model(x_t, t, y) -> v`` with t (B,) floats in [0, 1] (e.g. a :class:`FlowNet`).
        x0: (B, ...) clean data.
        y: optional (B,) class labels; p_uncond: label dropout probability (classifier-free guidance).
        generator: the source of every random draw, in the order t, noise, label dropout.
        t: optional (B,) times; uniform on [0, 1] when omitted.
        noise: optional (B, ...) eps, standard normal when omitted. Reflow passes the noise its pairs came from.
        reduction: ``"mean"`` (a scalar) or ``"none"`` (one value per sample, (B,)).

    Introduced in chapter 10.
    """
    from .losses import _check_eps_loss
    check_tensor(x0, "x0")
    if t is not None:
        t = _check_times(t, x0.shape[0], "t")
    sched = NoiseSchedule.linear(T=2)                             # only for the shared argument checks
    model, _, y, p_uncond = _check_eps_loss(model, x0, sched, y, p_uncond, None, noise, reduction)
    if t is None:
        t = rand(x0.shape[0], generator=generator, device=x0.device).to(x0.dtype)      # t ~ U(0, 1)
    if noise is None:
        noise = noise_like(x0, generator)
    if p_uncond > 0:
        drop = rand(x0.shape[0], generator=generator, device=x0.device) < p_uncond     # (B,)
        y = torch.where(drop, torch.full_like(y, model.num_classes), y)
    return _cfm_loss(model, x0, noise, t, y, reduction)


def _cfm_loss(model, x0, noise, t, y, reduction):
    tb = t.view(-1, *[1] * (x0.ndim - 1))                         # (B, 1, ...)
    x_t = (1 - tb) * x0 + tb * noise                              # the linear path
    err = model(x_t, t, y) - (noise - x0)                         # v_theta - u, (B, ...)
    if err.dtype != torch.float64:
        err = err.float()
    per_sample = err.pow(2).reshape(x0.shape[0], -1).mean(dim=1)  # (B,)
    return per_sample.mean() if reduction == "mean" else per_sample


# ------------------------------------------------------------------------------------------ conversions
def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """x_0 = x_t - t v. Introduced in chapter 10."""
    t = _check_pair(x_t, v, "x_t", "v", t)
    return x_t - t * v


def eps_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """eps = x_t + (1 - t) v. Introduced in chapter 10."""
    t = _check_pair(x_t, v, "x_t", "v", t)
    return x_t + (1 - t) * v


def velocity_from_eps(x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """v = (eps - x_t) / (1 - t), for t < 1. Introduced in chapter 10."""
    t = _check_pair(x_t, eps, "x_t", "eps", t, high_open=True)
    return (eps - x_t) / (1 - t)


def velocity_from_x0(x_t: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
    """v = (x_t - x_0) / t, for t > 0. Introduced in chapter 10."""
    t = _check_pair(x_t, x0, "x_t", "x0", t, low_open=True)
    return (x_t - x0) / t


def score_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """Tweedie for the linear path: grad log p_t(x_t) = -E[eps | x_t] / t = -(x_t + (1 - t) v) / t, for t > 0.

    Introduced in chapter 10.
    """
    t = _check_pair(x_t, v, "x_t", "v", t, low_open=True)
    return -(x_t + (1 - t) * v) / t


def flow_time(alpha_bar):
    """The time of the linear path with the marginals of a VP level alpha_bar: sqrt(1 - a) / (sqrt(a) + sqrt(1 - a)).

    Introduced in chapter 10.
    """
    a = _check_alpha_bar(alpha_bar)
    return (1 - a) ** 0.5 / (a**0.5 + (1 - a) ** 0.5)


def flow_scale(alpha_bar):
    """The factor 1 / (sqrt(a) + sqrt(1 - a)) that takes x_vp at level alpha_bar to x_t at :func:`flow_time`.

    Introduced in chapter 10.
    """
    a = _check_alpha_bar(alpha_bar)
    return 1 / (a**0.5 + (1 - a) ** 0.5)


def alpha_bar_from_flow_time(t):
    """The inverse of :func:`flow_time`: alpha_bar = (1 - t)^2 / ((1 - t)^2 + t^2). Introduced in chapter 10."""
    t = check_real(t, "t", low=0.0, high=1.0) if not torch.is_tensor(t) else _check_time_tensor(t, "t")
    return (1 - t) ** 2 / ((1 - t) ** 2 + t**2)


# ------------------------------------------------------------------------------------------ models
class FlowNet(nn.Module):
    """A velocity network ``v = model(x_t, t, y)`` with t in [0, 1], built on a network with a timestep input
    (a :class:`minidiff.UNet` or :class:`minidiff.MLPDenoiser`), which gets ``time_scale * t``.

    Introduced in chapter 10.
    """

    def __init__(self, net: nn.Module, time_scale: float = TIME_SCALE):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t, y), got {type(net).__name__}")
        self.net = net
        self.time_scale = check_real(time_scale, "time_scale", low=0.0, low_open=True)
        self.num_classes = getattr(net, "num_classes", None)
        self.config = getattr(net, "config", {})

    def forward(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        t = _check_times(t, x_t.shape[0], "t") if torch.is_tensor(t) else \
            torch.full((x_t.shape[0],), check_real(t, "t", low=0.0, high=1.0), device=x_t.device)
        return self.net(x_t, self.time_scale * t, y)


class _Reading(nn.Module):
    """A model read in another parameterisation, on the schedule ``sched``: keeps its classes and config."""

    def __init__(self, model, sched: NoiseSchedule, what: str):
        if not callable(model):
            raise TypeError(f"the model must be callable as model(x_t, t, y) -> {what}, got {type(model).__name__}")
        check_schedule(sched)
        super().__init__()
        self.sched = sched
        self.num_classes = num_classes_of(model)
        self.config = getattr(model, "config", {})


class FlowAsEps(_Reading):
    """A velocity model read as an eps-model on a VP schedule, ``model(x_vp, t_index, y) -> eps`` — exact:
    at index t the VP state maps to the linear path at ``flow_time(alpha_bar_t)``, scaled by ``flow_scale``,
    and eps = x_t + (1 - t) v there. Every sampler of chapters 5-9 then runs on a flow model.

    Introduced in chapter 10.
    """

    def __init__(self, flow_model, sched: NoiseSchedule):
        super().__init__(flow_model, sched, "v")
        self.flow_model = flow_model

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        a = self.sched.alpha_bars.to(x.device, torch.float64)[t.long()]                  # (B,)
        tau, scale = flow_time(a), flow_scale(a)
        view = lambda v: v.view(-1, *[1] * (x.ndim - 1)).to(x.dtype)                   # noqa: E731
        z = view(scale) * x                                                             # on the linear path
        v = self.flow_model(z, tau.to(x.dtype), y)
        return z + view(1 - tau) * v                                                    # eps = x_t + (1 - t) v


class EpsAsFlow(_Reading):
    """An eps-model on a VP schedule read as a velocity model, ``model(x_t, t, y) -> v`` with t in [0, 1].

    At flow time t the VP level is alpha_bar = (1 - t)^2 / ((1 - t)^2 + t^2); the model is called at the
    (fractional) index where the schedule's log-SNR equals that level's, interpolated linearly — an integer
    index, exactly, at the schedule's own levels (a model that takes only integers, like the oracle, works
    there). Then x_0 = (x_vp - sqrt(1 - a) eps) / sqrt(a) and v = eps - x_0. Times outside the schedule's
    levels, [``t_min``, ``t_max``] = the flow times of alpha_bar_0 and alpha_bar_{T-1}, are an error: the
    model knows nothing there (t = 1, pure noise, lies beyond a schedule with alpha_bar_{T-1} > 0; sample from
    ``flow_times(S, t_max=model.t_max)`` or :func:`eps_flow_times`).

    Introduced in chapter 10.
    """

    def __init__(self, eps_model, sched: NoiseSchedule):
        super().__init__(eps_model, sched, "eps")
        self.eps_model = eps_model
        a = sched.alpha_bars.double()
        self._log_snr = (a / (1 - a)).log()                                             # (T,) decreasing
        self.t_min, self.t_max = float(flow_time(float(a[0]))), float(flow_time(float(a[-1])))

    def index(self, t: torch.Tensor) -> torch.Tensor:
        """The fractional schedule index of flow times ``t`` (B,), float64, clamped to [0, T - 1]."""
        a = alpha_bar_from_flow_time(t.double())
        log_snr = (a / (1 - a)).log()
        s = self._log_snr.to(t.device)
        hi = torch.searchsorted(-s, -log_snr).clamp(1, len(s) - 1)                     # s[hi] <= log_snr < s[hi-1]
        frac = (s[hi - 1] - log_snr) / (s[hi - 1] - s[hi])
        idx = (hi - 1 + frac).clamp(0, len(s) - 1)
        near = (idx - idx.round()).abs() < 1e-6
        return torch.where(near, idx.round(), idx)

    def forward(self, z: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        rounding = torch.finfo(t.dtype).eps if torch.is_tensor(t) and t.is_floating_point() else 0.0
        rel = max(1e-12, 2 * rounding)                                   # the given times' own rounding
        t = torch.as_tensor(t, device=z.device, dtype=torch.float64)
        t = t.expand(z.shape[0]) if t.ndim == 0 else t
        outside = (t < self.t_min * (1 - rel)) | (t > self.t_max * (1 + rel))
        if bool(outside.any()):
            raise ValueError(f"t must lie in [{self.t_min:.6g}, {self.t_max:.6g}], the flow times of the eps-model's "
                             f"schedule levels, got {float(t[outside][0]):.6g}; start from t_max, e.g. "
                             f"flow_times(steps, t_max=model.t_max)")
        a = alpha_bar_from_flow_time(t)                                                  # (B,)
        view = lambda v: v.view(-1, *[1] * (z.ndim - 1)).to(z.dtype)                   # noqa: E731
        x = z / view(flow_scale(a))                                                     # the VP state
        idx = self.index(t)
        idx = idx.long() if bool((idx == idx.round()).all()) else idx.to(z.dtype)
        eps = self.eps_model(x, idx, y)
        x0 = (x - view((1 - a).sqrt()) * eps) / view(a.sqrt())
        return eps - x0


# ------------------------------------------------------------------------------------------ sampling
def flow_times(steps: int, t_max: float = 1.0) -> list[float]:
    """The S + 1 equally spaced times t_max, ..., 0 of Euler's method with S steps. Introduced in chapter 10."""
    steps = check_int(steps, "steps", low=1)
    t_max = check_real(t_max, "t_max", low=0.0, high=1.0, low_open=True)
    return [t_max * (1 - i / steps) for i in range(steps + 1)]


def eps_flow_times(sched: NoiseSchedule, steps: int, spacing: str = "trailing") -> list[float]:
    """The flow times of DDIM's ``steps`` timesteps (:func:`minidiff.ddim_timesteps`), then 0 (the data).

    Introduced in chapter 10.
    """
    from .samplers import ddim_timesteps
    check_schedule(sched)
    ts = ddim_timesteps(sched.T, steps, spacing)
    return [float(flow_time(float(sched.alpha_bars[t]))) for t in ts] + [0.0]


def euler_flow_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """One Euler step of dx/dt = v from t to t_next (< t: towards the data): x + (t_next - t) v.

    Introduced in chapter 10.
    """
    check_tensor(x, "x")
    check_tensor(v, "v")
    check_same_shape(x, v, "x", "v")
    t = check_real(t, "t", low=0.0, high=1.0)
    check_real(t_next, "t_next", low=0.0, high=t)
    return x + (t_next - t) * v


@torch.no_grad()
def flow_sample(model, shape, *, steps: int = 50, times: list[float] | None = None, y: torch.Tensor | None = None,
                guidance_scale: float = 1.0, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                callback: FlowCallback | None = None) -> torch.Tensor:
    """Sample a velocity model by Euler's method from t = 1 (x_T ~ N(0, I)) to t = 0.

    Args:
        model: ``model(x_t, t, y) -> v`` with t (B,) in [0, 1], e.g. a :class:`FlowNet` or :class:`EpsAsFlow`.
        shape: (B, ...) of the samples.
        steps: S equal steps (:func:`flow_times`), unless ``times`` gives the decreasing times (first <= 1, last 0).
        y, guidance_scale: class labels and classifier-free guidance on the velocity (as on eps).
        x_T: the starting point (default: drawn from ``generator``).
        callback: ``callback(i, t, x_t, x0_hat)`` before each step, x0_hat = x_t - t v.

    Returns x_0 of ``shape``. Introduced in chapter 10.
    """
    times = flow_times(steps) if times is None else _check_flow_times(times)
    model, y, guidance_scale, device, dtype = _check_flow_sampling(model, shape, y, guidance_scale, x_T, device,
                                                                   dtype, callback)
    x = x_T.to(device, dtype) if x_T is not None else torch.randn(
        shape, generator=generator, device=generator.device if generator is not None else device,
        dtype=dtype).to(device)
    x = flow_loop(model, x, times, y, guidance_scale, callback=callback)
    model.check_finite()
    return x


@torch.no_grad()
def flow_loop(model, x: torch.Tensor, times: list[float], y=None, guidance_scale: float = 1.0, *,
              callback: FlowCallback | None = None) -> torch.Tensor:
    """The loop of :func:`flow_sample`: Euler steps of dx/dt = v along the decreasing ``times``."""
    for i, (t, t_next) in enumerate(zip(times, times[1:])):
        t_batch = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)       # (B,)
        v = guided_eps(model, x, t_batch, y, guidance_scale)                          # CFG on the velocity
        if callback is not None:
            callback(i, t, x, x - t * v)
        x = x + (t_next - t) * v                                                      # Euler, dt = t_next - t < 0
    return x


# ------------------------------------------------------------------------------------------ reflow
@torch.no_grad()
def straightness(model, x_T: torch.Tensor, *, steps: int = 100, y: torch.Tensor | None = None) -> dict:
    """How straight the sampling paths are (Liu et al. 2023, eq. 5), along Euler's path from ``x_T``::

        S = int_0^1 E || (x_1 - x_0) - v(x_t, t) ||^2 dt

    per dimension; 0 for straight paths.

    Returns a dict: ``straightness`` (float), ``x0`` (the path's end) and ``relative`` (S divided by
    E || x_1 - x_0 ||^2 per dimension). Introduced in chapter 10.
    """
    steps = check_int(steps, "steps", low=1)
    model, y, _, device, dtype = _check_flow_sampling(model, tuple(x_T.shape), y, 1.0, x_T, None, None, None)
    vs, times = [], flow_times(steps)

    def keep(i, t, x_t, x0_hat):
        vs.append(x_t - x0_hat)                                   # t v; divided by t below (t > 0 on this grid)

    x0 = flow_loop(model, x_T.to(device, dtype), times, y, callback=keep)
    model.check_finite()
    chord = x_T.to(device, dtype) - x0                            # x_1 - x_0, (B, ...)
    dev = torch.stack([(chord - tv / t).pow(2).flatten(1).mean(1) for tv, t in zip(vs, times)])   # (S, B)
    s = float(dev.mean())
    return {"straightness": s, "relative": s / float(chord.pow(2).flatten(1).mean()), "x0": x0}


@torch.no_grad()
def reflow_pairs(model, x_T: torch.Tensor, *, steps: int = 100, y: torch.Tensor | None = None,
                 guidance_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The coupling of rectified flow's next round (Liu et al. 2023, Algorithm 1): ``(x0, x_T)`` with x0 the
    model's sample from x_T. Train on them with ``flow_matching_loss(model, x0, noise=x_T)``.

    Introduced in chapter 10.
    """
    return flow_sample(model, tuple(x_T.shape), steps=steps, y=y, guidance_scale=guidance_scale, x_T=x_T), x_T


# ------------------------------------------------------------------------------------------ argument checks
def _check_time_tensor(t: torch.Tensor, name: str, *, low_open=False, high_open=False) -> torch.Tensor:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of times in [0, 1], got dtype {t.dtype}")
    bad = ~torch.isfinite(t) | (t < 0) | (t > 1) | ((t == 0) if low_open else False) | ((t == 1) if high_open
                                                                                          else False)
    if bool(bad.any()):
        allowed = ("(0" if low_open else "[0") + ", " + ("1)" if high_open else "1]")
        raise ValueError(f"{name} must lie in {allowed}, got {float(t[bad][0])}")
    return t


def _check_times(t, batch: int, name: str) -> torch.Tensor:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a tensor of shape ({batch},), got {type(t).__name__}")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) to match the batch, got {tuple(t.shape)}")
    return _check_time_tensor(t, name)


def _check_pair(a, b, name_a, name_b, t, *, low_open=False, high_open=False):
    """Two tensors of one shape and t in [0, 1] (a float, or a (B,) tensor returned shaped to broadcast)."""
    check_tensor(a, name_a)
    check_tensor(b, name_b)
    check_same_shape(a, b, name_a, name_b)
    if torch.is_tensor(t):
        t = t.expand(a.shape[0]) if t.ndim == 0 else t
        if t.shape != (a.shape[0],):
            raise ValueError(f"t must be a float or a tensor of shape ({a.shape[0]},), got shape {tuple(t.shape)}")
        _check_time_tensor(t, "t", low_open=low_open, high_open=high_open)
        return t.to(a.dtype).view(-1, *[1] * (a.ndim - 1))
    return check_real(t, "t", low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def _check_alpha_bar(alpha_bar):
    if torch.is_tensor(alpha_bar):
        if not alpha_bar.is_floating_point() or bool(((alpha_bar < 0) | (alpha_bar > 1) |
                                                      ~torch.isfinite(alpha_bar)).any()):
            raise ValueError("alpha_bar must be a floating-point tensor with values in [0, 1]")
        return alpha_bar
    return check_real(alpha_bar, "alpha_bar", low=0.0, high=1.0)


def _check_flow_times(times) -> list[float]:
    if not isinstance(times, (list, tuple)) or len(times) < 2:
        raise ValueError(f"times must be a list of at least 2 decreasing times from <= 1 to 0, got {times!r:.80}")
    times = [check_real(t, "times[i]", low=0.0, high=1.0) for t in times]
    if any(b >= a for a, b in zip(times, times[1:])) or times[-1] != 0.0:
        raise ValueError(f"times must decrease strictly and end at 0 (the data), got {times!r:.80}")
    return times


def _check_flow_sampling(model, shape, y, guidance_scale, x_T, device, dtype, callback):
    """check_sampling's checks without a schedule; also returns the sampling dtype."""
    from ._validate import check_sampling
    model, y, guidance_scale, device = check_sampling(model, shape, None, y=y, guidance_scale=guidance_scale,
                                                      x_T=x_T, device=device, dtype=dtype, callback=callback,
                                                      output="v")
    return model, y, guidance_scale, device, dtype or (x_T.dtype if x_T is not None else torch.float32)
