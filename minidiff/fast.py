"""Speed paths, opt in: the same functions as the plain modules the book prints, computed faster on a device.

The chapters teach the plain versions: :class:`~minidiff.unet.ResBlock` with ``nn.Dropout`` and ``F.silu``,
attention through 1x1 convolutions, nearest-neighbour upsampling then a convolution, torch's own AdamW. This
module holds every device-specific trick that makes them faster, applied by one call::

    model = fast.apply(model)          # on its device: fast blocks
    opt = fast.AdamW(groups, lr=1e-4, fused=True)
    loss_sched = fast.schedule_on(sched, device)

:func:`minidiff.train`, the ``minidiff`` command and ``benchmarks/bench.py`` use it by default
(``TrainConfig(fast=False)`` trains the plain path). Each piece is tested equal to the plain path it replaces,
values and gradients, in both memory layouts (``tests/test_fast.py``); the book's Performance page measures
what each buys. What :func:`apply` changes:

- :class:`FastResBlock`: additions in place, SiLU in place where autograd does not need its input, the
  scale-and-shift as one ``addcmul``, and on the CPU dropout masks drawn as uniform numbers.
- :class:`FastSelfAttention`: the 1x1 q/k/v and output convolutions as matrix products over the channels of
  the (B, HW, C) pixels: no layout change for channels-last activations.
- :class:`FastUpsample`: on the CPU, nearest x2 then the 3x3 convolution as one stride-2 transposed
  convolution (2.25x fewer operations).
- a U-Net on the CPU in channels-last memory format, where oneDNN's convolutions run faster.

:func:`revert` undoes it. For sampling, :class:`CompiledModel` wraps a model in ``torch.compile`` (CUDA graphs
on a GPU); the samplers take it like any model. The weights are never touched: ``state_dict`` is the same either way.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect

import torch
import torch.nn.functional as F
from torch import nn

from .guidance import num_classes_of
from .schedules import NoiseSchedule
from .unet import ResBlock, SelfAttention, UNet, Upsample

__all__ = ["apply", "revert", "AdamW", "schedule_on", "CompiledModel", "FastResBlock", "FastSelfAttention", "FastUpsample",
           "FastDropout", "upsample_conv", "upsample_conv_transposed", "is_channels_last"]


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t`` is a 4-D tensor stored channels-last and not also contiguous (for some shapes, such as 1x1
    kernels, the two layouts are the same memory order; such a tensor counts as contiguous)."""
    return t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place unless autograd records it: its backward needs the input, which an in-place SiLU would
    first have to copy, so in training a fresh output is cheaper; in sampling the in-place one saves a buffer."""
    return F.silu(x, inplace=not x.requires_grad)


# ------------------------------------------------------------------------------------------ blocks
class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose mask on the CPU comes from uniform numbers u >= p: the same distribution (each value
    kept with probability 1 - p and scaled by 1 / (1 - p)), drawn faster there than PyTorch's Bernoulli sampler
    (forward and backward together about 1.5x as fast). Other devices use PyTorch's fused dropout kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        keep = torch.rand_like(x).ge_(self.p).mul_(1 / (1 - self.p))   # 1 / (1 - p) with probability 1 - p, else 0
        return x * keep


class FastResBlock(ResBlock):
    """:class:`~minidiff.unet.ResBlock` with fewer fresh activation buffers (on the CPU a large new buffer costs
    page faults): the additions, and SiLU when no gradient is recorded, run in place. A convolution's backward
    does not need its output, so adding into it in place is safe."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_silu(self.norm1(x)))                         # (B, out_ch, H, W)
        e = self.emb_proj(emb)[:, :, None, None]                     # (B, out_ch or 2 * out_ch, 1, 1)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)                         # (B, out_ch, 1, 1) each
            h = torch.addcmul(shift, self.norm2(h), 1 + scale)       # norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h.add_(e))                                # norm2(h + e)
        h = self.conv2(self.dropout(_silu(h)))                       # (B, out_ch, H, W)
        return h.add_(self.skip(x))                                  # skip(x) + h


