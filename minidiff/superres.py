"""Super-resolution with diffusion: ILVR with an unconditional model, and an SR3-style conditional model.

Given a low-resolution image ``lowres`` (B, C, H/f, W/f), find plausible high-resolution images x (B, C, H, W)
whose downsampled version is ``lowres``. Two ways, both ending in the samplers of chapter 6:

* :func:`ilvr` (Choi et al. 2021, "ILVR: Conditioning Method for Denoising Diffusion Probabilistic Models"),
  training-free: run an ordinary model and, after every reverse step t -> t', replace the low frequencies of
  the state by those of the noised low-resolution image::

      x_{t'} = x'_{t'} - phi(x'_{t'}) + phi(y_{t'}),     y_{t'} ~ q(y_{t'} | y),
      phi = upsample . downsample

  It is the sibling of RePaint's replacement (chapter 8's inpainting): there a mask picks the known pixels,
  here the low-pass filter phi picks the known frequencies. With area downsampling and nearest upsampling phi
  is an orthogonal projection, phi(phi(x)) = phi(x), and ``y`` enters only through phi(y) = up(lowres), so the
  low-resolution image is all that is needed. At the last step y_0 = y and downsample(x_0) = lowres exactly.
* SR3 (Saharia et al. 2021, "Image Super-Resolution via Iterative Refinement"): train a noise predictor that
  sees the (bicubic) upsampled low-resolution image as extra input channels,
  eps_hat = net(concat(x_t, up(lowres)), t). :class:`LowResConditioned` binds ``lowres`` to such a network so
  that it is called like any model, ``model(x_t, t, y=None)``; :func:`sr3_sample` samples it with DDIM.
  ``python -m minidiff train --superres 4`` trains one (see ``checkpoints/README.md``).

Introduced in chapter 8.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_choice, check_int, check_real, check_sampling, check_tensor, check_ddim_plan, \
    noise_like
from .forward import add_noise
from .guidance import guided_eps
from .samplers import ddim_plan, ddim_sample, ddim_timesteps, ddim_update
from .schedules import NoiseSchedule

UPSAMPLING = ("nearest", "bilinear", "bicubic")


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average over ``factor`` x ``factor`` blocks: (B, C, H, W) -> (B, C, H / factor, W / factor).

    Introduced in chapter 8.
    """
    _check_images(x, "x", factor)
    return F.avg_pool2d(x, factor)                                              # (B, C, H/f, W/f)


def upsample(x: torch.Tensor, factor: int, mode: str = "nearest") -> torch.Tensor:
    """Interpolate (B, C, h, w) -> (B, C, h * factor, w * factor): ``"nearest"`` repeats each pixel,
    ``"bilinear"`` and ``"bicubic"`` interpolate between pixel centres (``align_corners=False``, as PIL does).
    Bicubic interpolation can overshoot the input's range slightly; nothing is clipped.

    Introduced in chapter 8.
    """
    _check_images(x, "x", 1)
    check_int(factor, "factor", low=1)
    check_choice(mode, "mode", UPSAMPLING)
    extra = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, scale_factor=factor, mode=mode, **extra)             # (B, C, h*f, w*f)


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """ILVR's filter phi(x) = upsample(downsample(x)): each ``factor`` x ``factor`` block replaced by its mean.
    A projection: phi(phi(x)) = phi(x), and downsample(phi(x)) = downsample(x).

    Introduced in chapter 8.
    """
    return upsample(downsample(x, factor), factor, "nearest")                  # (B, C, H, W)


