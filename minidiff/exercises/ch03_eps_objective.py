"""Chapter 3, the epsilon objective: the checker of L_simple, the loss of one batch.

Introduced in chapter 3.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..losses import eps_loss
from ._harness import (CheckResult, at_t, call_reader, close, conditioning, dtype_hint, input_cases, near,
                       random_batch, random_check, reader_args, shape_hint, short_schedules, tolerance)


class _ProbeModel:
    """A fixed, deterministic stand-in for a network: depends on x_t and on t, and records the calls."""

    def __init__(self, T: int):
        self.T = T
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x, t, y=None):
        self.calls.append((x.detach().clone(), torch.as_tensor(t).detach().clone()))
        tt = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))     # (B, 1, ...)
        return 0.6 * x - 0.3 * torch.tanh(x) + 0.5 * tt / self.T


def check_eps_loss(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(model, x0, sched, t, noise) -> loss``, the scalar L_simple of one batch.

    The reference is ``minidiff.eps_loss(model, x0, sched, t=t, noise=noise)``: the mean over the batch and
    all dimensions of (eps - model(x_t, t))^2. Run on batches (B, D), (B, 3, 2) and image batches (B, C, H, W),
    in float64 and float32: the model's input x_t must have x0's shape and dtype, and so must the loss its dtype.

    Introduced in chapter 3.
    """
    name = "check_eps_loss"
    gen = torch.Generator().manual_seed(seed)
    for sched in short_schedules():
        for tail, dtype in input_cases():
            x0, noise, t = random_batch(sched.T, gen, tail=tail, dtype=dtype)     # float64, exact in dtype
            probe = _ProbeModel(sched.T)
            expected = eps_loss(probe, x0, sched, t=t, noise=noise)               # float64
            model = _ProbeModel(sched.T)
            hint = random_check(fn, (model, *reader_args(dtype, x0, sched, t, noise)),
                                (model, *reader_args(dtype, x0, sched, t, noise)))
            if hint is None:
                model.calls.clear()
                out, hint = call_reader(fn, model, *reader_args(dtype, x0, sched, t, noise))
            if hint is None:
                if not isinstance(out, torch.Tensor):
                    hint = f"return the loss as a torch.Tensor, got {type(out).__name__}"
                elif out.numel() != 1:
                    hint = (f"return one number (a 0-d tensor), got shape {tuple(out.shape)}: take the mean over "
                            "the batch and every dimension")
            if hint is None and model.calls:
                x_in = model.calls[-1][0]
                if x_in.shape != x0.shape:
                    hint = shape_hint(x_in.shape, x0, "the model's input x_t", per_sample=True)
                elif x_in.dtype != dtype:
                    hint = dtype_hint(x_in.dtype, dtype, "the model's input x_t")
            if hint is None and out.dtype != dtype:
                hint = dtype_hint(out.dtype, dtype, "the loss")
            if hint is None:
                out = out.reshape(())
                if not close(out, expected, n_terms=x0.numel(), cond=conditioning(sched, t)):
                    hint = (_model_input_hint(model, probe, x0, noise, t, sched)
                            or _loss_hint(out, expected, probe, x0, noise, t, sched)
                            or _elbo_hint(fn, out, x0, noise, sched, dtype)
                            or f"the loss is {float(out):.6g}, but minidiff.eps_loss gives {float(expected):.6g} "
                               "on the same inputs")
            if hint is not None:
                return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches minidiff.eps_loss on 2 schedules x 12 samples")


def _model_input_hint(model: _ProbeModel, probe: _ProbeModel, x0, noise, t, sched) -> str | None:
    """A hint if the reader fed the model other inputs than the package did (the ``probe``), else None."""
    if not model.calls:
        return None
    x_in, t_in = model.calls[-1]
    cond = conditioning(sched, t)
    x_ref, t_ref = probe.calls[-1]
    if x_in.shape == x_ref.shape and not close(x_in, x_ref, cond=cond):
        if close(x_in, x0, cond=cond):
            return "the model must see the noisy x_t, not the clean x_0"
        a = at_t(sched.alpha_bars, t, x0)
        if close(x_in, a * x0 + (1 - a).sqrt() * noise, cond=cond):
            return "the noisy input is wrong: you used alpha_bar where sqrt(alpha_bar) belongs in x_t"
        if close(x_in, a.sqrt() * x0 + (1 - a) * noise, cond=cond):
            return "the noisy input is wrong: the noise is scaled by sqrt(1 - alpha_bar_t), not 1 - alpha_bar_t"
        if close(x_in, a.sqrt() * x0 - (1 - a).sqrt() * noise, cond=cond):
            return ("the noisy input subtracts the noise: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. "
                    "With -eps in x_t, the target eps is minus the noise the model sees")
        return ("the model's input x_t is not sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; "
                "check it against minidiff.q_sample(x0, t, sched, noise=noise)")
    if t_in.shape == t_ref.shape and not torch.equal(t_in.to(t_ref.dtype), t_ref):
        diff = (t_in.to(torch.float64) - t_ref.to(torch.float64)).unique()
        if diff.numel() == 1 and float(diff) == 1:
            return "you passed t + 1 (the paper's step) to the model; models take the 0-based index t"
        if diff.numel() == 1 and float(diff) == -1:
            return "you passed t - 1 to the model; models take the same 0-based index t used for x_t"
        return "the model was called with different timesteps than the t passed in"
    return None


