"""Floating-point tolerances that follow from the arithmetic, not from one machine's result.

eps is the gap between 1.0 and the next float (float32 1.19e-7, float64 2.22e-16); one correctly rounded
operation is off by at most eps/2 relative. A sum of n terms (a dot product, a GEMM or convolution entry, a
reduction) is within n * eps * sum|terms| of the exact sum in any order, typically sqrt(n) * eps * sum|terms|.
Two correct implementations that order it differently (GEMM blocking that depends on the batch size, the SIMD
width, the thread split: AMD and Intel CPUs differ) can differ by that much, so such tolerances are relative to
the scale of the terms, never a bare number seen on one machine.
"""
import torch

F32_EPS = torch.finfo(torch.float32).eps          # 1.19e-07
F64_EPS = torch.finfo(torch.float64).eps          # 2.22e-16

# A schedule's betas rounded to float32, as diffusers builds its tables (from a float32 linspace, whose last bits
# depend on the CPU's SIMD path, from Python floats, through a float32 sigmoid): a handful of ulps, ~16 eps32.
F32_BETA_RTOL = 2e-6


def sum_error(n: int, magnitude: float, eps: float = F32_EPS) -> float:
    """Worst-case error of an n-term sum whose terms' magnitudes add up to at most ``magnitude``: n eps magnitude."""
    return n * eps * magnitude


def cumprod_rel_error(betas: torch.Tensor, beta_err, eps: float = F32_EPS) -> torch.Tensor:
    """Bound on the relative error of a float32 table alpha_bar_t = prod_{k <= t} (1 - beta_k), per index t.

    Each factor 1 - beta_k is rounded (at most eps relative, which also covers a float32 product) and carries its
    beta's error ``beta_err`` (a tensor like ``betas`` or a number) divided by alpha_k; the output is rounded once
    more. ``betas`` are the exact (float64) values. An alpha_k of 0 makes the bound infinite (or NaN) from there on.
    """
    alphas = 1.0 - betas.double()
    return torch.cumsum(eps + beta_err / alphas, dim=0) + eps


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound, what: str = "") -> None:
    """Assert |actual - expected| <= bound elementwise (``bound`` broadcasts); name the worst entry if not."""
    err = (actual.double() - expected.double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64).expand_as(err)
    bad = ~(err <= bound)                                                    # a NaN counts as a failure
    if bool(bad.any()):
        ratio = torch.where(bad, (err / bound).nan_to_num(nan=float("inf")), torch.zeros_like(err))
        i = int(ratio.flatten().argmax())
        e, b = float(err.flatten()[i]), float(bound.flatten()[i])
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.numel()} entries exceed their bound; the worst, "
                             f"at flat index {i}: |difference| {e:.3g} > {b:.3g}")