class FastSelfAttention(SelfAttention):
    """:class:`~minidiff.unet.SelfAttention` with the 1x1 convolutions written as matrix products over the
    channels of the (B, HW, C) pixels. They then need no layout change for channels-last activations, and q, k,
    v come out with the head dimension contiguous, as the fused attention kernels want. (NCHW activations cost
    one copy, in the first reshape; the sum with x returns to x's layout either way.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)                  # (B, HW, C)
        qkv = F.linear(h, self.qkv.weight.flatten(1), self.qkv.bias)              # (B, HW, 3C)
        q, k, v = qkv.view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, nh, HW, hd)
        h = F.scaled_dot_product_attention(q, k, v)                               # (B, nh, HW, hd)
        h = F.linear(h.transpose(1, 2).reshape(B, H * W, C), self.proj.weight.flatten(1), self.proj.bias)
        return x + h.view(B, H, W, C).permute(0, 3, 1, 2)                         # x + proj(h), x's layout


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


class FastUpsample(Upsample):
    """:class:`~minidiff.unet.Upsample` that on the CPU, for inputs of at least ``TRANSPOSED_MIN_PIXELS`` pixels
    (B * H * W) and ``TRANSPOSED_MIN_SIDE`` rows and columns, takes :func:`upsample_conv_transposed`; on smaller
    ones oneDNN's transposed convolution measured slower than the plain path (``benchmarks/bench.py``). Elsewhere
    (GPU) the plain upsample-then-convolve path runs."""

    TRANSPOSED_MIN_PIXELS = 512
    TRANSPOSED_MIN_SIDE = 7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        transposed = x.device.type == "cpu" and B * H * W >= self.TRANSPOSED_MIN_PIXELS and \
            min(H, W) >= self.TRANSPOSED_MIN_SIDE
        return (upsample_conv_transposed if transposed else upsample_conv)(x, self.conv.weight, self.conv.bias)


# ------------------------------------------------------------------------------------------ apply / revert
_FAST = {ResBlock: FastResBlock, SelfAttention: FastSelfAttention, Upsample: FastUpsample, nn.Dropout: FastDropout}
_PLAIN = {fast: plain for plain, fast in _FAST.items()}


def apply(model: nn.Module) -> nn.Module:
    """Switch ``model``'s blocks to their fast versions, in place, and return it.

    Call it once the model is on its device: a U-Net on the CPU is also put in channels-last memory format
    (its outputs then follow the inputs' layout). A module of another kind is left as it is. The parameters
    and buffers are untouched, so ``state_dict`` and checkpoints do not change.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if type(module) in _FAST:
            module.__class__ = _FAST[type(module)]
    if isinstance(model, UNet) and next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def revert(model: nn.Module) -> nn.Module:
    """Undo :func:`apply`, in place: the plain blocks, NCHW weights. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if type(module) in _PLAIN:
            module.__class__ = _PLAIN[type(module)]
    return model.to(memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------------ optimizer
class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` whose fused update sees each parameter, gradient and moment in one memory layout.

    - Layouts made to agree. PyTorch's fused CPU kernel (2.13) gives wrong updates when a parameter and its
      moments differ in layout, as when moments saved from an NCHW model on a GPU are loaded into a
      channels-last model on the CPU. Here a moment (or gradient) in another layout is first copied into the
      parameter's; a moment stays copied.
    - No copies for channels-last kernels. The fused kernel copies every non-contiguous tensor to contiguous
      first. A channels-last kernel (O, I, kh, kw) is not contiguous, but its (O, kh, kw, I) permutation is, with
      the same elements in the same memory, and the update is elementwise: the kernel gets those views and
      updates them in place. On the 35.7M U-Net on one CPU thread a step takes about 46 ms instead of 79 ms.

    Same arithmetic as ``torch.optim.AdamW``, element for element. Both changes act on the lists that AdamW's
    ``_init_group`` fills for the update, found by their names in its signature; a torch whose signature lacks
    those names gets plain ``torch.optim.AdamW``.
    """

    _SIGNATURE = inspect.signature(getattr(torch.optim.AdamW, "_init_group", lambda self, group: None))
    _LISTS = ("params_with_grad", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")

    def _init_group(self, group, *args, **kwargs):
        has_complex = super()._init_group(group, *args, **kwargs)
        if not all(name in self._SIGNATURE.parameters for name in self._LISTS):
            return has_complex
        named = self._SIGNATURE.bind(self, group, *args, **kwargs).arguments
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs = (named[name] for name in self._LISTS)
        per_param = {"exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs, None: grads}
        if group["amsgrad"]:
            per_param["max_exp_avg_sq"] = max_exp_avg_sqs
        for i, p in enumerate(params):
            for key, tensors in per_param.items():
                if tensors[i].stride() != p.stride():
                    tensors[i] = torch.empty_like(p, dtype=tensors[i].dtype).copy_(tensors[i])
                    if key is not None:
                        self.state[p][key] = tensors[i]
            if is_channels_last(p):
                for tensors in (params, *per_param.values()):
                    tensors[i] = tensors[i].permute(0, 2, 3, 1)                        # (O, kh, kw, I), contiguous
        return has_complex


# ------------------------------------------------------------------------------------------ schedule
def schedule_on(sched: NoiseSchedule, device) -> NoiseSchedule:
    """A copy of ``sched`` whose tensors live on ``device``, for the training loss.

    :func:`~minidiff.schedules.gather` converts the schedule entries to the data's device on every call. On a
    GPU, a copy from (pageable) host memory first waits for every queued kernel, so a copy per training step
    would stall the pipeline; with the schedule already there the conversion is a tiny on-device cast. The
    values are the same (float64; float32 on Apple MPS, which has no float64). On the CPU ``sched`` itself is
    returned. Only for the loss: the samplers read single entries as Python floats, which on a GPU would cost a
    host sync each.
    """
    if not isinstance(sched, NoiseSchedule):
        raise TypeError(f"sched must be a NoiseSchedule, got {type(sched).__name__}")
    device = torch.device(device)
    if device.type == "cpu":
        return sched
    dtype = torch.float32 if device.type == "mps" else torch.float64
    moved = copy.copy(sched)
    for f in dataclasses.fields(sched):
        value = getattr(sched, f.name)
        if isinstance(value, torch.Tensor):
            object.__setattr__(moved, f.name, value.to(device=device, dtype=dtype))
    return moved


# ------------------------------------------------------------------------------------------ compiled sampling
class CompiledModel:
    """``model`` compiled with ``torch.compile`` for the sampler loops: an opt-in fast path; eager is the default.

    ``ddim_sample(CompiledModel(model), ...)`` returns what ``ddim_sample(model, ...)`` returns, up to
    floating-point rounding, and sooner where kernel launches dominate — a small U-Net on a GPU, where eager
    PyTorch spends more time launching hundreds of small kernels per step than running them. The compiler fuses
    the small kernels, and on CUDA ``mode="reduce-overhead"`` records the whole forward pass as a CUDA graph
    that every step replays with one launch. The first call compiles (tens of seconds), and so does the first
    call with a new batch shape; the samplers' loops keep one shape, so the cost is paid once per run.

    Args:
        model: ``model(x_t, t, y) -> eps_hat``, e.g. a :class:`~minidiff.UNet` in eval mode.
        mode: ``torch.compile``'s mode for the inductor backend; ``"reduce-overhead"`` adds CUDA graphs on CUDA
            (on the CPU it only compiles).
        backend: ``torch.compile``'s backend: ``"inductor"`` generates fused kernels; ``"eager"`` and
            ``"aot_eager"`` only capture the graph (fast to build: for tests).

    Measured by ``benchmarks/bench.py``; see the book's Performance page.
    """

    def __init__(self, model, *, mode: str | None = "reduce-overhead", backend: str = "inductor"):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y), got {type(model).__name__}")
        self.model = model
        self.num_classes = num_classes_of(model)       # guidance batches the no-label rows when this is set
        options = dict(mode=mode) if backend == "inductor" else {}
        self.compiled = torch.compile(model, backend=backend, dynamic=False, **options)

    @torch.no_grad()
    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        # A CUDA graph writes its output into the same memory on every replay: mark a new step, return a copy.
        torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x_t, t, y).clone()