def _loss_hint(out, expected, probe: _ProbeModel, x0, noise, t, sched) -> str | None:
    """For a model fed the right inputs: which wrong loss of its prediction the reader's ``out`` equals, or None."""
    eps_hat = probe(probe.calls[-1][0], t)
    x_t = probe.calls[-1][0]
    err = eps_hat - noise
    D = x0[0].numel()
    variants = [
        ("you compared the prediction with x_0; in L_simple the target is the noise eps",
         ((eps_hat - x0) ** 2).mean()),
        ("you compared the prediction with x_t; in L_simple the target is the noise eps",
         ((eps_hat - x_t) ** 2).mean()),
        ("you used |eps - eps_hat| (an L1 loss); L_simple is the mean squared error", err.abs().mean()),
        ("you took a square root (an RMS error); L_simple is the mean of the squared errors",
         (err**2).mean().sqrt()),
        ("you halved the mean squared error (0.5 * MSE, the Gaussian log-likelihood's form); L_simple is the "
         "plain mean of the squared errors, ((eps - eps_hat) ** 2).mean()", 0.5 * (err**2).mean()),
        ("you summed the squared errors; L_simple here is their mean over the batch and all dimensions",
         (err**2).sum()),
        (f"you summed over each sample's {D} dimensions and averaged over the batch; minidiff.eps_loss averages "
         "over the dimensions too (the two differ by a constant factor)", (err**2).reshape(len(x0), -1).sum(1).mean()),
    ]
    for hint, value in variants:
        if close(out, value, n_terms=x0.numel(), cond=conditioning(sched, t)):
            return hint
    return None


def _elbo_weights(sched, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ELBO's weights lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) at t (B,), float64, for
    sigma_t^2 = beta_tilde_t and for sigma_t^2 = beta_t."""
    b, al, ab = sched.betas[t], sched.alphas[t], sched.alpha_bars[t]
    return {name: b**2 / (2 * var * al * (1 - ab))
            for name, var in (("beta_tilde", sched.posterior_variance[t]), ("beta", b))}


def _elbo_hint(fn, out, x0, noise, sched, dtype) -> str | None:
    """A hint if the reader weighted the squared errors by the ELBO's lambda_t, else None.

    At t = 0 lambda_t is infinite for sigma^2 = beta_tilde (beta_tilde_0 = 0), or enormous where rounding leaves
    beta_tilde_0 a tiny positive number, so the loss on the checker's batch, which includes t = 0, says little.
    Run once more with one timestep, T // 2, for the whole batch: an ELBO-weighted loss is then lambda_{T//2}
    times L_simple (or D times that, summed over each sample's D dimensions).
    """
    t_mid = torch.full((x0.shape[0],), sched.T // 2, dtype=torch.long)
    probe, model = _ProbeModel(sched.T), _ProbeModel(sched.T)
    ref = float(eps_loss(probe, x0, sched, t=t_mid, noise=noise))
    mid, hint = call_reader(fn, model, *reader_args(dtype, x0, sched, t_mid, noise))
    if hint is not None or not isinstance(mid, torch.Tensor) or mid.numel() != 1 or ref == 0:
        return None
    ratio = float(mid) / ref
    D = x0[0].numel()
    for var, lam in _elbo_weights(sched, t_mid[:1]).items():
        for factor in (1, D):
            target = float(lam) * factor
            tol = 2 * tolerance(dtype, max(1.0, target), x0.numel(), conditioning(sched, t_mid))
            if near(ratio, target, tol):
                hint = ("you weighted each sample's squared error by the ELBO's lambda_t = beta_t^2 / (2 sigma_t^2 "
                        "alpha_t (1 - alpha_bar_t)); L_simple drops these weights (lambda_t = 1 for every t)")
                if var == "beta_tilde":
                    hint += (f". With sigma_t^2 = beta_tilde_t the weight at t = 0 is infinite (beta_tilde_0 = 0): "
                             f"your loss on a batch with t = 0 is {float(out):.3g}")
                return hint
    return None
