"""The exact denoiser of a finite data set — used by the tests, the chapters and the exercises.

For the empirical distribution p(x_0) = (1/N) sum_n delta(x_0 - p_n), the minimum-MSE noise prediction
E[eps | x_t] has a closed form. With x_t = sqrt(a) x_0 + sqrt(1 - a) eps (a = alpha_bar_t), Bayes' rule with
the Gaussian likelihood of x_t gives::

    w_n(x_t) = softmax_n( -||x_t - sqrt(a) p_n||^2 / (2 (1 - a)) )
    E[x_0 | x_t] = sum_n w_n p_n
    E[eps | x_t] = (x_t - sqrt(a) E[x_0 | x_t]) / sqrt(1 - a)

It is what a perfectly trained network would output on this data, so every sampler, schedule, eta, step
count and guidance scale can be run and tested without training (Karras et al. 2022 use the same idea).
Conditional: with ``labels``, ``y`` restricts the softmax to the points of that class; ``y = None`` or the
"no label" value ``num_classes`` uses all points.
"""
from __future__ import annotations

import torch

from ._validate import check_int, check_labels, check_tensor, check_timesteps
from .schedules import NoiseSchedule


class OracleDenoiser:
    """Callable like a model: ``oracle(x_t, t, y=None) -> eps_hat`` (exact E[eps | x_t (, y)]).

    Args:
        points: (N, ...) the data set; samples have shape (B, ...) with the same trailing dimensions.
        sched: the noise schedule the timesteps refer to.
        labels: optional (N,) integer class labels, for conditional prediction and guidance.
        num_classes: number of classes (default: ``labels.max() + 1``); ``y == num_classes`` means no label.

    Computed in float64 in log space (a stable softmax), returned in ``x_t``'s dtype.
    """

    def __init__(self, points: torch.Tensor, sched: NoiseSchedule, labels: torch.Tensor | None = None,
                 num_classes: int | None = None):
        labels, num_classes = _check_oracle(points, sched, labels, num_classes)
        self.points = points.detach().to(torch.float64)                   # (N, ...)
        self.sched, self.labels, self.num_classes = sched, labels, num_classes
        self._flat = self.points.reshape(points.shape[0], -1)              # (N, D)
        self._sq_norms = self._flat.pow(2).sum(dim=1)                      # (N,)

    def to(self, device) -> "OracleDenoiser":
        """Move the data set to ``device`` (calls on other devices move it on the fly)."""
        self.points, self._flat, self._sq_norms = (v.to(device) for v in (self.points, self._flat, self._sq_norms))
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    def posterior_weights(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """w_n(x_t) = p(x_0 = p_n | x_t (, y)), shape (B, N); rows sum to 1."""
        t, y = _check_call(self, x_t, t, y)
        return self._weights(x_t, t, y)

    def posterior_mean(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x_0 | x_t (, y)], shape and dtype like ``x_t``."""
        t, y = _check_call(self, x_t, t, y)
        return self._posterior_mean64(x_t, t, y).to(x_t.dtype)

    def __call__(self, x_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        t, y = _check_call(self, x_t, t, y)
        x0 = self._posterior_mean64(x_t, t, y)                              # (B, ...) float64
        a = self.sched.alpha_bars.to(x_t.device)[t].view(-1, *([1] * (x_t.ndim - 1)))   # (B, 1, ...)
        eps = (x_t.to(torch.float64) - a.sqrt() * x0) / (1.0 - a).sqrt()
        return eps.to(x_t.dtype)

    def _weights(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The softmax of the module docstring for a (B,) index tensor ``t``; (B, N) float64."""
        P, sq = self._flat.to(x_t.device), self._sq_norms.to(x_t.device)   # (N, D), (N,)
        x = x_t.reshape(x_t.shape[0], -1).to(torch.float64)                # (B, D)
        a = self.sched.alpha_bars.to(x.device)[t].unsqueeze(1)             # (B, 1)
        # -||x - sqrt(a) p||^2 / (2(1-a)) up to a per-row constant (||x||^2 drops out of the softmax).
        logits = (a.sqrt() * (x @ P.T) - 0.5 * a * sq) / (1.0 - a)         # (B, N)
        if y is not None:
            labels = self.labels.to(x.device)
            keep = (labels.unsqueeze(0) == y.unsqueeze(1)) | (y == self.num_classes).unsqueeze(1)   # (B, N)
            logits = logits.masked_fill(~keep, float("-inf"))
        return torch.softmax(logits, dim=1)

    def _posterior_mean64(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        w = self._weights(x_t, t, y)                                        # (B, N)
        return (w @ self._flat.to(w.device)).reshape(x_t.shape)             # (B, ...) float64


# ------------------------------------------------------------------------------------------ argument checks
def _check_oracle(points, sched, labels, num_classes) -> tuple[torch.Tensor | None, int | None]:
    """Returns the labels as an int64 tensor on the points' device (or None) and the number of classes."""
    check_tensor(points, "points")
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    if labels is None:
        if num_classes is not None:
            raise ValueError("num_classes was given without labels; pass labels (N,) too")
        return None, None
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be an integer tensor of shape (N,), got {type(labels).__name__}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 0
    num_classes = check_int(num_classes, "num_classes", low=1)
    labels = check_labels(labels, points.shape[0], num_classes, points.device, name="labels", allow_null=False)
    return labels, num_classes


def _check_call(oracle: OracleDenoiser, x_t: torch.Tensor, t, y) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns ``t`` as a (B,) int64 tensor and the labels on ``x_t``'s device (or None)."""
    check_tensor(x_t, "x_t")
    if tuple(x_t.shape[1:]) != tuple(oracle.points.shape[1:]):
        raise ValueError(f"x_t must have shape (B, {', '.join(map(str, oracle.points.shape[1:]))}) like the "
                         f"points, got {tuple(x_t.shape)}")
    B = x_t.shape[0]
    t = check_timesteps(t, oracle.sched.T, B, x_t.device)
    if y is not None and oracle.labels is None:
        raise ValueError("y was given but this OracleDenoiser has no labels; build it with labels=")
    y = check_labels(y, B, oracle.num_classes, x_t.device)
    if y is not None:
        known = torch.isin(y, oracle.labels.to(y.device)) | (y == oracle.num_classes)   # (B,)
        if not bool(known.all()):
            raise ValueError("y contains a class with no points in this OracleDenoiser")
    return t, y
