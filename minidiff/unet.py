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
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

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
    dim = check_int(dim, "dim", low=2)
    max_period = check_real(max_period, "max_period", low=0.0, low_open=True)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a torch.Tensor of shape (B,), got {type(t).__name__}")
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
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


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place unless autograd records it: its backward needs the input, which an in-place SiLU would
    first have to copy, so in training a fresh output is cheaper; in sampling the in-place one saves a buffer."""
    return F.silu(x, inplace=not x.requires_grad)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask on the CPU comes from uniform numbers u >= p: the same distribution (each value
    kept with probability 1 - p and scaled by 1 / (1 - p)), drawn faster there than PyTorch's Bernoulli sampler
    (forward and backward together about 1.5x as fast). Other devices use PyTorch's fused dropout kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))   # 1 / (1 - p) with probability 1 - p, else 0
        return x * keep


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> (+ time/class embedding) -> GroupNorm -> SiLU -> dropout -> conv, plus skip.

    With ``scale_shift`` the embedding gives a per-channel (scale, shift) applied after the second norm:
    h = norm(h) * (1 + scale) + shift. Without it the embedding is a per-channel bias added before the second
    norm (DDPM).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout: float, num_groups: int,
                 scale_shift: bool):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(num_groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(num_groups, out_ch)
        self.dropout = Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W); emb: (B, emb_dim), already passed through SiLU. Returns (B, out_ch, H, W)."""
        # The additions (and SiLU when no gradient is recorded) run in place: fewer fresh activation buffers (on
        # the CPU a large new buffer costs page faults). A convolution's backward does not need its output.
        h = self.conv1(_silu(self.norm1(x)))                         # (B, out_ch, H, W)
        e = self.emb_proj(emb)[:, :, None, None]                     # (B, out_ch or 2 * out_ch, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)                         # (B, out_ch, 1, 1) each
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)       # norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h.add_(e))                                # norm2(h + e)
        h = self.conv2(self.dropout(_silu(h)))                       # (B, out_ch, H, W)
        return h.add_(self.skip(x))                                  # skip(x) + h


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
        # The 1x1 convolutions are matrix products over the channels; written as such on (B, HW, C) pixels they
        # need no layout change for channels-last activations, and q, k, v come out with hd contiguous, as the
        # fused attention kernels want. (NCHW activations cost one copy, in the first reshape; the sum with x
        # returns to x's layout either way.)
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)                  # (B, HW, C)
        qkv = F.linear(h, self.qkv.weight.flatten(1), self.qkv.bias)              # (B, HW, 3C)
        q, k, v = qkv.view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, HW, hd)
        h = F.scaled_dot_product_attention(q, k, v)                               # (B, nh, HW, hd)
        h = F.linear(h.transpose(1, 2).reshape(B, H * W, C), self.proj.weight.flatten(1), self.proj.bias)
        return x + h.view(B, H, W, C).permute(0, 3, 1, 2)                         # x + proj(h), x's layout


class Block(nn.Module):
    """One residual block, optionally followed by self-attention."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, attention: bool, **res_kwargs):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, **res_kwargs)
        self.attn = SelfAttention(out_ch, num_groups=res_kwargs["num_groups"]) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """Stride-2 3x3 conv: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is a 4-D tensor stored channels-last and not also contiguous (for some shapes, such as 1x1
    kernels, the two layouts are the same memory order; such a tensor counts as contiguous)."""
    return t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Nearest-neighbour x2, then a 3x3 convolution (padding 1): (B, C, H, W) -> (B, C_out, 2H, 2W)."""
    return F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), weight, bias, padding=1)


# Nearest-neighbour x2 then a 3x3 convolution is a linear map from the input to the output, and a stride-2
# transposed convolution with a 4x4 kernel computes exactly such maps. Along one axis, output row 2i + a reads
# upsampled rows 2i + a - 1 .. 2i + a + 1, which are copies of input rows i-1, i, i (a = 0) or i, i, i+1 (a = 1),
# so taps that land on the same input row add up. A transposed convolution (stride 2, padding 1) sends input row i
# to output rows 2i - 1 .. 2i + 2 through its taps k = 0 .. 3; by the rule above they carry the 3x3 taps
# (w0, w1, w2) as w2, w1 + w2, w0 + w1 and w0. _TAPS holds that map, one row per transposed tap.
_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))      # (4, 3)