@torch.no_grad()
def ilvr(model, lowres: torch.Tensor, sched: NoiseSchedule, *, factor: int, steps: int = 100, eta: float = 1.0,
         spacing: str = "trailing", y: torch.Tensor | None = None, guidance_scale: float = 1.0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Super-resolve ``lowres`` with an unconditional (or class-conditional) model by ILVR (Choi et al. 2021).

    Each of the ``steps`` reverse steps t -> t' (the timesteps of :func:`minidiff.ddim_timesteps`) is:

    1. a DDIM step (eq. 12) with noise level ``eta`` (1 is DDPM-like, as in ILVR): x'_{t'};
    2. the reference at that noise level: y_{t'} = sqrt(a_{t'}) up(lowres) + sqrt(1 - a_{t'}) eps (the
       low-resolution image itself at the last step);
    3. x_{t'} = x'_{t'} - phi(x'_{t'}) + phi(y_{t'})  (ILVR eq. 8, with phi = :func:`low_pass`).

    Args:
        model: ``model(x_t, t, y) -> eps_hat`` for (B, C, H, W) images.
        lowres: (B, C, H / factor, W / factor) low-resolution images in the data range.
        sched: the noise schedule the model was trained with.
        factor: the upscaling factor (ILVR's N).
        steps: reverse steps (model calls), as in :func:`minidiff.ddim_sample`.
        eta: the DDIM noise level of step 1.
        spacing: which timesteps (see :func:`minidiff.ddim_timesteps`).
        y: optional (B,) class labels, for a conditional model.
        guidance_scale: the guidance scale, as in the samplers.
        generator: the source of every noise draw.

    Returns:
        (B, C, H, W) images x_0 with ``downsample(x_0, factor) == lowres`` up to rounding.

    Introduced in chapter 8.
    """
    model, y, guidance_scale, eta = _check_ilvr(model, lowres, sched, factor, steps, eta, spacing, y,
                                                guidance_scale)
    ref = upsample(lowres, factor, "nearest")                                  # phi(y) = up(lowres): (B, C, H, W)
    x = noise_like(ref, generator)                                             # x_T ~ N(0, I)
    plan = ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta)
    x = ilvr_loop(model, x, ref, sched, plan, factor=factor, y=y, guidance_scale=guidance_scale,
                  generator=generator)
    model.check_finite()                      # once, after the loop: a NaN/inf prediction names its step
    return x


@torch.no_grad()
def ilvr_loop(model, x: torch.Tensor, ref: torch.Tensor, sched: NoiseSchedule, plan: list[tuple], *, factor: int,
              y: torch.Tensor | None = None, guidance_scale: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """ILVR from x = x_T over the DDIM steps of ``plan``, steps 1-3 of :func:`ilvr`.

    ``x`` is (B, C, H, W) noise, ``ref`` = up(lowres) the nearest-upsampled low-resolution images (B, C, H, W);
    ``plan`` is :func:`minidiff.samplers.ddim_plan`'s; the other arguments are :func:`ilvr`'s, which checks them
    all. Returns x_0.

    Introduced in chapter 8.
    """
    B = x.shape[0]
    for t, t_prev, a, a_prev, sigma in plan:
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)                    # (B,)
        eps = guided_eps(model, x, t_batch, y, guidance_scale)
        noise = noise_like(x, generator) if sigma > 0 else None
        x_prev, _ = ddim_update(x, eps, a, a_prev, sigma=sigma, noise=noise)                # 1. DDIM eq. (12)
        if t_prev >= 0:                                                                     # 2. y_{t'} ~ q(. | y)
            t_prev_batch = torch.full((B,), t_prev, dtype=torch.long, device=x.device)
            ref_t = add_noise(ref, t_prev_batch, sched, noise_like(ref, generator))
        else:
            ref_t = ref                                                                     #    y_0 = y itself
        x = x_prev - low_pass(x_prev, factor) + low_pass(ref_t, factor)                    # 3. ILVR eq. (8)
    return x


class LowResConditioned(nn.Module):
    """An SR3 network with its low-resolution input bound: called like any model, ``model(x_t, t, y=None)``.

    ``net`` takes 2C input channels, (x_t, up(lowres)), and predicts the C-channel noise (SR3's design, with the
    bicubic upsampling SR3 uses). The samplers and the loss of chapter 3 take it unchanged.

    Args:
        net: ``net(x, t, y) -> eps_hat`` with ``x`` (B, 2C, H, W) and output (B, C, H, W), e.g. a
            :class:`minidiff.UNet` with ``in_channels = 2C, out_channels = C``.
        lowres: (B, C, H / factor, W / factor) low-resolution images.
        factor: the upscaling factor.
        mode: how ``lowres`` is upsampled before it is concatenated (default ``"bicubic"``, as SR3).

    Introduced in chapter 8.
    """

    def __init__(self, net: nn.Module, lowres: torch.Tensor, factor: int, mode: str = "bicubic"):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable as net(x, t, y) -> eps, got {type(net).__name__}")
        self.net = net
        self.num_classes = getattr(net, "num_classes", None)
        self.register_buffer("cond", upsample(lowres, factor, mode), persistent=False)   # (B, C, H, W)

    def forward(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        if x_t.shape[0] != self.cond.shape[0] or x_t.shape[2:] != self.cond.shape[2:]:
            raise ValueError(f"x_t must have the batch size and image size of the bound low-resolution images, "
                             f"{self.cond.shape[0]} x {tuple(self.cond.shape[2:])}; got {tuple(x_t.shape)}")
        cond = self.cond.to(dtype=x_t.dtype)
        return self.net(torch.cat([x_t, cond], dim=1), t, y)                    # (B, 2C, H, W) -> (B, C, H, W)


@torch.no_grad()
def sr3_sample(net: nn.Module, lowres: torch.Tensor, sched: NoiseSchedule, *, factor: int, steps: int = 50,
               eta: float = 0.0, mode: str = "bicubic", generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample an SR3 network for ``lowres`` (B, C, h, w): DDIM on :class:`LowResConditioned`.

    Returns (B, C, h * factor, w * factor) images. Introduced in chapter 8.
    """
    _check_images(lowres, "lowres", 1)
    check_int(factor, "factor", low=1)
    B, C, h, w = lowres.shape
    model = LowResConditioned(net, lowres, factor, mode)
    return ddim_sample(model, (B, C, h * factor, w * factor), sched, steps=steps, eta=eta, generator=generator,
                       device=lowres.device)


# ------------------------------------------------------------------------------------------ argument checks
def _check_images(x, name: str, factor) -> torch.Tensor:
    check_tensor(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be a batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    factor = check_int(factor, "factor", low=1)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(f"factor={factor} must divide the image size {tuple(x.shape[2:])} of {name}")
    return x


def _check_ilvr(model, lowres, sched, factor, steps, eta, spacing, y, guidance_scale) -> tuple:
    """Returns the output-checked model, the labels, the scale and eta."""
    _check_images(lowres, "lowres", 1)
    check_int(factor, "factor", low=1)
    eta = check_real(eta, "eta", low=0.0)
    check_int(steps, "steps", low=1, high=sched.T if isinstance(sched, NoiseSchedule) else None)
    B, C, h, w = lowres.shape
    model, y, guidance_scale, _ = check_sampling(model, (B, C, h * factor, w * factor), sched, y=y,
                                                 guidance_scale=guidance_scale, device=lowres.device,
                                                 dtype=lowres.dtype)
    check_ddim_plan(ddim_plan(sched, ddim_timesteps(sched.T, steps, spacing), eta), eta)
    return model, y, guidance_scale, eta
