"""A small MLP noise predictor for 2D toy data — chapter 3.

Same contract as the U-Net: ``model(x_t, t, y=None) -> eps_hat`` with ``.num_classes`` and ``.config``.
The timestep goes through the same sinusoidal embedding (:func:`~minidiff.unet.timestep_embedding`) and a
two-layer MLP; the (optional) class embedding is added to it and the sum is added to every hidden layer.

Introduced in chapter 3.
"""
from __future__ import annotations

from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_int
from .unet import timestep_embedding


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t, y) for vectors: residual MLP blocks conditioned on the timestep (and class).

    Args:
        dim: data dimension (2 for the toy data sets).
        hidden: width of the hidden layers.
        num_layers: number of residual hidden blocks, each h <- h + Linear(SiLU(h + emb)).
        time_dim: width of the sinusoidal timestep embedding.
        num_classes: number of classes for a conditional model; label ``num_classes`` means "no label".

    ``forward(x, t, y=None)``: x (B, dim), t (B,) timestep indices (or an int), y (B,) labels or None.
    The output layer starts at zero, so the first prediction is exactly 0.
    Introduced in chapter 3.
    """

    def __init__(self, *, dim: int = 2, hidden: int = 128, num_layers: int = 3, time_dim: int = 64,
                 num_classes: int | None = None):
        super().__init__()
        dim = check_int(dim, "dim", low=1)
        hidden = check_int(hidden, "hidden", low=1)
        num_layers = check_int(num_layers, "num_layers", low=1)
        time_dim = check_int(time_dim, "time_dim", low=2)
        if num_classes is not None:
            num_classes = check_int(num_classes, "num_classes", low=1)
        self.num_classes = num_classes
        self.dim = dim
        self.config = dict(dim=dim, hidden=hidden, num_layers=num_layers, time_dim=time_dim,
                           num_classes=num_classes)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_emb = nn.Embedding(num_classes + 1, hidden) if num_classes is not None else None
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(num_layers)])
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        B = x.shape[0]
        if isinstance(t, (Integral, Real)) and not isinstance(t, bool):
            t = torch.full((B,), t, device=x.device)
        if not isinstance(t, torch.Tensor) or t.dtype == torch.bool:
            raise TypeError(f"t must be a tensor of timesteps of shape (B,) or a number, got {t!r:.60}")
        t = t.expand(B) if t.ndim == 0 else t
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},) to match x's batch, got {tuple(t.shape)}")

        emb = self.time_mlp(timestep_embedding(t, self.config["time_dim"]).to(self.inp.weight.dtype))  # (B, hidden)
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y must be None: this MLPDenoiser is unconditional (num_classes=None)")
        else:
            if y is None:
                y = torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
            if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
                raise TypeError(f"y must be an integer tensor of class labels, got {y!r:.60}")
            if y.shape != (B,):
                raise ValueError(f"y must have shape ({B},) to match x's batch, got {tuple(y.shape)}")
            if y.device.type == "cpu" and y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
                raise ValueError(f"y must contain labels in [0, {self.num_classes}] ({self.num_classes} = no "
                                 f"label), got values in [{int(y.min())}, {int(y.max())}]")
            emb = emb + self.class_emb(y)                              # (B, hidden)

        h = self.inp(x)                                                # (B, hidden)
        for layer in self.layers:
            h = h + layer(F.silu(h + emb))                             # (B, hidden)
        return self.out(F.silu(h))                                     # (B, dim)
