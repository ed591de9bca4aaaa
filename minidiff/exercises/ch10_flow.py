"""Chapter 10, flow matching: the checkers of the conversions from a velocity to x_0 and eps, and of the
conditional flow-matching loss.

Introduced in chapter 10.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._harness import (MISMATCH, CheckResult, as_tensor, call_reader, close, input_cases, match_mistake, randn,
                       random_check, reader_args)


def _times(gen: torch.Generator, B: int) -> torch.Tensor:
    """(B,) flow times in (0, 1), float64 values exact in float32, with one near each end."""
    t = torch.rand(B, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    t[0], t[1] = 0.015625, 0.984375
    return t.float().double()


def _column(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).view(-1, *[1] * (like.ndim - 1))


# ------------------------------------------------------------------------------------------ conversions
def check_flow_conversions(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x_t, v, t) -> (x0, eps)``: the clean data and the noise that a velocity v implies on the linear
    path x_t = (1 - t) x_0 + t eps, where v = eps - x_0::

        x0 = x_t - t v        eps = x_t + (1 - t) v

    ``t`` is a (B,) tensor of times in (0, 1), one per sample. Run on batches (B, D), (B, 3, 2) and image
    batches (B, C, H, W), in float64 and float32: both outputs keep x_t's shape and dtype. Introduced in
    chapter 10.
    """
    name = "check_flow_conversions"
    gen = torch.Generator().manual_seed(seed)
    for tail, dtype in input_cases():
        x0, eps = randn(gen, (12, *tail), dtype), randn(gen, (12, *tail), dtype)
        t = _times(gen, 12)
        tc = _column(t, x0)
        x_t, v = (1 - tc) * x0 + tc * eps, eps - x0                      # float64

        def fresh():
            return reader_args(dtype, x_t, v, t)

        args = fresh()
        hint = random_check(lambda *a: _first(fn(*a)), fresh(), fresh())
        if hint is None:
            out, hint = call_reader(fn, *args)
        if hint is None and (not isinstance(out, (tuple, list)) or len(out) != 2):
            hint = f"return the pair (x0, eps), got {type(out).__name__}"
        if hint is None:
            x0_out, hint = as_tensor(out[0], args[0], "x0", per_sample=True)
        if hint is None:
            eps_out, hint = as_tensor(out[1], args[0], "eps", per_sample=True)
        if hint is None and close(x0_out, eps, n_terms=4) and close(eps_out, x0, n_terms=4):
            hint = "you returned (eps, x0): return x0 first, then eps"
        if hint is None:
            hint = match_mistake(x0_out, x0, _x0_mistakes(x_t, v, tc))
            hint = None if hint is None else "x0: " + ("x0 differs from x_t - t v" if hint == MISMATCH else hint)
        if hint is None:
            hint = match_mistake(eps_out, eps, _eps_mistakes(x_t, v, tc))
            hint = None if hint is None else "eps: " + ("eps differs from x_t + (1 - t) v" if hint == MISMATCH
                                                        else hint)
        if hint is not None:
            return CheckResult(name, False, f"on a batch of shape {(12, *tail)} in {dtype}: {hint}")
    return CheckResult(name, True, "x0 and eps match x_t - t v and x_t + (1 - t) v on 8 input layouts and dtypes")


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) and out else out


def _x0_mistakes(x_t, v, t) -> list:
    return [
        ("the sign: x_t moves towards the noise as t grows, so going back to t = 0 subtracts t v: x0 = x_t - t v",
         lambda: x_t + t * v),
        ("you used 1 - t: the data is a time t away from x_t (it sits at t = 0), so x0 = x_t - t v",
         lambda: x_t - (1 - t) * v),
        ("you returned x_t - v, the step all the way from t = 1; from time t it is x0 = x_t - t v",
         lambda: x_t - v),
    ]


def _eps_mistakes(x_t, v, t) -> list:
    return [
        ("the sign: the noise sits at t = 1, ahead of x_t by 1 - t, so eps = x_t + (1 - t) v",
         lambda: x_t - (1 - t) * v),
        ("you used t: the noise is a time 1 - t away from x_t (it sits at t = 1), so eps = x_t + (1 - t) v",
         lambda: x_t + t * v),
        ("you returned x_t + v, the step from t = 0; from time t it is eps = x_t + (1 - t) v",
         lambda: x_t + v),
        ("eps - x0 = v, so eps = x0 + v = x_t + (1 - t) v; you wrote x0 - v", lambda: x_t - t * v - v),
    ]


