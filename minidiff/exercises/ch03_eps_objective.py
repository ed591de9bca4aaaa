"""Chapter 3, the epsilon objective: the checker of L_simple, the loss of one batch.

Introduced in chapter 3.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..losses import eps_loss
from ._harness import CheckResult, at_t, call_reader, close, random_batch, random_check, short_schedules


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
    all dimensions of (eps - model(x_t, t))^2.

    Introduced in chapter 3.
    """
    name = "check_eps_loss"
    gen = torch.Generator().manual_seed(seed)
    for sched in short_schedules():
        x0, noise, t = random_batch(sched.T, gen)
        probe = _ProbeModel(sched.T)
        expected = eps_loss(probe, x0, sched, t=t, noise=noise)
        model = _ProbeModel(sched.T)
        hint = random_check(fn, (model, x0.clone(), sched, t.clone(), noise.clone()),
                            (model, x0.clone(), sched, t.clone(), noise.clone()))
        if hint is None:
            model.calls.clear()
            out, hint = call_reader(fn, model, x0.clone(), sched, t.clone(), noise.clone())
        if hint is None:
            if not isinstance(out, torch.Tensor):
                hint = f"return the loss as a torch.Tensor, got {type(out).__name__}"
            elif out.numel() != 1:
                hint = (f"return one number (a 0-d tensor), got shape {tuple(out.shape)}: take the mean over the "
                        "batch and every dimension")
        if hint is None:
            out = out.reshape(()).to(torch.float64)
            if not close(out, expected.to(torch.float64)):
                hint = (_model_input_hint(model, probe, x0, noise, t, sched)
                        or _loss_hint(out, expected.to(torch.float64), probe, x0, noise, t))
        if hint is not None:
            return CheckResult(name, False, hint)
    return CheckResult(name, True, "matches minidiff.eps_loss on 2 schedules x 12 samples")


def _model_input_hint(model: _ProbeModel, probe: _ProbeModel, x0, noise, t, sched) -> str | None:
    """A hint if the reader fed the model other inputs than the package did (the ``probe``), else None."""
    if not model.calls:
        return None
    x_in, t_in = model.calls[-1]
    x_ref, t_ref = probe.calls[-1]
    if x_in.shape == x_ref.shape and not close(x_in.to(x_ref.dtype), x_ref):
        if close(x_in.to(x0.dtype), x0):
            return "the model must see the noisy x_t, not the clean x_0"
        a = at_t(sched.alpha_bars, t, x0)
        if close(x_in.to(x0.dtype), a * x0 + (1 - a).sqrt() * noise):
            return "the noisy input is wrong: you used alpha_bar where sqrt(alpha_bar) belongs in x_t"
        if close(x_in.to(x0.dtype), a.sqrt() * x0 + (1 - a) * noise):
            return "the noisy input is wrong: the noise is scaled by sqrt(1 - alpha_bar_t), not 1 - alpha_bar_t"
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


def _loss_hint(out, expected, probe: _ProbeModel, x0, noise, t) -> str:
    """For a model fed the right inputs: which wrong loss of its prediction the reader's ``out`` equals."""
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
        ("you summed the squared errors; L_simple here is their mean over the batch and all dimensions",
         (err**2).sum()),
        (f"you summed over each sample's {D} dimensions and averaged over the batch; minidiff.eps_loss averages "
         "over the dimensions too (the two differ by a constant factor)", (err**2).reshape(len(x0), -1).sum(1).mean()),
    ]
    for hint, value in variants:
        if close(out, value.to(out.dtype)):
            return hint
    return f"the loss is {float(out):.6g}, but minidiff.eps_loss gives {float(expected):.6g} on the same inputs"
