"""Sampling: DDPM ancestral sampling (chapter 5) and DDIM (chapter 6).

Every sampler is a plain function under ``torch.no_grad()`` that returns x_0 of ``shape``. Timesteps are
0-based indices (paper t = index + 1); "index -1" stands for the clean data, where alpha_bar = 1.
``callback(i, t, x_t, x0_hat)`` is called once per step with the step number ``i``, the timestep ``t``, the
state ``x_t`` the step starts from and the model's clean-data estimate ``x0_hat`` from it.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

import torch

from ._validate import check_choice, check_int, check_labels, check_real, check_same_shape, check_tensor, randn
from .conventions import ddim_sigma
from .conversions import eps_from_x0, x0_from_eps
from .guidance import guided_eps, num_classes_of
from .schedules import NoiseSchedule

VARIANCES = ("beta_tilde", "beta")
SPACINGS = ("trailing", "leading", "linspace")
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


# ------------------------------------------------------------------------------------------ shared setup
def _model_device(model) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _start(model, shape, sched, x_T, generator, device, dtype, y, guidance_scale, clip_x0):
    """Validate the common sampler arguments; return (x_T, y, guidance_scale)."""
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    shape = tuple(shape)
    if len(shape) < 1 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...), got {shape}")
    guidance_scale = check_real(guidance_scale, "guidance_scale")
    _check_clip(clip_x0)
    if y is None and guidance_scale != 1.0:
        raise ValueError(f"guidance_scale={guidance_scale} needs class labels y (guidance compares the "
                         "conditional and unconditional predictions); pass y or use guidance_scale=1")
    if x_T is not None:
        check_tensor(x_T, "x_T")
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        x = x_T.to(device) if device is not None else x_T
        x = x.to(dtype) if dtype is not None else x
    else:
        device = torch.device(device) if device is not None else _model_device(model)
        x = randn(shape, generator=generator, device=device, dtype=dtype or torch.float32)
    y = check_labels(y, shape[0], num_classes_of(model), x.device)
    return x, y, guidance_scale


def _clip(x0_hat: torch.Tensor, clip_x0: float | None) -> torch.Tensor:
    return x0_hat if clip_x0 is None else x0_hat.clamp(-clip_x0, clip_x0)


def _check_clip(clip_x0: float | None) -> None:
    if clip_x0 is not None:
        check_real(clip_x0, "clip_x0", low=0, low_open=True)


def _alpha_bar(sched: NoiseSchedule, t: int) -> float:
    """alpha_bar at index t as a Python float; index -1 is the clean data (alpha_bar = 1)."""
    return 1.0 if t < 0 else float(sched.alpha_bars[t])


# ------------------------------------------------------------------------------------------ DDPM
def ddpm_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, sched: NoiseSchedule, *,
              variance: str = "beta_tilde", clip_x0: float | None = None,
              noise: torch.Tensor | None = None, t_prev: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step x_t -> x_{t-1} (DDPM Algorithm 2, line 4), via the posterior mean.

    x0_hat by eq. (15), the posterior mean by eq. (7), and no noise (z = 0) at t = 0::

        x0_hat  = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
        mean    = coef_x0 * x0_hat + coef_xt * x_t
        x_{t-1} = mean + sigma_t z,   sigma_t^2 = beta_tilde_t or beta_t

    Without clipping the mean equals eq. (11): (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).

    Args:
        x_t: (B, ...) the current state.
        eps: (B, ...) the noise prediction at ``x_t``.
        t: the step's 0-based index, an int in [0, T-1].
        sched: the noise schedule.
        variance: ``"beta_tilde"`` (sigma^2 = beta_tilde_t) or ``"beta"`` (sigma^2 = beta_t).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        noise: (B, ...) the fresh z; required when ``t > 0``.
        t_prev: where the step goes, default ``t - 1``. A ``t_prev`` < t - 1 skips timesteps: the step goes
            to ``t_prev`` (-1: the data) as DDPM on the respaced chain t -> t_prev, whose single step has
            beta = 1 - alpha_bar_t / alpha_bar_prev (Nichol & Dhariwal 2021): the same formulas with that
            beta, alpha = 1 - beta and alpha_bar_prev.

    Returns:
        ``(x_prev, x0_hat)``: the new state and the clean-data estimate, both (B, ...).
    """
    t = check_int(t, "t", low=0, high=sched.T - 1)
    t_prev = t - 1 if t_prev is None else check_int(t_prev, "t_prev", low=-1, high=t - 1)
    variance = check_choice(variance, "variance", VARIANCES)
    _check_clip(clip_x0)
    check_same_shape(x_t, eps, "x_t", "eps")
    coef_x0, coef_xt, var = _posterior(sched, t, t_prev, variance)
    x0_hat = _clip(x0_from_eps(x_t, eps, _alpha_bar(sched, t)), clip_x0)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    if t_prev < 0:
        return mean, x0_hat
    if noise is None:
        raise ValueError(f"noise is required for the DDPM step at t={t} > 0")
    check_same_shape(x_t, noise, "x_t", "noise")
    return mean + var**0.5 * noise, x0_hat


