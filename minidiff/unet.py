"""The noise-prediction network: a U-Net with time embedding — chapter 4.

The architecture follows DDPM (Ho et al. 2020, appendix B), itself a PixelCNN++ / Wide-ResNet U-Net:

    x (B, C, H, W) -> conv_in -> [res blocks (+ attention), downsample] per level      (encoder)
                   -> res block, self-attention, res block                              (bottleneck)
                   -> [res blocks on concat(h, skip) (+ attention), upsample] per level (decoder)
                   -> GroupNorm, SiLU, conv_out -> eps_hat (B, C, H, W)

- The timestep enters through a sinusoidal embedding (:func:`timestep_embedding`) and a two-layer MLP; every
  residual block adds a projection of it, either as a bias (DDPM) or as a per-channel scale and shift of the
  normalised features (``scale_shift=True``, Nichol & Dhariwal 2021, "Improved DDPM", and Dhariwal & Nichol 2021).
- A class label enters as a learned embedding added to the time embedding. Row ``num_classes`` of the table is
  the "no label" embedding used for classifier-free guidance (Ho & Salimans 2022).
- Self-attention runs only at low resolution (the levels flagged in ``attention_levels``) and in the bottleneck,
  where the number of pixels — and the attention's quadratic cost — is small.
- The output convolution, the second convolution of each residual block and the attention output projection
  start at zero, so every block starts as the identity and the network's first prediction is exactly 0
  (as in Nichol & Dhariwal's code).

Introduced in chapter 4.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from ._model_inputs import check_model_inputs
from ._validate import check_int, check_real

PRESETS: dict[str, dict] = {
    # Trains usefully on 2 CPU cores (0.67M parameters): 28 px, levels 28 -> 14 -> 7, attention at 7x7 only.
    "tiny": dict(in_channels=1, base_channels=24, channel_mults=(1, 2, 2), num_res_blocks=1,
                 attention_levels=(False, False, True)),
    # Fashion-MNIST quality (4.1M parameters): two res blocks per level, attention at 14x14 and 7x7.
    "small": dict(in_channels=1, base_channels=48, channel_mults=(1, 2, 2), num_res_blocks=2,
                  attention_levels=(False, True, True), dropout=0.1),
    # DDPM's CIFAR-10 model (appendix B): 32 px RGB, 35.7M parameters, attention at 16x16, additive time bias.
    "ddpm-cifar10": dict(in_channels=3, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                         attention_levels=(False, True, False, False), dropout=0.1, num_groups=32,
                         scale_shift=False),
    # Latent diffusion (chapter 12) on 4 x 7 x 7 latents: one level, no down-sampling, attention throughout.
    "latent": dict(in_channels=4, base_channels=64, channel_mults=(1,), num_res_blocks=2, attention_levels=(True,)),
}


def timestep_embedding(t: torch.Tensor, dim: int, *, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in DDPM and the Transformer.

    With half = dim // 2 and i = 0 .. half - 1 (DDPM's ``get_timestep_embedding``)::

        emb[:, i]        = sin(t * f_i)
        emb[:, half + i] = cos(t * f_i)
        f_i              = max_period^(-i / (half - 1))

    The frequencies are geometric from 1 down to 1 / max_period. An odd ``dim`` gets one zero column at the
    end.

    Args:
        t: (B,) timesteps (integer indices or floats).
        dim: embedding width, >= 2.
        max_period: the longest period, > 0.

    Returns:
        (B, dim) float32 tensor on ``t``'s device.

    Introduced in chapter 4.
    """
    dim, max_period = _check_embedding_args(t, dim, max_period)
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1)    # (half,)
    freqs = torch.exp(-math.log(max_period) * exponent)                                    # (half,)
    args = t.float()[:, None] * freqs[None, :]                                             # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)                             # (B, 2 * half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))                                                           # (B, dim)
    return emb


