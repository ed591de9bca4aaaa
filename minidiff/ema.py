"""An exponential moving average (EMA) of a model's weights, kept by the trainer.

DDPM and almost every diffusion model since sample from an EMA of the training weights (Ho et al. 2020,
Appendix B: decay 0.9999). Early in training that average would be dominated by the random initialisation,
so the decay warms up: ``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t`` optimizer steps.
"""
from __future__ import annotations

import copy

import torch

from ._validate import check_int, check_real


class EMA:
    """Keeps ``self.model``, a frozen copy of ``model`` whose weights track an EMA of ``model``'s.

    Args:
        model: the model being trained (unwrapped, not a DistributedDataParallel wrapper).
        decay: the final decay in [0, 1). Early steps use less: ``min(decay, (1 + t) / (10 + t))`` after
            ``t`` optimizer steps, so the average is not dominated by the random initialisation.

    Buffers (e.g. normalisation statistics) are copied, not averaged. Introduced in chapter 4.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = check_real(decay, "decay", low=0.0, high=1.0, high_open=True)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used by the update after ``step`` optimizer steps: min(decay, (1 + step) / (10 + step))."""
        step = check_int(step, "step", low=0)
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """ema <- decay * ema + (1 - decay) * weights, with the decay of :meth:`decay_at` (``step``).

        Args:
            model: the model being trained, the same architecture as the copy.
            step: optimizer steps taken so far.
        """
        _check_update(self.model, model)
        weight = 1.0 - self.decay_at(step)
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, weight)      # ema += weight * (param - ema)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


# ------------------------------------------------------------------------------------------ argument checks
def _check_update(ema_model: torch.nn.Module, model: torch.nn.Module) -> None:
    n_ema, n = (sum(1 for _ in m.parameters()) for m in (ema_model, model))
    if n_ema != n:
        raise ValueError(f"model has {n} parameter tensors, the EMA copy {n_ema}")
