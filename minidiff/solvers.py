"""Fast ODE solvers for the probability-flow ODE in sigma — chapter 11.

Chapter 9 wrote DDIM's ODE in the variables x_bar = x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) /
alpha_bar) (Karras et al. 2022, "EDM", the variance-exploding form)::

    d x_bar / d sigma = (x_bar - D(x_bar; sigma)) / sigma

with D the denoiser's x_0 estimate.

Every solver here integrates it from sigma_max down to 0 along a decreasing list ``sigmas`` (the last entry 0),
with one shared signature in the style of k-diffusion: ``solver(denoiser, x, sigmas, callback=None)``, where
``denoiser(x_bar, sigma) -> x0_hat`` takes one float sigma for the whole batch and ``x`` is x_bar at sigmas[0]:

* :func:`sample_euler` — Euler's method, first order, one call per step (with DDIM's sigmas it *is* DDIM);
* :func:`sample_heun` — Heun's method, EDM's Algorithm 1 (the deterministic sampler): second order, two calls
  per step and one for the last step to sigma = 0;
* :func:`sample_dpmpp_2m` — DPM-Solver++(2M) (Lu et al. 2022): exact on the linear part of the ODE in
  lambda = -log sigma, second order by reusing the previous step's x0_hat, one call per step.

:func:`karras_sigmas` is EDM's step schedule (rho = 7), :func:`ddim_sigmas` DDIM's levels; :class:`EpsDenoiser` turns an eps-model on a VP schedule
into D (its time input interpolated in log sigma, as diffusers and k-diffusion do); :func:`solver_sample` puts
the pieces together the way the other samplers of the package are called.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._validate import check_choice, check_int, check_real, check_sampling, check_schedule, check_tensor
from .guidance import guided_eps, num_classes_of
from .samplers import ddim_timesteps
from .schedules import NoiseSchedule

ROUNDING = 4 * torch.finfo(torch.float32).eps / 2     # 2 float32 roundings, relative: a float32 copy of a level
SolverCallback = Callable[[int, float, torch.Tensor, torch.Tensor], None]


# ------------------------------------------------------------------------------------------ sigmas
def schedule_sigmas(sched: NoiseSchedule) -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every timestep index, (T,) float64, increasing.

    Introduced in chapter 11.
    """
    check_schedule(sched)
    a = sched.alpha_bars.double()
    return ((1 - a) / a).sqrt()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's step schedule (Karras et al. 2022, eq. 5), then 0::

        a_max, a_min = sigma_max^(1/rho), sigma_min^(1/rho)
        sigma_i = (a_max + i / (S - 1) (a_min - a_max))^rho,     i = 0 .. S - 1

    Returns (S + 1,) float64, decreasing from sigma_max to sigma_min, with a final 0. rho = 1 spaces the
    sigmas evenly; larger rho puts more of them near sigma_min, where the paths bend. Introduced in chapter 11.
    """
    steps = check_int(steps, "steps", low=1)
    sigma_min = check_real(sigma_min, "sigma_min", low=0.0, low_open=True)
    sigma_max = check_real(sigma_max, "sigma_max", low=sigma_min)
    rho = check_real(rho, "rho", low=0.0, low_open=True)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def ddim_sigmas(sched: NoiseSchedule, steps: int) -> torch.Tensor:
    """The levels sigma_t of DDIM's ``steps`` trailing timesteps (chapter 6), then 0: (S + 1,) float64.

    Euler's method on them is DDIM (eta = 0). Introduced in chapter 11.
    """
    check_schedule(sched)
    timesteps = ddim_timesteps(sched.T, steps, "trailing")                  # checks steps
    return torch.cat([schedule_sigmas(sched)[timesteps], torch.zeros(1, dtype=torch.float64)])


def sigma_to_t(sigma, sched: NoiseSchedule) -> float:
    """The (fractional) timestep index whose sigma is ``sigma``: log sigma interpolated linearly between the
    schedule's levels (diffusers' and k-diffusion's ``_sigma_to_t``), an integer exactly at a level.

    ``sigma`` must lie in [sigma_0, sigma_{T-1}], the levels the model was trained on, up to float32 rounding
    (``ROUNDING``, relative: a float32 copy of an end level counts as that level). Introduced in chapter 11.
    """
    sigma = check_real(sigma, "sigma", low=0.0, low_open=True)
    s = schedule_sigmas(sched)
    lo, hi = float(s[0]), float(s[-1])
    if not lo * (1 - ROUNDING) <= sigma <= hi * (1 + ROUNDING):
        raise ValueError(f"sigma must lie in [{lo:.6g}, {hi:.6g}], the schedule's levels, got {sigma:.6g}")
    log_s, target = s.log(), math.log(min(max(sigma, lo), hi))
    k = int(torch.searchsorted(log_s, torch.tensor([target], dtype=torch.float64)).clamp(1, len(s) - 1))
    w = (target - float(log_s[k - 1])) / float(log_s[k] - log_s[k - 1])
    t = k - 1 + w
    return float(round(t)) if abs(t - round(t)) < 1e-9 else t


# ------------------------------------------------------------------------------------------ the denoiser
class EpsDenoiser(nn.Module):
    """An eps-model on a VP schedule as EDM's denoiser ``D(x_bar, sigma) -> x0_hat``::

        x_t = x_bar / sqrt(1 + sigma^2)          (= sqrt(alpha_bar) x_bar)
        D   = x_bar - sigma * eps_theta(x_t, t(sigma), y)

    with t(sigma) from :func:`sigma_to_t` (``quantize=True``: rounded to the nearest index, for models that take
    integer timesteps only; the input scaling keeps the exact sigma, as diffusers' DPM-Solver does). ``y`` and
    ``guidance_scale`` are bound here: classifier-free guidance on eps is guidance on D. Introduced in chapter 11.
    """

    def __init__(self, model, sched: NoiseSchedule, *, y: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 quantize: bool = False):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y) -> eps, got {type(model).__name__}")
        check_schedule(sched)
        if not isinstance(quantize, bool):
            raise TypeError(f"quantize must be a bool, got {quantize!r}")
        self.model, self.sched, self.y, self.quantize = model, sched, y, quantize
        self.guidance_scale = check_real(guidance_scale, "guidance_scale")
        self.num_classes = num_classes_of(model)

    def forward(self, x_bar: torch.Tensor, sigma: float) -> torch.Tensor:
        t = sigma_to_t(sigma, self.sched)
        t = float(round(t)) if self.quantize else t
        index = torch.full((x_bar.shape[0],), t, device=x_bar.device,
                           dtype=torch.long if t == int(t) else x_bar.dtype)           # (B,)
        eps = guided_eps(self.model, x_bar / math.sqrt(1 + sigma**2), index, self.y, self.guidance_scale)
        return x_bar - sigma * eps


# ------------------------------------------------------------------------------------------ the solvers
@torch.no_grad()
def sample_euler(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 callback: SolverCallback | None = None) -> torch.Tensor:
    """Euler's method on d x / d sigma = (x - D(x; sigma)) / sigma, one denoiser call per step.

    Introduced in chapter 11.
    """
    sigmas = _check_solver(denoiser, x, sigmas, callback)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoiser(x, sigma)
        if callback is not None:
            callback(i, sigma, x, x0_hat)
        d = (x - x0_hat) / sigma                                      # the ODE's slope, = eps_hat
        x = x + (sigma_next - sigma) * d
    return x


@torch.no_grad()
def sample_heun(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                callback: SolverCallback | None = None) -> torch.Tensor:
    """Heun's method (Karras et al. 2022, Algorithm 1, the deterministic sampler): an Euler step, then the average
    of the slopes at both ends; the last step, to sigma = 0, stays an Euler step. 2 S - 1 calls for S steps.

    Introduced in chapter 11.
    """
    sigmas = _check_solver(denoiser, x, sigmas, callback)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoiser(x, sigma)
        if callback is not None:
            callback(i, sigma, x, x0_hat)
        d = (x - x0_hat) / sigma
        x_next = x + (sigma_next - sigma) * d                          # Euler's prediction
        if sigma_next > 0:
            d_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * (d + d_next) / 2       # the trapezoidal correction
        x = x_next
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                    callback: SolverCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), in lambda = -log sigma with h = lambda_next - lambda::

        x_next = (sigma_next / sigma) x + (1 - e^-h) D_hat
        D_hat  = (1 + 1 / (2 r)) x0_hat - 1 / (2 r) x0_hat_prev
        r      = h_prev / h

    D_hat = x0_hat on the first step and on the last (to sigma = 0, where the update is x0_hat itself).
    One call per step. Introduced in chapter 11.
    """
    sigmas = _check_solver(denoiser, x, sigmas, callback)
    x0_prev, h_prev = None, None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hat = denoiser(x, sigma)
        if callback is not None:
            callback(i, sigma, x, x0_hat)
        if sigma_next == 0:
            x = x0_hat                                                 # lambda = inf: the data estimate
            break
        h = math.log(sigma / sigma_next)                               # lambda_next - lambda > 0
        d_hat = x0_hat if x0_prev is None else \
            (1 + 1 / (2 * h_prev / h)) * x0_hat - (1 / (2 * h_prev / h)) * x0_prev
        x = (sigma_next / sigma) * x - math.expm1(-h) * d_hat
        x0_prev, h_prev = x0_hat, h
    return x


SOLVERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}