# ------------------------------------------------------------------------------------------ the loss
class _LinearVelocity(torch.nn.Module):
    """A fixed model v = A x + b t + c, the same for every call: a reader's loss is compared on it."""

    def __init__(self, dim: int, gen: torch.Generator):
        super().__init__()
        self.A = torch.randn(dim, dim, generator=gen, dtype=torch.float64) * 0.3
        self.b = torch.randn(dim, generator=gen, dtype=torch.float64)
        self.c = torch.randn(dim, generator=gen, dtype=torch.float64) * 0.5

    def forward(self, x, t, y=None):
        if not torch.is_tensor(t) or t.shape != (x.shape[0],):
            raise ValueError(f"call the model as model(x_t, t) with t of shape ({x.shape[0]},), got "
                             f"{tuple(t.shape) if torch.is_tensor(t) else type(t).__name__}")
        flat = x.reshape(x.shape[0], -1)
        out = flat @ self.A.to(x.dtype).T + t.to(x.dtype)[:, None] * self.b.to(x.dtype) + self.c.to(x.dtype)
        return out.reshape(x.shape)


def check_flow_matching_loss(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(model, x0, t, noise) -> loss``, the conditional flow-matching loss of one batch::

        x_t  = (1 - t) x0 + t noise
        loss = mean over batch and dimensions of (model(x_t, t) - (noise - x0))^2

    ``t`` is a (B,) tensor of times in (0, 1); the model is called as ``model(x_t, t)``. The loss is a scalar
    tensor. Run on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32.
    Introduced in chapter 10.
    """
    name = "check_flow_matching_loss"
    gen = torch.Generator().manual_seed(seed)
    for tail, dtype in input_cases():
        x0, noise = randn(gen, (12, *tail), dtype), randn(gen, (12, *tail), dtype)
        t = _times(gen, 12)
        dim = x0[0].numel()
        model = _LinearVelocity(dim, gen)
        tc = _column(t, x0)
        ref = _loss(model, x0, t, (1 - tc) * x0 + tc * noise, noise - x0)

        def fresh():
            return (model, *reader_args(dtype, x0, t, noise))

        args = fresh()
        hint = random_check(fn, fresh(), fresh())
        if hint is None:
            out, hint = call_reader(fn, *args)
        if hint is None and not isinstance(out, torch.Tensor):
            hint = f"the loss should be a torch.Tensor, got {type(out).__name__}"
        if hint is None and out.numel() != 1:
            hint = (f"the loss should be one number (a 0-d tensor), got shape {tuple(out.shape)}: take the mean "
                    "over the batch and the dimensions")
        if hint is None:
            got = out.reshape(()).double()
            tol = (1e-11 if dtype == torch.float64 else 1e-5) * max(1.0, float(ref))
            if abs(float(got) - float(ref)) > tol:
                hint = _loss_hint(float(got), model, x0, t, noise, tol)
        if hint is not None:
            return CheckResult(name, False, f"on a batch of shape {(12, *tail)} in {dtype}: {hint}")
    return CheckResult(name, True, "matches the flow-matching loss on 8 input layouts and dtypes")


def _loss(model, x0, t, x_t, target):
    return (model(x_t, t) - target).pow(2).mean()


def _loss_hint(got: float, model, x0, t, noise, tol: float) -> str:
    tc = _column(t, x0)
    path, rev = (1 - tc) * x0 + tc * noise, tc * x0 + (1 - tc) * noise
    D = x0[0].numel()
    mistakes = [
        ("the target's sign: x_t moves from x0 (t = 0) to the noise (t = 1), so its velocity is noise - x0",
         lambda: _loss(model, x0, t, path, x0 - noise)),
        ("the path is reversed: x_t = (1 - t) x0 + t noise, the data at t = 0 and the noise at t = 1",
         lambda: _loss(model, x0, t, rev, noise - x0)),
        ("you regressed on the noise itself, the target of the eps-loss; the velocity target is noise - x0",
         lambda: _loss(model, x0, t, path, noise)),
        ("you regressed on x0; the velocity target is noise - x0", lambda: _loss(model, x0, t, path, x0)),
        ("you called the model at 1 - t: call it at the time t of x_t",
         lambda: _loss(model, x0, 1 - t, path, noise - x0)),
        ("you summed over the dimensions: take the mean over the dimensions and the batch",
         lambda: _loss(model, x0, t, path, noise - x0) * D),
        ("you summed over the batch: take the mean over the batch too",
         lambda: _loss(model, x0, t, path, noise - x0) * x0.shape[0]),
        ("you returned the root mean square: the loss is the mean of the squares, without the square root",
         lambda: _loss(model, x0, t, path, noise - x0).sqrt()),
    ]
    for hint, make in mistakes:
        if abs(got - float(make())) <= tol * max(1.0, abs(float(make()))):
            return hint
    ref = float(_loss(model, x0, t, path, noise - x0))
    return f"your loss is {got:.6g}, the flow-matching loss is {ref:.6g}"