def _posterior(sched: NoiseSchedule, t: int, t_prev: int, variance: str) -> tuple[float, float, float]:
    """(coef_x0, coef_xt, sigma^2) of the reverse step t -> t_prev: q(x_{t_prev} | x_t, x_0)'s mean coefficients
    and the chosen variance. One step (t_prev = t - 1) reads the schedule's own tensors (chapter 2); a skip
    uses the respaced beta = 1 - alpha_bar_t / alpha_bar_prev in the same formulas."""
    if t_prev == t - 1:
        var = sched.posterior_variance[t] if variance == "beta_tilde" else sched.betas[t]
        return float(sched.posterior_mean_coef_x0[t]), float(sched.posterior_mean_coef_xt[t]), float(var)
    a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
    beta = 1.0 - a / a_prev                                                   # the respaced chain's beta
    coef_x0 = a_prev**0.5 * beta / (1.0 - a)
    coef_xt = (1.0 - beta) ** 0.5 * (1.0 - a_prev) / (1.0 - a)
    return coef_x0, coef_xt, beta * (1.0 - a_prev) / (1.0 - a) if variance == "beta_tilde" else beta


@torch.no_grad()
def ddpm_sample(model, shape, sched: NoiseSchedule, *, y: torch.Tensor | None = None,
                guidance_scale: float = 1.0, variance: str = "beta_tilde", clip_x0: float | None = None,
                x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                device=None, dtype: torch.dtype | None = None, callback: Callback | None = None,
                steps: int | None = None, spacing: str = "trailing") -> torch.Tensor:
    """DDPM ancestral sampling over all T steps (Ho et al. 2020, Algorithm 2).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        shape: (B, ...) of the samples.
        sched: the noise schedule the model was trained with.
        y: optional (B,) class labels; with ``guidance_scale != 1`` classifier-free guidance is applied.
        guidance_scale: s in eps_uncond + s (eps_cond - eps_uncond); 1 is plain conditional sampling, one model
            call per step (see :mod:`minidiff.guidance`).
        variance: ``"beta_tilde"`` (posterior variance, sigma^2 = beta_tilde_t) or ``"beta"`` (sigma^2 = beta_t).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        x_T: optional starting noise (B, ...); drawn from ``generator`` otherwise, then one noise draw per
            step except the last.
        generator: the source of every noise draw.
        device: where to sample (default: ``x_T``'s device, else the model's).
        dtype: the sampling precision (default: ``x_T``'s dtype, else float32; float64 works).
        callback: ``callback(i, t, x_t, x0_hat)``, called once per step (see :mod:`minidiff.samplers`).
        steps: visit only ``steps`` of the T timesteps (those of :func:`ddim_timesteps` with ``spacing``) and run
            DDPM on that respaced chain (:func:`ddpm_step` with ``t_prev``). With ``variance="beta_tilde"`` this
            is DDIM with eta = 1; ``variance="beta"`` is the DDIM paper's sigma-hat sampler. Default: all T.
        spacing: how ``steps`` timesteps are picked (see :func:`ddim_timesteps`).

    Returns:
        x_0, the samples, of ``shape``.

    Introduced in chapter 5.
    """
    variance = check_choice(variance, "variance", VARIANCES)
    x, y, guidance_scale = _start(model, shape, sched, x_T, generator, device, dtype, y, guidance_scale, clip_x0)
    ts = ddim_timesteps(sched.T, sched.T if steps is None else steps, spacing)     # all T: T-1, ..., 0
    B = x.shape[0]
    for i, (t, t_prev) in enumerate(zip(ts, ts[1:] + [-1])):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)          # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if t_prev >= 0 else None
        x_prev, x0_hat = ddpm_step(x, eps, t, sched, variance=variance, clip_x0=clip_x0, noise=noise, t_prev=t_prev)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x_prev
    return x


