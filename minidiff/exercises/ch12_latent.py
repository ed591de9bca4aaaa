"""Chapter 12, latent diffusion: the checkers of the autoencoder's KL term and of the latent scale.

Introduced in chapter 12.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._harness import CheckResult


# ------------------------------------------------------------------------------------------ the KL term
def _kl(mean, logvar):
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def _kl_mistakes(mean, logvar):
    return [
        ("the factor 1/2 is missing: KL = (mean^2 + var - 1 - log var) / 2", 2 * _kl(mean, logvar)),
        ("that used the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs",
         0.5 * (mean.square() + (0.5 * logvar).exp() - 1.0 - logvar)),
        ("the log-variance enters with a minus sign: ... - 1 - logvar", 0.5 * (mean.square() + logvar.exp() - 1.0 + logvar)),
        ("the -1 is missing: without it a posterior equal to N(0, 1) would have KL 1/2, not 0",
         0.5 * (mean.square() + logvar.exp() - logvar)),
        ("the mean enters squared: mean^2, not mean", 0.5 * (mean + logvar.exp() - 1.0 - logvar)),
        ("that is KL(N(0, 1) || N(mean, var)), the other direction; the loss uses KL(q(z|x) || N(0, 1))",
         0.5 * ((1 + mean.square()) / logvar.exp() - 1.0 + logvar)),
    ]


def check_kl_term(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(mean, logvar) -> kl``: KL(N(mean, exp(logvar)) || N(0, 1)) for each latent entry,
    (mean^2 + exp(logvar) - 1 - logvar) / 2, a tensor of mean's shape (Kingma & Welling 2014, appendix B).
    Introduced in chapter 12.
    """
    name = "check_kl_term"
    gen = torch.Generator().manual_seed(seed)
    for shape, dtype in (((16, 4, 7, 7), torch.float64), ((5, 3), torch.float32)):
        mean = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        logvar = (1.5 * torch.randn(shape, generator=gen, dtype=torch.float64)).to(dtype)
        try:
            out = fn(mean.clone(), logvar.clone())
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn raised {type(e).__name__}: {e}")
        if not torch.is_tensor(out):
            return CheckResult(name, False, f"return a tensor, got {type(out).__name__}")
        if out.shape != mean.shape:
            return CheckResult(name, False, f"return the KL of each entry, a tensor of mean's shape {tuple(shape)}; got "
                                            f"{tuple(out.shape)} (the loss averages it afterwards)")
        if out.dtype != dtype:
            return CheckResult(name, False, f"keep the inputs' dtype {dtype}, got {out.dtype}")
        right = _kl(mean.double(), logvar.double())
        got = out.double()
        tol = (1e-10 if dtype == torch.float64 else 1e-5) * (1 + right.abs())
        if bool(((got - right).abs() <= tol).all()):
            continue
        if not bool(torch.isfinite(got).all()):
            return CheckResult(name, False, "the result is not finite where logvar < 0: the variance is exp(logvar), "
                                            "not logvar itself (log of a negative number)")
        for hint, wrong in _kl_mistakes(mean.double(), logvar.double()):
            if bool(((got - wrong).abs() <= tol).all()):
                return CheckResult(name, False, hint)
        k = int((got - right).abs().argmax())
        return CheckResult(name, False, f"entry {k} (mean {float(mean.flatten()[k]):.4g}, logvar "
                                        f"{float(logvar.flatten()[k]):.4g}) is {float(got.flatten()[k]):.6g}, "
                                        f"expected {float(right.flatten()[k]):.6g}")
    return CheckResult(name, True, "matches (mean^2 + exp(logvar) - 1 - logvar) / 2 in float64 and float32")


# ------------------------------------------------------------------------------------------ the latent scale
def _latents(gen: torch.Generator) -> torch.Tensor:
    """Latents (N, 4, 7, 7) whose channels differ in mean and spread, as an encoder's do."""
    means = torch.tensor([0.6, -0.3, 0.1, 0.9], dtype=torch.float64).view(1, 4, 1, 1)
    stds = torch.tensor([0.5, 1.2, 0.8, 0.3], dtype=torch.float64).view(1, 4, 1, 1)
    return means + stds * torch.randn(256, 4, 7, 7, generator=gen, dtype=torch.float64)


def _scale_mistakes(z: torch.Tensor):
    return [
        ("that is the standard deviation itself; the scale is its inverse, 1 / std, so that scale * z has std 1",
         float(z.std())),
        ("that is 1 / variance; the scale is 1 / std", float(1 / z.var())),
        ("that is 1 / root mean square, which leaves the mean in; Stable Diffusion's factor is 1 / std",
         float(1 / z.square().mean().sqrt())),
        ("that is 1 / mean |z|; the scale is 1 / std", float(1 / z.abs().mean())),
    ]


def check_latent_scale(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(latents) -> scale``: one number, 1 / std of the latents (N, c, h, w) over all their entries, the
    factor that gives the diffusion model latents of unit variance (Rombach et al. 2022, sec. G; Stable Diffusion's
    0.18215). Introduced in chapter 12.
    """
    name = "check_latent_scale"
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.float64, torch.float32):
        z = _latents(gen)
        try:
            out = fn(z.to(dtype).clone())
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn raised {type(e).__name__}: {e}")
        if torch.is_tensor(out) and out.numel() > 1:
            return CheckResult(name, False, f"return one number for all the latents (over all their entries), not one "
                                            f"per channel or entry: got a tensor of shape {tuple(out.shape)}")
        try:
            got = float(out)
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return a number, got {type(out).__name__}")
        right = float(1 / z.std())
        if abs(got - right) <= 1e-4 * right:                     # float32, and n or n - 1 in the std
            continue
        for hint, wrong in _scale_mistakes(z):
            if abs(got - wrong) <= 1e-4 * abs(wrong):
                return CheckResult(name, False, hint)
        per_channel = 1 / z.transpose(0, 1).flatten(1).std(1)
        if bool(((per_channel - got).abs() <= 1e-4 * per_channel).any()) or abs(got - float(per_channel.mean())) < 1e-4:
            return CheckResult(name, False, "one number over all the entries of all the channels: that is one "
                                            "channel's 1 / std (or their average)")
        return CheckResult(name, False, f"got {got:.6g}, expected 1 / std = {right:.6g} (std of all entries "
                                        f"{float(z.std()):.4g})")
    return CheckResult(name, True, "matches 1 / std over all entries on latents with uneven channels")