def nfe(solver: str, steps: int) -> int:
    """Denoiser calls of ``solver`` with ``steps`` steps to sigma = 0: S, or 2 S - 1 for Heun.

    Introduced in chapter 11.
    """
    check_choice(solver, "solver", tuple(SOLVERS))
    steps = check_int(steps, "steps", low=1)
    return 2 * steps - 1 if solver == "heun" else steps


@torch.no_grad()
def solver_sample(model, shape, sched: NoiseSchedule, *, solver: str = "dpmpp_2m", steps: int = 10,
                  rho: float = 7.0, sigmas: torch.Tensor | None = None, y: torch.Tensor | None = None,
                  guidance_scale: float = 1.0, x_T: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
                  callback: SolverCallback | None = None) -> torch.Tensor:
    """Sample an eps-model with one of the fast solvers on EDM's sigma schedule.

    Args:
        model: ``model(x_t, t, y) -> eps_hat`` with t a (B,) timestep index (fractional between the levels:
            U-Nets and MLPs of this package accept that).
        shape: (B, ...) of the samples.
        sched: the schedule the model was trained with.
        solver: ``"euler"``, ``"heun"`` or ``"dpmpp_2m"``.
        steps: steps S; the model is called :func:`nfe` times (S, or 2 S - 1 for Heun).
        rho: :func:`karras_sigmas`' exponent, between the schedule's smallest and largest sigma.
        sigmas: instead, the decreasing sigmas to step along (last 0, the first at most sigma_{T-1}).
        y, guidance_scale: class labels and classifier-free guidance, as in :func:`minidiff.ddim_sample`.
        x_T: optional starting noise (B, ...) at the first sigma, in the VP scale of chapters 1-10 (N(0, I));
            drawn from ``generator`` otherwise. The solver starts from x_bar = sqrt(1 + sigma_0^2) x_T.
        device, dtype, callback: as in :func:`minidiff.ddim_sample`; ``callback(i, sigma, x_bar, x0_hat)``.

    Returns x_0 of ``shape``. Introduced in chapter 11.
    """
    check_choice(solver, "solver", tuple(SOLVERS))
    checked, y, guidance_scale, device = check_sampling(model, shape, sched, y=y, guidance_scale=guidance_scale,
                                                        x_T=x_T, device=device, dtype=dtype, callback=callback)
    if sigmas is None:
        s = schedule_sigmas(sched)
        sigmas = karras_sigmas(steps, float(s[0]), float(s[-1]), rho)
    else:
        sigmas = _check_sigmas(sigmas)
        if float(sigmas[0]) > float(schedule_sigmas(sched)[-1]) * (1 + ROUNDING):
            raise ValueError(f"sigmas[0] must be at most sigma_(T-1) = {float(schedule_sigmas(sched)[-1]):.6g}, "
                             f"the schedule's largest level, got {float(sigmas[0]):.6g}")
    dtype = dtype or (x_T.dtype if x_T is not None else torch.float32)
    x = x_T.to(device, dtype) if x_T is not None else torch.randn(
        tuple(shape), generator=generator, device=generator.device if generator is not None else device,
        dtype=dtype).to(device)
    denoiser = EpsDenoiser(checked, sched, y=y, guidance_scale=guidance_scale)
    x = SOLVERS[solver](denoiser, math.sqrt(1 + float(sigmas[0]) ** 2) * x, sigmas, callback=callback)
    checked.check_finite()
    return x


# ------------------------------------------------------------------------------------------ argument checks
def _check_sigmas(sigmas) -> torch.Tensor:
    if isinstance(sigmas, (list, tuple)):
        sigmas = torch.tensor([float(s) for s in sigmas], dtype=torch.float64)
    check_tensor(sigmas, "sigmas")
    if sigmas.ndim != 1 or len(sigmas) < 2:
        raise ValueError(f"sigmas must be a 1-D list of at least 2 values, got shape {tuple(sigmas.shape)}")
    sigmas = sigmas.double().cpu()
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"sigmas must decrease strictly, got {sigmas.tolist()}")
    if float(sigmas[-1]) < 0 or float(sigmas[-2]) <= 0:
        raise ValueError(f"sigmas must be positive, except the last, which may be 0; got {sigmas.tolist()}")
    return sigmas


def _check_solver(denoiser, x, sigmas, callback) -> torch.Tensor:
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma) -> x0_hat, got {type(denoiser).__name__}")
    check_tensor(x, "x")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable as callback(i, sigma, x, x0_hat) or None, got "
                        f"{type(callback).__name__}")
    return _check_sigmas(sigmas)