# ------------------------------------------------------------------------------------------ DDIM
def ddim_timesteps(T: int, steps: int, spacing: str = "trailing") -> list[int]:
    """The ``steps`` timestep indices DDIM visits, in decreasing order.

    * ``"trailing"``: round(T - k T/steps) - 1, k = 0..steps-1 — starts at T-1 (Lin et al. 2023, Table 2).
    * ``"leading"``:  k * (T // steps), reversed — ends at 0 (the DDIM code's "uniform" skip).
    * ``"linspace"``: round(k (T-1)/(steps-1)), reversed — includes both ends.

    Rounding is of the exact fraction, half to even (Python's ``round``), so exact ties such as 499.5 do not
    depend on floating-point error (diffusers' numpy version can differ there by one).

    The step after timestep ``ts[k]`` goes to ``ts[k+1]`` (and to -1, the data, after the last one). We take
    the previous timestep from this sequence; diffusers instead subtracts ``T // steps``, which is wrong for
    ``"linspace"`` (diffusers issues #12633, #11347).
    """
    T = check_int(T, "T", low=1)
    steps = check_int(steps, "steps", low=1, high=T)
    check_choice(spacing, "spacing", SPACINGS)
    if spacing == "trailing":
        return [round(Fraction(T * (steps - k), steps)) - 1 for k in range(steps)]
    if spacing == "leading":
        return [k * (T // steps) for k in reversed(range(steps))]
    return [round(Fraction(k * (T - 1), max(steps - 1, 1))) for k in reversed(range(steps))]


def _ddim_update(x_t, eps, alpha_bar, alpha_bar_prev, *, sigma=0.0, clip_x0=None, noise=None):
    """DDIM eq. (12): x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps + sigma z.

    Runs in either direction (``alpha_bar_prev`` < ``alpha_bar`` encodes: DDIM inversion). Returns
    (x_prev, x0_hat).
    """
    x0_hat = x0_from_eps(x_t, eps, alpha_bar)
    if clip_x0 is not None:
        x0_hat = _clip(x0_hat, clip_x0)
        eps = eps_from_x0(x_t, x0_hat, alpha_bar)       # the noise consistent with the clipped x0_hat
    x_prev = alpha_bar_prev**0.5 * x0_hat + (1.0 - alpha_bar_prev - sigma**2) ** 0.5 * eps
    if sigma > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0_hat


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, sched: NoiseSchedule, *,
              eta: float = 0.0, clip_x0: float | None = None,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from index ``t`` to ``t_prev < t`` (``t_prev = -1`` is the data), DDIM eq. (12).

    Args:
        x_t: (B, ...) the current state.
        eps: (B, ...) the noise prediction at ``x_t``.
        t: the step's 0-based index, an int in [0, T-1].
        t_prev: where the step goes, an int in [-1, t - 1].
        sched: the noise schedule.
        eta: noise level, eta >= 0 (0: deterministic); sets sigma by DDIM eq. (16).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        noise: (B, ...) the fresh z; required when the step's sigma is positive.

    Returns:
        ``(x_prev, x0_hat)``: the new state and the clean-data estimate, both (B, ...).
    """
    t = check_int(t, "t", low=0, high=sched.T - 1)
    t_prev = check_int(t_prev, "t_prev", low=-1, high=t - 1)
    eta = check_real(eta, "eta", low=0.0)
    _check_clip(clip_x0)
    check_same_shape(x_t, eps, "x_t", "eps")
    a, a_prev, sigma = _ddim_coefficients(sched, t, t_prev, eta)
    if sigma > 0:
        if noise is None:
            raise ValueError(f"noise is required for the DDIM step {t} -> {t_prev} with eta={eta}")
        check_same_shape(x_t, noise, "x_t", "noise")
    return _ddim_update(x_t, eps, a, a_prev, sigma=sigma, clip_x0=clip_x0, noise=noise)


def _ddim_coefficients(sched: NoiseSchedule, t: int, t_prev: int, eta: float) -> tuple[float, float, float]:
    """(alpha_bar_t, alpha_bar_prev, sigma) for one DDIM step; a clear error if eta is too large for it."""
    a, a_prev = _alpha_bar(sched, t), _alpha_bar(sched, t_prev)
    sigma = ddim_sigma(a, a_prev, eta)
    if sigma**2 > 1.0 - a_prev:
        raise ValueError(f"eta={eta} is too large for the DDIM step {t} -> {t_prev}: sigma^2 = {sigma**2:.4g} "
                         f"would exceed 1 - alpha_bar_prev = {1.0 - a_prev:.4g}")
    return a, a_prev, sigma


@torch.no_grad()
def ddim_sample(model, shape, sched: NoiseSchedule, *, steps: int = 50, eta: float = 0.0,
                spacing: str = "trailing", y: torch.Tensor | None = None, guidance_scale: float = 1.0,
                clip_x0: float | None = None, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                callback: Callback | None = None) -> torch.Tensor:
    """DDIM sampling with ``steps`` of the T timesteps (Song et al. 2020, eq. 12).

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        shape: (B, ...) of the samples.
        sched: the noise schedule the model was trained with.
        steps: number of model evaluations, 1 <= steps <= T.
        eta: noise level, eta >= 0: 0 is deterministic (consumes no randomness once x_T is given);
            1 with steps = T is DDPM with sigma^2 = beta_tilde. Noise is drawn once per step whose sigma > 0.
        spacing: ``"trailing"``, ``"leading"`` or ``"linspace"``: which timesteps (see :func:`ddim_timesteps`).
        y: optional (B,) class labels; with ``guidance_scale != 1`` classifier-free guidance is applied.
        guidance_scale: s in eps_uncond + s (eps_cond - eps_uncond); 1 is plain conditional sampling, one model
            call per step (see :mod:`minidiff.guidance`).
        clip_x0: clip the predicted x_0 to [-clip_x0, clip_x0] (default: no clipping).
        x_T: optional starting noise (B, ...); drawn from ``generator`` otherwise.
        generator: the source of every noise draw.
        device: where to sample (default: ``x_T``'s device, else the model's).
        dtype: the sampling precision (default: ``x_T``'s dtype, else float32; float64 works).
        callback: ``callback(i, t, x_t, x0_hat)``, called once per step (see :mod:`minidiff.samplers`).

    Returns:
        x_0, the samples, of ``shape``.

    Introduced in chapter 6.
    """
    eta = check_real(eta, "eta", low=0.0)
    check_int(steps, "steps", low=1, high=sched.T if isinstance(sched, NoiseSchedule) else None)
    x, y, guidance_scale = _start(model, shape, sched, x_T, generator, device, dtype, y, guidance_scale, clip_x0)
    plan = _ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta)
    return _ddim_loop(model, x, plan, y, guidance_scale, clip_x0=clip_x0, generator=generator, callback=callback)


def _ddim_plan(sched: NoiseSchedule, ts: list[int], eta: float) -> list[tuple]:
    """(t, t_prev, alpha_bar, alpha_bar_prev, sigma) for every step along the decreasing timesteps ``ts`` (then
    the data). Every step is checked before sampling: fail fast, not after minutes of work."""
    return [(t, t_prev, *_ddim_coefficients(sched, t, t_prev, eta)) for t, t_prev in zip(ts, ts[1:] + [-1])]


def _ddim_loop(model, x, plan, y, guidance_scale, *, clip_x0=None, generator=None, callback=None):
    """Run the DDIM steps of ``plan`` from ``x``: one (guided) model call and eq. (12) per step."""
    B = x.shape[0]
    for i, (t, t_prev, a, a_prev, sigma) in enumerate(plan):
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)          # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) if sigma > 0 else None
        x_prev, x0_hat = _ddim_update(x, eps, a, a_prev, sigma=sigma, clip_x0=clip_x0, noise=noise)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x = x_prev
    return x


@torch.no_grad()
def ddim_invert(model, x0: torch.Tensor, sched: NoiseSchedule, *, steps: int = 50, spacing: str = "trailing",
                y: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
    """Encode data into noise by running the deterministic DDIM update (eta = 0) backwards in time.

    Visits the timesteps of :func:`ddim_timesteps` in increasing order, starting from the data (index -1).
    Going from index ``t`` to the next ``t_next``, the model is evaluated at the current state and at
    ``t_next`` (the usual explicit approximation, as in diffusers' ``DDIMInverseScheduler``); the
    reconstruction error of ``ddim_sample(..., x_T=ddim_invert(...), eta=0)`` shrinks as ``steps`` grows.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``.
        x0: (B, ...) the data to encode.
        sched: the noise schedule the model was trained with.
        steps: number of model evaluations, 1 <= steps <= T.
        spacing: which timesteps (see :func:`ddim_timesteps`); use the sampler's.
        y: optional (B,) class labels, for a conditional model.
        guidance_scale: the guidance scale, as in :func:`ddim_sample`.

    Returns:
        x_T, the shape of ``x0``.

    Introduced in chapter 6.
    """
    check_tensor(x0, "x0")
    check_int(steps, "steps", low=1, high=sched.T)
    _, y, guidance_scale = _start(model, x0.shape, sched, x0, None, None, None, y, guidance_scale, None)
    ts = ddim_timesteps(sched.T, steps, spacing)[::-1]                      # increasing
    x, B = x0, x0.shape[0]
    for t, t_next in zip([-1] + ts[:-1], ts):
        t_batch = torch.full((B,), t_next, dtype=torch.long, device=x.device)     # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        x, _ = _ddim_update(x, eps, _alpha_bar(sched, t), _alpha_bar(sched, t_next))
    return x


# ------------------------------------------------------------------------------------------ opt-in fast path
class CompiledModel:
    """``model`` compiled with ``torch.compile`` for the sampler loops: an opt-in fast path; eager is the default.

    ``ddim_sample(CompiledModel(model), ...)`` returns what ``ddim_sample(model, ...)`` returns, up to
    floating-point rounding, and sooner where kernel launches dominate — a small U-Net on a GPU, where eager
    PyTorch spends more time launching hundreds of small kernels per step than running them. The compiler fuses
    the small kernels, and on CUDA ``mode="reduce-overhead"`` records the whole forward pass as a CUDA graph
    that every step replays with one launch. The first call compiles (tens of seconds), and so does the first
    call with a new batch shape; the samplers' loops keep one shape, so the cost is paid once per run.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``, e.g. a :class:`~minidiff.UNet` in eval mode.
        mode: ``torch.compile``'s mode for the inductor backend; ``"reduce-overhead"`` adds CUDA graphs on CUDA
            (on the CPU it only compiles).
        backend: ``torch.compile``'s backend: ``"inductor"`` generates fused kernels; ``"eager"`` and
            ``"aot_eager"`` only capture the graph (fast to build: for tests).

    Measured by ``benchmarks/bench.py``; see the book's Performance page.
    """

    def __init__(self, model, *, mode: str | None = "reduce-overhead", backend: str = "inductor"):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y), got {type(model).__name__}")
        self.model = model
        self.num_classes = num_classes_of(model)       # guidance batches the no-label rows when this is set
        options = dict(mode=mode) if backend == "inductor" else {}
        self.compiled = torch.compile(model, backend=backend, dynamic=False, **options)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # A CUDA graph writes its output into the same memory on every replay: mark a new step, return a copy.
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x_t, t, y).clone()
