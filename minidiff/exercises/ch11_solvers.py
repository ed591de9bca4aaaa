"""Chapter 11, fast solvers: the checkers of EDM's sigma schedule and of one Heun step.

Introduced in chapter 11.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._harness import CheckResult

CASES = ((10, 0.002, 80.0, 7.0), (4, 0.01, 157.4, 7.0), (7, 0.5, 3.0, 1.0), (25, 0.1, 10.0, 3.0), (1, 0.2, 5.0, 7.0))


def _karras(steps, sigma_min, sigma_max, rho):
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    a_max, a_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(a_max + ramp * (a_min - a_max)) ** rho, torch.zeros(1, dtype=torch.float64)])


def _karras_mistakes(steps, sigma_min, sigma_max, rho):
    right = _karras(steps, sigma_min, sigma_max, rho)
    ramp_s = torch.arange(steps, dtype=torch.float64) / steps
    a_max, a_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [
        ("the list must end with sigma = 0 after the S sigmas from sigma_max to sigma_min (S + 1 values)", right[:-1]),
        ("the sigmas must decrease: start at sigma_max and end at sigma_min, then 0",
         torch.cat([right[:-1].flip(0), right[-1:]])),
        ("interpolate sigma^(1/rho), not sigma^rho, and raise the result to the power rho",
         torch.cat([(sigma_max**rho + torch.linspace(0, 1, steps, dtype=torch.float64) * (sigma_min**rho - sigma_max**rho))
                    .clamp(min=0) ** (1 / rho), right[-1:]]) if steps > 1 else None),
        ("the ramp is i / (S - 1), so that the last of the S sigmas is sigma_min; you used i / S",
         torch.cat([(a_max + ramp_s * (a_min - a_max)) ** rho, right[-1:]])),
        ("you interpolated sigma itself, evenly spaced: that is rho = 1",
         _karras(steps, sigma_min, sigma_max, 1.0) if rho != 1.0 else None),
    ]


def check_karras_sigmas(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(steps, sigma_min, sigma_max, rho) -> sigmas``: EDM's schedule (Karras et al. 2022, eq. 5) of S
    decreasing sigmas from sigma_max to sigma_min, evenly spaced in sigma^(1/rho), followed by 0 — a 1-D tensor
    (or list) of S + 1 values. Introduced in chapter 11.
    """
    name = "check_karras_sigmas"
    for case in CASES:
        try:
            out = fn(*case)
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn{case} raised {type(e).__name__}: {e}")
        try:
            out = torch.as_tensor(out, dtype=torch.float64).flatten() if not torch.is_tensor(out) else \
                out.detach().double().flatten().cpu()
        except (TypeError, ValueError):
            return CheckResult(name, False, f"return a tensor or list of numbers, got {type(out).__name__}")
        right = _karras(*case)
        if out.shape == right.shape and torch.allclose(out, right, rtol=1e-5, atol=1e-12):
            continue
        for hint, wrong in _karras_mistakes(*case):
            if wrong is not None and out.shape == wrong.shape and torch.allclose(out, wrong, rtol=1e-5, atol=1e-12):
                return CheckResult(name, False, f"steps={case[0]}, sigma_min={case[1]}, sigma_max={case[2]}, "
                                                f"rho={case[3]}: {hint}")
        if out.shape != right.shape:
            return CheckResult(name, False, f"steps={case[0]}: expected {len(right)} values (S sigmas, then 0), "
                                            f"got {len(out)}")
        k = int((out - right).abs().argmax())
        return CheckResult(name, False, f"steps={case[0]}, sigma_min={case[1]}, sigma_max={case[2]}, rho={case[3]}: "
                                        f"entry {k} is {float(out[k]):.6g}, expected {float(right[k]):.6g}")
    return CheckResult(name, True, f"matches eq. 5 (and the final 0) on {len(CASES)} schedules")


# ------------------------------------------------------------------------------------------ one Heun step
def _heun(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * (d + d_next) / 2


def _heun_mistakes(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_euler = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return [("no denoiser call at sigma = 0 is possible, but the Euler step is still needed", x)]
    d_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
    return [
        ("that is Euler's step: add the correction with the slope at sigma_next, averaged with the first", x_euler),
        ("start the corrected step from x, not from Euler's prediction x_next", x_euler + (sigma_next - sigma) * (d + d_next) / 2),
        ("average the two slopes, (d + d_next) / 2, do not use d_next alone", x + (sigma_next - sigma) * d_next),
        ("the step is sigma_next - sigma (negative: towards the data), not sigma - sigma_next",
         x + (sigma - sigma_next) * (d + d_next) / 2),
    ]


def _denoiser(gen: torch.Generator):
    """A smooth nonlinear denoiser of 2-D points: x s^2 / (s^2 + sigma^2) plus a bounded bend, with random weights."""
    w = torch.randn(2, 2, generator=gen, dtype=torch.float64)

    def denoise(x, sigma):
        return x * 0.25 / (0.25 + sigma**2) + 0.3 * torch.tanh(x @ w) / (1 + sigma)
    return denoise


def check_heun_step(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(denoise, x, sigma, sigma_next) -> x_next``, one step of Heun's method on
    d x / d sigma = (x - denoise(x, sigma)) / sigma (Karras et al. 2022, Algorithm 1 without noise): an Euler step,
    then, unless sigma_next = 0, the average of the slopes at sigma and at Euler's prediction. ``denoise(x, sigma)``
    takes a float sigma; x is (B, 2) float64. Introduced in chapter 11.
    """
    name = "check_heun_step"
    gen = torch.Generator().manual_seed(seed)
    for sigma, sigma_next in ((10.0, 4.0), (1.0, 0.5), (0.3, 0.1), (0.5, 0.0)):
        denoise = _denoiser(gen)
        x = (1 + sigma) * torch.randn(16, 2, generator=gen, dtype=torch.float64)
        try:
            out = fn(denoise, x.clone(), sigma, sigma_next)
        except ZeroDivisionError:
            return CheckResult(name, False, f"sigma_next = {sigma_next}: the last step, to sigma = 0, is an Euler step "
                                            "(the correction would divide by sigma_next = 0)")
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn raised {type(e).__name__}: {e}")
        if not torch.is_tensor(out) or out.shape != x.shape:
            return CheckResult(name, False, f"return x_next, a tensor of x's shape {tuple(x.shape)}, got "
                                            f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}")
        out = out.double()
        if not bool(torch.isfinite(out).all()):
            return CheckResult(name, False, f"sigma_next = {sigma_next}: the result is not finite; at sigma_next = 0 "
                                            "skip the correction (Euler's step only)")
        right = _heun(denoise, x, sigma, sigma_next)
        tol = 1e-10 * (1 + float(right.abs().max()))
        if float((out - right).abs().max()) < tol:
            continue
        for hint, wrong in _heun_mistakes(denoise, x, sigma, sigma_next):
            if float((out - wrong).abs().max()) < tol:
                return CheckResult(name, False, f"sigma {sigma} -> {sigma_next}: {hint}")
        err = float((out - right).abs().max())
        return CheckResult(name, False, f"sigma {sigma} -> {sigma_next}: off by up to {err:.3g} "
                                        f"(largest value {float(right.abs().max()):.3g})")
    return CheckResult(name, True, "matches Heun's step on 4 steps, the last one to sigma = 0")

