"""A small MLP noise predictor for 2D toy data — chapter 3.

Same contract as the U-Net: ``model(x_t, t, y=None) -> eps_hat`` with ``.num_classes`` and ``.config``.
The timestep goes through the same sinusoidal embedding (:func:`~minidiff.unet.timestep_embedding`) and a
two-layer MLP; the (optional) class embedding is added to it and the sum is added to every hidden layer.

Introduced in chapter 3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._model_inputs import check_model_inputs
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
        dim, hidden, num_layers, time_dim = (check_int(v, name, low=low) for v, name, low in (
            (dim, "dim", 1), (hidden, "hidden", 1), (num_layers, "num_layers", 1), (time_dim, "time_dim", 2)))
        num_classes = None if num_classes is None else check_int(num_classes, "num_classes", low=1)
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
        t, y = check_model_inputs(self, x, t, y, features=(self.dim,))
        emb = self.time_mlp(timestep_embedding(t, self.config["time_dim"]).to(self.inp.weight.dtype))  # (B, hidden)
        if self.class_emb is not None:
            emb = emb + self.class_emb(y)                              # (B, hidden)

        h = self.inp(x)                                                # (B, hidden)
        for layer in self.layers:
            h = h + layer(F.silu(h + emb))                             # (B, hidden)
        return self.out(F.silu(h))                                     # (B, dim)