def n_params(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _zero(module: nn.Module) -> nn.Module:
    """Set a layer's parameters to zero (the layer then outputs exactly 0) and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> (+ time/class embedding) -> GroupNorm -> SiLU -> dropout -> conv, plus skip.

    With ``scale_shift`` the embedding gives a per-channel (scale, shift) applied after the second norm:
    h = norm(h) * (1 + scale) + shift (Improved DDPM's adaptive group norm). Without it the embedding is a
    per-channel bias added before the second norm (DDPM).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float, num_groups: int,
                 scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(num_groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(num_groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W); emb: (B, emb_dim), already passed through SiLU. Returns (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))                        # (B, out_ch, H, W)
        e = self.emb_proj(emb)[:, :, None, None]                     # (B, out_ch or 2 * out_ch, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)                         # (B, out_ch, 1, 1) each
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))                      # (B, out_ch, H, W)
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W pixels, with a residual connection.

    Heads of 32 channels (one head when the width is not a multiple of 32); q, k, v come from one 1x1 conv.
    """

    def __init__(self, ch: int, *, num_groups: int):
        super().__init__()
        self.heads = ch // 32 if ch % 32 == 0 else 1
        self.norm = nn.GroupNorm(num_groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)  # (B, 3, nh, hd, HW)
        q, k, v = qkv.permute(1, 0, 2, 4, 3)                                      # (B, nh, HW, hd) each
        h = F.scaled_dot_product_attention(q, k, v)                               # softmax(q k^T / sqrt(hd)) v
        h = h.transpose(2, 3).reshape(B, C, H, W)                                 # (B, C, H, W)
        return x + self.proj(h)


class CrossAttention(nn.Module):
    """Attention from the pixels to a prompt's tokens, with a residual connection (Rombach et al. 2022, sec. 3.3).

    Queries come from the (B, C, H, W) features, keys and values from the token vectors (B, L, D); padding tokens
    (``mask`` False) get no weight. Heads of 32 channels, as in :class:`SelfAttention`. Introduced in chapter 13.
    """

    def __init__(self, ch: int, context_dim: int, *, num_groups: int):
        super().__init__()
        self.heads = ch // 32 if ch % 32 == 0 else 1
        self.norm = nn.GroupNorm(num_groups, ch)
        self.q = nn.Conv2d(ch, ch, 1)
        self.kv = nn.Linear(context_dim, 2 * ch)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        L = context.shape[1]
        q = self.q(self.norm(x)).reshape(B, self.heads, C // self.heads, H * W).transpose(2, 3)  # (B, nh, HW, hd)
        k, v = self.kv(context).reshape(B, L, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, L, hd)
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, nh, HW, hd)
        h = h.transpose(2, 3).reshape(B, C, H, W)                                       # (B, C, H, W)
        return x + self.proj(h)


class Block(nn.Module):
    """One residual block, optionally followed by self-attention (and then cross-attention to a prompt)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, attention: bool, context_dim: int | None = None,
                 **res_kwargs):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, **res_kwargs)
        self.attn = SelfAttention(out_ch, num_groups=res_kwargs["num_groups"]) if attention else None
        self.cross = (CrossAttention(out_ch, context_dim, num_groups=res_kwargs["num_groups"])
                      if attention and context_dim is not None else None)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: tuple | None = None) -> torch.Tensor:
        """``context``: (token vectors (B, L, D), mask (B, L)) for a model with ``context_dim``, else None."""
        h = self.res(x, emb)
        if self.attn is not None:
            h = self.attn(h)
        return self.cross(h, *context) if self.cross is not None else h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """eps_theta(x_t, t, y): a U-Net that predicts the noise in ``x_t`` (DDPM appendix B).

    Args:
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        out_channels: output channels (default: ``in_channels``).
        base_channels: width of the first level; level ``i`` has ``base_channels * channel_mults[i]``.
        channel_mults: one multiplier per resolution level; there are ``len(channel_mults) - 1``
            downsamplings, so H and W must be divisible by ``2 ** (len(channel_mults) - 1)``.
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more per level).
        attention_levels: one flag per level: self-attention after each residual block of that level.
            The bottleneck always has self-attention.
        num_classes: number of classes for a class-conditional model (None: unconditional).
        dropout: dropout rate inside the residual blocks.
        num_groups: GroupNorm groups; must divide every level's width.
        scale_shift: time embedding as scale and shift of the normalised features (True) or as an added
            bias (False, as in DDPM).
        context_dim: width of a prompt's token vectors: every block with self-attention is followed by
            :class:`CrossAttention` to them (chapter 13), and ``forward`` needs ``context``. None: no prompt.

    ``forward(x, t, y=None, context=None)``: x (B, C, H, W), t (B,) timestep indices (or an int), y (B,) labels in
    ``[0, num_classes]`` where ``num_classes`` means "no label"; ``y=None`` on a conditional model is "no label"
    for every sample; ``context`` (token vectors (B, L, context_dim), mask (B, L)) for a model with
    ``context_dim``. Returns eps_hat (B, out_channels, H, W).

    ``model.config`` is a JSON-able dict with ``UNet(**model.config)`` rebuilding the same architecture.
    Introduced in chapter 4.
    """

    def __init__(self, *, in_channels: int = 1, out_channels: int | None = None, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: tuple[bool, ...] = (False, False, True), num_classes: int | None = None,
                 dropout: float = 0.0, num_groups: int = 8, scale_shift: bool = True,
                 context_dim: int | None = None):
        super().__init__()
        context_dim = None if context_dim is None else check_int(context_dim, "context_dim", low=1)
        (in_channels, out_channels, base_channels, channel_mults, num_res_blocks, attention_levels, num_classes,
         dropout, num_groups) = _check_unet_args(in_channels, out_channels, base_channels, channel_mults,
                                                 num_res_blocks, attention_levels, num_classes, dropout, num_groups,
                                                 scale_shift)
        widths = [base_channels * m for m in channel_mults]
        self.num_classes = num_classes
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                           channel_mults=list(channel_mults), num_res_blocks=num_res_blocks,
                           attention_levels=list(attention_levels), num_classes=num_classes,
                           dropout=dropout, num_groups=num_groups, scale_shift=scale_shift)
        if context_dim is not None:          # only then: the configs of the models without prompts stay as they were
            self.config["context_dim"] = context_dim
        self.context_dim = context_dim
        self.in_channels = in_channels
        self.levels = len(channel_mults)
        emb_dim = 4 * base_channels
        res_kwargs = dict(dropout=dropout, num_groups=num_groups, scale_shift=scale_shift, context_dim=context_dim)

        # Time (and class) embedding: sinusoid (base_channels) -> Linear -> SiLU -> Linear (emb_dim).
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        skip_widths = [base_channels]   # widths of the encoder activations the decoder will concatenate
        ch = base_channels
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level, (width, attn) in enumerate(zip(widths, attention_levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(Block(ch, width, emb_dim, attention=attn, **res_kwargs))
                ch = width
                skip_widths.append(ch)
            self.down.append(blocks)
            if level < self.levels - 1:
                self.downsample.append(Downsample(ch))
                skip_widths.append(ch)

        self.mid = nn.ModuleList([Block(ch, ch, emb_dim, attention=True, **res_kwargs),
                                  Block(ch, ch, emb_dim, attention=False, **res_kwargs)])

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(self.levels)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(Block(ch + skip_widths.pop(), widths[level], emb_dim,
                                    attention=attention_levels[level], **res_kwargs))
                ch = widths[level]
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(Upsample(ch))

        self.norm_out = nn.GroupNorm(num_groups, ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "UNet":
        """A named configuration: ``"tiny"``, ``"small"`` or ``"ddpm-cifar10"``; keyword overrides win."""
        if name not in PRESETS:
            raise ValueError(f"name must be one of {', '.join(repr(p) for p in PRESETS)}; got {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    def _check_inputs(self, x, t, y) -> tuple[torch.Tensor, torch.Tensor | None]:
        factor = 2 ** (self.levels - 1)
        return check_model_inputs(self, x, t, y, features=(self.in_channels, None, None), multiple=factor,
                                  multiple_note=f"2 ** (levels - 1) = {factor} for {self.levels} levels "
                                                f"(channel_mults={tuple(self.config['channel_mults'])})")

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None, context: tuple | None = None) -> torch.Tensor:
        """Check the inputs (t a number -> (B,); y None -> "no label"), then :meth:`predict_eps`."""
        return self.predict_eps(x, *self._check_inputs(x, t, y), context=_check_context(self, context, x))

    def predict_eps(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None,
                    context: tuple | None = None) -> torch.Tensor:
        """eps_hat = eps_theta(x, t, y) on checked inputs: x (B, C, H, W), t (B,), y (B,) or None (unconditional),
        context (token vectors (B, L, D), mask (B, L)) or None."""
        weight = self.time_mlp[0].weight
        emb = self.time_mlp(timestep_embedding(t, self.config["base_channels"]).to(weight.dtype))  # (B, E)
        if self.class_emb is not None:
            emb = emb + self.class_emb(y)                                # (B, E)
        emb = F.silu(emb)     # every block's projection starts with SiLU: apply it once here

        h = self.conv_in(x)                                              # (B, base, H, W)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb, context)                               # (B, width_level, H_l, W_l)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)                            # (B, width_level, H_l / 2, W_l / 2)
                skips.append(h)

        for block in self.mid:
            h = block(h, emb, context)                                   # (B, width_last, H_last, W_last)

        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb, context)  # (B, width_level, H_l, W_l)
            if i < self.levels - 1:
                h = self.upsample[i](h)                                  # (B, width_level, 2 H_l, 2 W_l)

        return self.conv_out(F.silu(self.norm_out(h)))                    # (B, out_channels, H, W)


# ------------------------------------------------------------------------------------------ argument checks
def _check_context(model: "UNet", context, x: torch.Tensor) -> tuple | None:
    """``context`` must be (vectors (B, L, context_dim), bool mask (B, L)) for a model with ``context_dim``, with at
    least one True per row; None for a model without."""
    if model.context_dim is None:
        if context is not None:
            raise ValueError("context must be None: this UNet takes no prompt (context_dim=None)")
        return None
    if not (isinstance(context, tuple) and len(context) == 2 and all(torch.is_tensor(c) for c in context)):
        raise TypeError("context must be a tuple (token vectors (B, L, context_dim), mask (B, L)) for a UNet with "
                        f"context_dim={model.context_dim}, got {type(context).__name__}")
    vectors, mask = context
    B, D = x.shape[0], model.context_dim
    if vectors.ndim != 3 or vectors.shape[0] != B or vectors.shape[2] != D:
        raise ValueError(f"context vectors must have shape ({B}, L, {D}), got {tuple(vectors.shape)}")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(vectors.shape[:2]):
        raise ValueError(f"context mask must be a bool tensor of shape {tuple(vectors.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if not bool(mask.any(1).all()):
        raise ValueError("context mask must keep at least one token per prompt (the start token)")
    return vectors.to(x.dtype), mask


def _check_embedding_args(t, dim, max_period) -> tuple[int, float]:
    dim = check_int(dim, "dim", low=2)
    max_period = check_real(max_period, "max_period", low=0.0, low_open=True)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    return dim, max_period


def _check_unet_args(in_channels, out_channels, base_channels, channel_mults, num_res_blocks, attention_levels,
                     num_classes, dropout, num_groups, scale_shift) -> tuple:
    """The constructor arguments of :class:`UNet`, checked and normalised (tuples, ints, floats)."""
    in_channels = check_int(in_channels, "in_channels", low=1)
    out_channels = in_channels if out_channels is None else check_int(out_channels, "out_channels", low=1)
    base_channels = check_int(base_channels, "base_channels", low=2)
    channel_mults = tuple(channel_mults) if isinstance(channel_mults, (tuple, list)) else channel_mults
    if not isinstance(channel_mults, tuple) or not channel_mults:
        raise ValueError(f"channel_mults must be a non-empty tuple of positive ints, got {channel_mults!r}")
    channel_mults = tuple(check_int(m, "channel_mults[i]", low=1) for m in channel_mults)
    num_res_blocks = check_int(num_res_blocks, "num_res_blocks", low=1)
    attention_levels = tuple(attention_levels) if isinstance(attention_levels, (tuple, list)) else None
    if attention_levels is None or len(attention_levels) != len(channel_mults) or \
            not all(isinstance(a, bool) for a in attention_levels):
        raise ValueError(f"attention_levels must be a tuple of {len(channel_mults)} bools (one per entry of "
                         f"channel_mults={channel_mults}), got {attention_levels!r}")
    if num_classes is not None:
        num_classes = check_int(num_classes, "num_classes", low=1)
    dropout = check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
    num_groups = check_int(num_groups, "num_groups", low=1)
    widths = [base_channels * m for m in channel_mults]
    if any(w % num_groups for w in [base_channels, *widths]):
        raise ValueError(f"num_groups={num_groups} must divide base_channels={base_channels} and every "
                         f"level's width base_channels * channel_mults = {widths}")
    if not isinstance(scale_shift, bool):
        raise TypeError(f"scale_shift must be a bool, got {scale_shift!r}")
    return (in_channels, out_channels, base_channels, channel_mults, num_res_blocks, attention_levels, num_classes,
            dropout, num_groups)