def upsample_conv_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`upsample_conv` as one stride-2 transposed convolution: the same function, 2.25x fewer operations.

    The 4x4 kernel sums, per axis, the 3x3 taps that read the same input pixel (see ``_TAPS``). It costs 16
    multiply-adds per input pixel and channel pair where the 3x3 convolution of the upsampled image costs 4 x 9,
    and the upsampled image (4x the input) is never built. The output has the input's memory layout."""
    taps = weight.new_tensor(_TAPS)                                            # (4, 3)
    kernel = torch.einsum("kr,ls,oirs->iokl", taps, taps, weight)             # (C, C_out, 4, 4)
    if is_channels_last(x):
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)           # (B, C_out, 2H, 2W)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv: (B, C, H, W) -> (B, C, 2H, 2W).

    On the CPU, inputs of at least ``TRANSPOSED_MIN_PIXELS`` pixels (B * H * W) and ``TRANSPOSED_MIN_SIDE`` rows
    and columns take :func:`upsample_conv_transposed`, the same function with 2.25x fewer operations; on smaller
    ones oneDNN's transposed convolution is slower than the plain path (measured on the benchmark machine).
    Elsewhere (GPU) the plain upsample-then-convolve path runs.
    """

    TRANSPOSED_MIN_PIXELS = 512
    TRANSPOSED_MIN_SIDE = 7

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        transposed = x.device.type == "cpu" and B * H * W >= self.TRANSPOSED_MIN_PIXELS and \
            min(H, W) >= self.TRANSPOSED_MIN_SIDE
        return (upsample_conv_transposed if transposed else upsample_conv)(x, self.conv.weight, self.conv.bias)


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

    ``forward(x, t, y=None)``: x (B, C, H, W), t (B,) timestep indices (or an int), y (B,) labels in
    ``[0, num_classes]`` where ``num_classes`` means "no label"; ``y=None`` on a conditional model is "no label"
    for every sample. Returns eps_hat (B, out_channels, H, W).

    ``model.config`` is a JSON-able dict with ``UNet(**model.config)`` rebuilding the same architecture.
    Introduced in chapter 4.
    """

    def __init__(self, *, in_channels: int = 1, out_channels: int | None = None, base_channels: int = 32,
                 channel_mults: tuple[int, ...] = (1, 2, 2), num_res_blocks: int = 1,
                 attention_levels: tuple[bool, ...] = (False, False, True), num_classes: int | None = None,
                 dropout: float = 0.0, num_groups: int = 8, scale_shift: bool = True):
        super().__init__()
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

        self.num_classes = num_classes
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                           channel_mults=list(channel_mults), num_res_blocks=num_res_blocks,
                           attention_levels=list(attention_levels), num_classes=num_classes,
                           dropout=dropout, num_groups=num_groups, scale_shift=scale_shift)
        self.in_channels = in_channels
        self.levels = len(channel_mults)
        emb_dim = 4 * base_channels
        res_kwargs = dict(dropout=dropout, num_groups=num_groups, scale_shift=scale_shift)

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

    def _check_inputs(self, x, t, y):
        """Validate shapes (cheap: no pass over the data); return t (B,) and y (B,) or None."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                            + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        B, _, H, W = x.shape
        factor = 2 ** (self.levels - 1)
        if H % factor or W % factor:
            raise ValueError(f"x's height and width must be divisible by 2 ** (levels - 1) = {factor} for "
                             f"{self.levels} levels (channel_mults={tuple(self.config['channel_mults'])}), "
                             f"got H={H}, W={W}")
        if isinstance(t, (Integral, Real)) and not isinstance(t, bool):
            t = torch.full((B,), t, device=x.device)
        if not isinstance(t, torch.Tensor) or t.dtype == torch.bool:
            raise TypeError(f"t must be a tensor of timesteps of shape (B,) or a number, got {t!r:.60}")
        if t.ndim == 0:
            t = t.expand(B)
        elif t.shape != (B,):
            raise ValueError(f"t must have shape ({B},) to match x's batch, got {tuple(t.shape)}")
        if self.num_classes is None:
            if y is not None:
                raise ValueError("y must be None: this UNet is unconditional (num_classes=None)")
            return t, None
        if y is None:
            return t, torch.full((B,), self.num_classes, dtype=torch.long, device=x.device)
        if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y must be an integer tensor of class labels, got {y!r:.60}")
        if y.shape != (B,):
            raise ValueError(f"y must have shape ({B},) to match x's batch, got {tuple(y.shape)}")
        # Range check where it is free (CPU, eager); on accelerators it would cost a host sync per call, and
        # under torch.compile a graph break. An out-of-range index fails in the embedding lookup anyway.
        if y.device.type == "cpu" and not torch.compiler.is_compiling() and y.numel() and \
                (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"y must contain labels in [0, {self.num_classes}] ({self.num_classes} = no label), "
                             f"got values in [{int(y.min())}, {int(y.max())}]")
        return t, y

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        t, y = self._check_inputs(x, t, y)
        weight = self.time_mlp[0].weight
        emb = self.time_mlp(timestep_embedding(t, self.config["base_channels"]).to(weight.dtype))  # (B, E)
        if self.class_emb is not None:
            emb = emb + self.class_emb(y)                                # (B, E)
        emb = F.silu(emb)     # every block's projection starts with SiLU: apply it once here

        h = self.conv_in(x)                                              # (B, base, H, W)
        skips = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)                                        # (B, width_level, H_l, W_l)
                skips.append(h)
            if level < self.levels - 1:
                h = self.downsample[level](h)                            # (B, width_level, H_l / 2, W_l / 2)
                skips.append(h)

        for block in self.mid:
            h = block(h, emb)                                            # (B, width_last, H_last, W_last)

        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)       # (B, width_level, H_l, W_l)
            if i < self.levels - 1:
                h = self.upsample[i](h)                                  # (B, width_level, 2 H_l, 2 W_l)

        return self.conv_out(_silu(self.norm_out(h)))                     # (B, out_channels, H, W)
