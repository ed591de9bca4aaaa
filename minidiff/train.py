"""Training a noise predictor: DDPM's Algorithm 1 in a loop, plus what makes it practical.

The loop in :func:`train` reads top to bottom: draw a batch, compute L_simple with :func:`minidiff.eps_loss`
(with label dropout for classifier-free guidance), take an AdamW step with gradient clipping and learning-rate
warm-up, update the EMA of the weights, and now and then log, draw a sample grid and write a checkpoint. Model
(``unet``, ``mlp``), math (``losses``, ``samplers``), data (``data``) and files (``checkpoint``, ``plot``) live in
their own modules.

It runs on CUDA (bf16 autocast, fused AdamW), Apple MPS or the CPU, picked by :func:`minidiff.default_device`.
Started under ``torchrun --nproc_per_node N`` the same code trains with DistributedDataParallel: every process
reads its own shard of the data with its own random streams, gradients are averaged, and only rank 0 writes
files. ``batch_size`` is per process.

Reproducibility: the run is a function of its config. On the CPU, a run stopped and resumed from its checkpoint
produces bitwise the same losses and weights as one that never stopped. ::

    config = TrainConfig(dataset="8gaussians", model="mlp", steps=2000,
                         lr=1e-3, out="runs/toy")
    result = train(config)   # result.ema_model samples best
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from . import data, fast
from ._io import claim_folder
from ._validate import check_choice, check_int, check_real
from .checkpoint import CheckpointError, is_exported, read_checkpoint, save_checkpoint
from .data import TensorLoader
from .ema import EMA
from .flow import FlowAsEps, FlowNet, flow_matching_loss
from .captions import caption_labels
from .latent import LatentModel, autoencoder_for, encode_dataset
from .text import TextConditionedUNet
from .losses import eps_loss
from .mlp import MLPDenoiser
from .plot import save_image_grid, save_scatter_2d
from .runtime import default_device
from .samplers import ddim_sample
from .schedules import SCHEDULE_NAMES, NoiseSchedule
from .superres import LowResConditioned, downsample
from .unet import PRESETS, UNet

IMAGE_DATASETS = {"fashion-mnist": "load_fashion_mnist", "mnist": "load_mnist", "cifar10": "load_cifar10"}
TOY_DATASETS = ("swiss_roll", "moons", "8gaussians", "checkerboard")
DATASETS = (*IMAGE_DATASETS, *TOY_DATASETS)
MODELS = (*PRESETS, "mlp")
OBJECTIVES = ("eps", "flow")        # L_simple (chapter 3), or conditional flow matching (chapter 10)
NUM_CLASSES = 10                    # every labelled data set here has 10 classes
TOY_POINTS = 20_000                 # size of a toy 2D training set unless `limit` says otherwise
CHECKPOINT_NAME = "ckpt.pt"
# Fields that may differ when resuming: they change how long and how loudly a run goes, not what it computes.
RESUME_MAY_CHANGE = ("steps", "log_every", "sample_every", "sample_n", "sample_steps", "checkpoint_every",
                     "out", "device", "bf16", "fast")
ADDED_LATER = ("objective", "latent", "prompts")        # fields newer than some checkpoints: missing there means the default
DERIVED_MODEL_ARGS = ("in_channels", "dim", "num_classes")
MLP_LR, UNET_LR = 1e-3, 2e-4        # default learning rates: the small 2D MLP learns a blurry ring at 2e-4


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything that defines a training run. Checked on construction.

    Args:
        dataset: one of ``DATASETS``: an image set (``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``) or a 2D
            toy set (``"swiss_roll"``, ``"moons"``, ``"8gaussians"``, ``"checkerboard"``).
        limit: train on only the first ``limit`` examples (a toy set has ``TOY_POINTS`` unless limited).
        model: a U-Net preset (``"tiny"``, ``"small"``, ``"ddpm-cifar10"``) for images, ``"mlp"`` for 2D data.
        model_kwargs: overrides of the preset's constructor arguments (JSON-able); the channels / dimension
            and ``num_classes`` come from the data and ``conditional``.
        conditional: train a class-conditional model (image sets only).
        superres: train an SR3 super-resolution model for this upscaling factor (image sets only; it must
            divide the image size): the U-Net also sees the training image, downsampled by ``superres`` and
            upsampled back bicubically, as extra input channels (:mod:`minidiff.superres`; default: None, an
            ordinary model).
        latent: train on an autoencoder's latents instead of the pixels (latent diffusion, chapter 12):
            ``"autoencoder"`` for the shipped one or the path of a file from ``train-autoencoder``. The images
            are encoded once, scaled to unit variance, and the model learns (c, 7, 7) latents (use the
            ``"latent"`` U-Net preset); :func:`minidiff.load_model` then returns a
            :class:`~minidiff.latent.LatentModel`, which decodes (default: None, pixels).
        prompts: condition on text instead of the class (chapter 13, Fashion-MNIST only, with ``conditional``):
            each image's caption (:func:`minidiff.captions.caption_labels`: the class and the attributes
            measured from its pixels, each kept with probability 1/2) picks a row of the model's prompt table,
            and the model is a :class:`~minidiff.text.TextConditionedUNet`; ``p_uncond`` then drops prompts to
            the empty one (default: False).
        p_uncond: label dropout probability for classifier-free guidance (default: 0.1 if conditional, else 0).
        objective: ``"eps"``, the noise prediction loss L_simple, or ``"flow"``, conditional flow matching on the
            linear path (:func:`minidiff.flow.flow_matching_loss`; the network is a velocity model, sampled as
            :class:`minidiff.flow.FlowNet`, and the schedule only serves the sample grids, through
            :class:`minidiff.flow.FlowAsEps`).
        schedule: the noise schedule, ``"linear"``, ``"cosine"`` or ``"sigmoid"``.
        T: the schedule's number of steps.
        steps: optimizer steps.
        batch_size: examples per step and process.
        lr: AdamW learning rate, reached linearly over ``warmup`` steps (default: ``MLP_LR`` = 0.001 for the 2D
            MLP, ``UNET_LR`` = 0.0002 for U-Nets); stored resolved.
        warmup: steps of linear learning-rate warm-up.
        weight_decay: AdamW's decoupled decay, applied to weight matrices and kernels only.
        grad_clip: max gradient norm, None (on the command line 0) for no clipping.
        ema_decay: EMA decay in [0, 1), warmed up as min(ema_decay, (1 + step) / (10 + step)).
        seed: the run's seed (initial weights, data order, noise).
        out: output folder for ``ckpt.pt`` and ``samples/``.
        log_every: steps between loss read-outs (the only host syncs).
        sample_every: steps between sample grids drawn with the EMA model (0 = never).
        sample_n: samples per grid (default: 64 images or 2000 points).
        sample_steps: DDIM steps for the grids (default: min(50, T)).
        checkpoint_every: steps between checkpoints (0 = only at the end).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
        bf16: bfloat16 autocast (default: on with a CUDA GPU of compute capability >= 8, off otherwise); True
            needs CUDA.
        fast: train with :mod:`minidiff.fast`'s speed paths (the same function, computed faster on the device);
            False runs the plain modules the book prints.

    Introduced in chapter 4.
    """

    dataset: str = "fashion-mnist"
    limit: int | None = None
    model: str = "tiny"
    model_kwargs: dict = field(default_factory=dict)
    conditional: bool = False
    superres: int | None = None
    latent: str | None = None
    prompts: bool = False
    p_uncond: float | None = None
    objective: str = "eps"
    schedule: str = "linear"
    T: int = 1000
    steps: int = 10_000
    batch_size: int = 128
    lr: float | None = None
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    out: str = "runs/minidiff"
    log_every: int = 10
    sample_every: int = 1000
    sample_n: int | None = None
    sample_steps: int | None = None
    checkpoint_every: int = 1000
    device: str = "auto"
    bf16: bool | None = None
    fast: bool = True

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)   # noqa: E731 (frozen dataclass)
        check_choice(self.dataset, "dataset", DATASETS)
        check_choice(self.model, "model", MODELS)
        toy = self.dataset in TOY_DATASETS
        if toy != (self.model == "mlp"):
            raise ValueError(f"model must be 'mlp' for a 2D toy dataset and a U-Net preset {tuple(PRESETS)} for "
                             f"an image dataset; got model={self.model!r} with dataset={self.dataset!r}")
        if self.limit is not None:
            check_int(self.limit, "limit", low=1)
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise TypeError(f"model_kwargs must be a dict with str keys, got {self.model_kwargs!r}")
        derived = sorted(set(self.model_kwargs) & set(DERIVED_MODEL_ARGS))
        if derived:
            raise ValueError(f"model_kwargs must not set {derived}: they come from the data and `conditional`")
        try:
            set_("model_kwargs", json.loads(json.dumps(self.model_kwargs)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"model_kwargs must be JSON-able, got {self.model_kwargs!r}: {e}") from None
        if not isinstance(self.conditional, bool):
            raise TypeError(f"conditional must be a bool, got {self.conditional!r}")
        if self.conditional and toy:
            raise ValueError(f"conditional=True needs a labelled image dataset; {self.dataset!r} has no labels")
        if self.superres is not None:
            check_int(self.superres, "superres", low=2)
            if toy or self.conditional:
                raise ValueError(f"superres={self.superres} needs an image dataset and an unconditional model "
                                 f"(it is conditioned on the low-resolution image); got dataset={self.dataset!r}, "
                                 f"conditional={self.conditional}")
        if self.latent is not None:
            if not isinstance(self.latent, str) or not self.latent:
                raise TypeError(f"latent must be 'autoencoder' or the path of an autoencoder file, got {self.latent!r}")
            if toy or self.superres:
                raise ValueError(f"latent={self.latent!r} needs an image dataset and no superres; got "
                                 f"dataset={self.dataset!r}, superres={self.superres}")
        if not isinstance(self.prompts, bool):
            raise TypeError(f"prompts must be a bool, got {self.prompts!r}")
        if self.prompts and (self.dataset != "fashion-mnist" or not self.conditional or self.superres):
            raise ValueError("prompts=True needs dataset='fashion-mnist' (its captions), conditional=True and no "
                             f"superres; got dataset={self.dataset!r}, conditional={self.conditional}, "
                             f"superres={self.superres}")
        if self.p_uncond is None:
            set_("p_uncond", 0.1 if self.conditional else 0.0)
        check_real(self.p_uncond, "p_uncond", low=0.0, high=1.0)
        if self.p_uncond > 0 and not self.conditional:
            raise ValueError(f"p_uncond must be 0 for an unconditional model, got {self.p_uncond}")
        check_choice(self.objective, "objective", OBJECTIVES)
        if self.objective == "flow" and self.superres:
            raise ValueError("objective='flow' is for ordinary models: a superres run trains with objective='eps'")
        check_choice(self.schedule, "schedule", SCHEDULE_NAMES)
        check_int(self.T, "T", low=2)
        if self.sample_steps is None:
            set_("sample_steps", min(50, self.T))
        for name in ("steps", "batch_size", "log_every", "sample_steps"):
            check_int(getattr(self, name), name, low=1)
        for name in ("warmup", "seed", "sample_every", "checkpoint_every"):
            check_int(getattr(self, name), name, low=0)
        if self.sample_steps > self.T:
            raise ValueError(f"sample_steps must be in [1, T={self.T}], got {self.sample_steps}")
        if self.sample_n is None:
            set_("sample_n", 2000 if toy else 64)
        check_int(self.sample_n, "sample_n", low=1)
        if self.lr is None:
            set_("lr", MLP_LR if self.model == "mlp" else UNET_LR)
        check_real(self.lr, "lr", low=0.0, low_open=True)
        check_real(self.weight_decay, "weight_decay", low=0.0)
        if self.grad_clip is not None:
            check_real(self.grad_clip, "grad_clip", low=0.0, low_open=True)
        check_real(self.ema_decay, "ema_decay", low=0.0, high=1.0, high_open=True)
        if isinstance(self.out, os.PathLike):
            set_("out", os.fspath(self.out))
        if not isinstance(self.out, str) or not self.out:
            raise TypeError(f"out must be a non-empty path string, got {self.out!r}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device must be 'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', "
                                 f"'mps'; got {self.device!r}") from None
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise TypeError(f"bf16 must be None (auto), True or False; got {self.bf16!r}")
        if not isinstance(self.fast, bool):
            raise TypeError(f"fast must be True or False; got {self.fast!r}")

    def to_dict(self) -> dict:
        """A JSON-able dict; ``TrainConfig(**d)`` rebuilds the config."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns: the trained model and its EMA copy (eval mode), the schedule, the loss of
    every step (averaged over processes), and the checkpoint path."""

    model: torch.nn.Module
    ema_model: torch.nn.Module
    sched: NoiseSchedule
    losses: list[float]
    checkpoint: Path


# ------------------------------------------------------------------------------------------ the loop
def train(config: TrainConfig, *, resume: bool = False, data: tuple | None = None,
          progress: bool = True) -> TrainResult:
    """Train a noise predictor as ``config`` says; write checkpoints and sample grids under ``config.out``.

    Args:
        config: the run.
        resume: continue from ``<out>/ckpt.pt`` (the config may differ only in ``RESUME_MAY_CHANGE``).
            Without it, an existing checkpoint there is an error, never overwritten.
        data: optional ``(x, y)`` to train on instead of loading ``config.dataset``: x (N, C, H, W) images in
            [-1, 1] or (N, dim) vectors, y (N,) integer labels (classes = max label + 1) or None.
        progress: show a tqdm bar with the loss and examples per second (rank 0 only).

    Returns:
        A :class:`TrainResult`: the model, its EMA copy, the schedule, the losses and the checkpoint path.

    Raises:
        FloatingPointError: the loss became NaN or inf (the message names the step); the last checkpoint
            written before it stays as it was.

    The random state of the caller is left untouched. Introduced in chapter 4.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be a bool, got {resume!r}")
    env = _setup_distributed(config.device)
    try:
        # rank 0 writes the files: --out must be a writable folder that no other run is using (checked before any
        # work; the lock goes with the process, on exit or crash)
        claim = claim_folder(config.out) if env.rank == 0 else contextlib.nullcontext()
        with claim, torch.random.fork_rng(devices=[env.device.index] if env.device.type == "cuda" else []):
            return _train(config, env, resume, data, progress)
    finally:
        if env.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, env: "_Env", resume: bool, data, progress: bool) -> TrainResult:
    rank, world, device = env.rank, env.world, env.device
    ckpt_path = Path(config.out) / CHECKPOINT_NAME
    use_bf16 = _use_bf16(config, device)
    if not resume and ckpt_path.exists():
        raise FileExistsError(f"{str(ckpt_path)!r} exists: resume it (resume=True, --resume) or choose another out")
    state = _read_resume_state(ckpt_path, config, world) if resume else None     # checked before any work

    # Data: the same set on every process, then each takes its own shard and its own random streams.
    x, y, num_classes = load_training_data(config) if data is None else _check_data(data, config)
    _check_superres(config, x)
    prompts = None
    if config.prompts:                     # captions measured from the pixels (chapter 13), before any encoding
        y, prompts = caption_labels(x, y, generator=torch.Generator().manual_seed(config.seed))
        num_classes = len(prompts)
    if config.latent is not None:
        x = encode_dataset(x, config.latent)                              # (N, c, 7, 7), unit variance
    x, y = x[rank::world], (None if y is None else y[rank::world])
    if len(x) < config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {len(x)} training examples per process")
    data_gen = torch.Generator().manual_seed(_seed(config.seed, rank, stream=0))
    noise_gen = torch.Generator(device).manual_seed(_seed(config.seed, rank, stream=1))
    loader = TensorLoader(x, y, batch_size=config.batch_size, generator=data_gen, device=device)

    # Model, EMA and optimizer: the same initial weights on every process.
    torch.manual_seed(config.seed)
    sched = NoiseSchedule.from_name(config.schedule, T=config.T)
    model = make_model(config, tuple(x.shape[1:]), num_classes, prompts=prompts).to(device)
    if config.fast:
        fast.apply(model)                        # the same function, faster on this device (minidiff.fast)
    loss_sched = fast.schedule_on(sched, device) if config.fast else sched
    ema = EMA(model, config.ema_decay)
    opt = make_optimizer(model, config, device)
    torch.manual_seed(_seed(config.seed, rank, stream=2))               # dropout masks differ per process
    step, losses, position = 0, [], {}
    if state is not None:
        step, losses = state["step"], state["losses"].tolist()
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        position = _set_rng_state(state["rng"][rank], data_gen, noise_gen, device)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    batches = _batches(loader, data_gen, position)
    unit = "img" if x.ndim == 4 else "pts"
    bar = tqdm(total=config.steps, initial=step, desc="train", disable=not progress or rank != 0, dynamic_ncols=True)
    pending, clock, clock_step = [], time.perf_counter(), step
    condition = conditioning(config)
    flow_net = FlowNet(net) if config.objective == "flow" else None

    while step < config.steps:
        x0, labels = next(batches)
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if flow_net is None:
                loss = eps_loss(condition(net, x0), x0, loss_sched, y=labels, p_uncond=config.p_uncond, generator=noise_gen)  # DDPM Alg. 1
            else:
                loss = flow_matching_loss(flow_net, x0, y=labels, p_uncond=config.p_uncond, generator=noise_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        step += 1
        ema.update(model, step)
        pending.append(loss.detach())
        bar.update()

        sample_now = config.sample_every > 0 and (step % config.sample_every == 0 or step == config.steps)
        save_now = step == config.steps or (config.checkpoint_every > 0 and step % config.checkpoint_every == 0)
        if step % config.log_every == 0 or sample_now or save_now:
            losses += _read_losses(pending, step - len(pending), world, ckpt_path)   # host sync; stops on NaN
            rate = (step - clock_step) * config.batch_size * world / max(time.perf_counter() - clock, 1e-9)
            bar.set_postfix({"loss": f"{losses[-1]:.4f}", f"{unit}/s": f"{rate:.0f}"})
            pending, clock, clock_step = [], time.perf_counter(), step
        if sample_now and rank == 0:
            _save_samples(ema.model, sched, config, step, x, num_classes, condition)
        if save_now:
            _check_weights({"weights": model, "EMA weights": ema.model}, x0, labels, sched, step, world, ckpt_path,
                           use_bf16, condition)                     # never keep weights that give NaN
            rng = _gather(_rng_state(data_gen, noise_gen, position, device), world)
            if rank == 0:
                save_checkpoint(ckpt_path, model=model, ema_model=ema.model, optimizer=opt, step=step, sched=sched,
                                train_config=config.to_dict(), sample_shape=x.shape[1:], rng=rng, losses=losses)
        if sample_now or save_now:
            clock = time.perf_counter()                                  # rates exclude sampling and saving
    bar.close()
    for m in (model, ema.model):      # hand back the plain models, NCHW: their outputs then allow .view() as usual
        fast.revert(m)
    return TrainResult(model.eval(), ema.model, sched, losses, ckpt_path)


# ------------------------------------------------------------------------------------------ pieces
def load_training_data(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """``(x, y, num_classes)`` for ``config.dataset``: y and num_classes are None for unconditional runs."""
    if config.dataset in TOY_DATASETS:
        gen = torch.Generator().manual_seed(config.seed)
        return data.toy_2d(config.dataset, config.limit or TOY_POINTS, generator=gen), None, None   # (N, 2)
    x, y = getattr(data, IMAGE_DATASETS[config.dataset])("train")                                 # (N, C, H, W)
    if config.limit is not None:
        x, y = x[:config.limit], y[:config.limit]
    return (x, y, NUM_CLASSES) if config.conditional else (x, None, None)


def _check_data(data, config: TrainConfig):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"data must be a tuple (x, y) with y an integer tensor or None, got {type(data).__name__}")
    x, y = data
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim not in (2, 4):
        raise ValueError(f"data x must be a float tensor (N, dim) or (N, C, H, W), got {x!r:.80}")
    if (x.ndim == 2) != (config.model == "mlp"):
        raise ValueError(f"data x of shape {tuple(x.shape)} does not fit model={config.model!r}")
    if len(x) == 0:
        raise ValueError(f"data x is empty (shape {tuple(x.shape)}); it needs at least one example")
    if not bool(torch.isfinite(x).all()):               # once, here: not a host sync in every step's loss
        bad = (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).nonzero().flatten()
        raise ValueError(f"data x contains NaN or inf values in {len(bad)} of its {len(x)} examples (the first at "
                         f"index {int(bad[0])}); all entries must be finite")
    if config.limit is not None:
        x, y = x[:config.limit], (None if y is None else y[:config.limit])
    if not config.conditional:
        return x, None, None
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.shape != (len(x),):
        raise ValueError(f"conditional=True needs data y, an integer tensor of shape ({len(x)},), got {y!r:.80}")
    if int(y.min()) < 0:
        raise ValueError(f"data y must hold labels >= 0, got {int(y.min())}")
    return x, y.long(), int(y.max()) + 1


def make_model(config: TrainConfig, sample_shape: tuple[int, ...], num_classes: int | None, *,
               prompts: list[str] | None = None) -> torch.nn.Module:
    """A fresh model for examples of ``sample_shape`` ((C, H, W) or (dim,)), as ``config`` says (a text-conditional
    one over the table ``prompts`` when given)."""
    if prompts is not None:
        unet = {**PRESETS[config.model], "in_channels": sample_shape[0], **config.model_kwargs}
        return TextConditionedUNet(prompts=prompts, unet=unet)
    if config.model == "mlp":
        return MLPDenoiser(dim=sample_shape[0], num_classes=num_classes, **config.model_kwargs)
    if config.superres:           # SR3: (x_t, upsampled low-res image) in, the noise of x_t out
        return UNet.from_preset(config.model, in_channels=2 * sample_shape[0], out_channels=sample_shape[0],
                                num_classes=num_classes, **config.model_kwargs)
    return UNet.from_preset(config.model, in_channels=sample_shape[0], num_classes=num_classes,
                            **config.model_kwargs)


def conditioning(config: TrainConfig):
    """``condition(model, x0)``: the model as the loss and the samplers call it for the clean batch ``x0`` —
    the model itself, or for an SR3 run the model with ``x0``'s low-resolution version bound to it; a flow model
    as an eps-model on the run's schedule (for the sample grids and the checks)."""
    if config.objective == "flow":
        sched = NoiseSchedule.from_name(config.schedule, T=config.T)
        return lambda model, x0: FlowAsEps(FlowNet(model), sched)
    if not config.superres:
        return lambda model, x0: model
    f = config.superres
    return lambda model, x0: LowResConditioned(model, downsample(x0, f), f)


def _check_superres(config: TrainConfig, x: torch.Tensor) -> None:
    if config.superres and (x.shape[-1] % config.superres or x.shape[-2] % config.superres):
        raise ValueError(f"superres={config.superres} must divide the image size {tuple(x.shape[-2:])}")


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on weight matrices and kernels only, not on biases and norms (as nanoGPT)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all parameters in one pass (CUDA and CPU); MPS keeps the default.
    adamw = fast.AdamW if config.fast else torch.optim.AdamW
    return adamw(groups, lr=config.lr, fused=True if device.type in ("cuda", "cpu") else None)


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate for the step after ``step`` steps: linear warm-up to ``config.lr``, then constant."""
    return config.lr * min(1.0, (step + 1) / config.warmup) if config.warmup else config.lr


def _use_bf16(config: TrainConfig, device: torch.device) -> bool:
    if config.bf16 and device.type != "cuda":
        raise ValueError(f"bf16=True needs a CUDA device (bfloat16 autocast is used on CUDA only); got {device}")
    if config.bf16 is not None:
        return config.bf16
    # Default: on from Ampere (compute capability 8) on; older GPUs such as the T4 only emulate bfloat16.
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def _batches(loader, generator: torch.Generator, position: dict):
    """Endless batches. ``position`` (updated in place) holds the generator state at the start of the current
    epoch and the number of batches taken from it, so a resumed run replays the same order and skips ahead."""
    skip = position.get("batch", 0)
    if "epoch_state" in position:
        generator.set_state(position["epoch_state"])
    while True:
        position["epoch_state"], position["batch"] = generator.get_state(), 0
        for i, batch in enumerate(loader):
            position["batch"] = i + 1
            if i >= skip:
                yield batch
        skip = 0


def _read_losses(pending: list[torch.Tensor], first_step: int, world: int, ckpt_path: Path) -> list[float]:
    """The pending per-step losses as floats (averaged over processes); a NaN or inf stops training."""
    values = torch.stack(pending).float()                                            # (k,)
    if world > 1:
        dist.all_reduce(values)
        values /= world
    values = values.tolist()
    for i, value in enumerate(values):
        if not math.isfinite(value):
            kept = f"the last good checkpoint {str(ckpt_path)!r} is left as it was" if ckpt_path.exists() \
                else "no checkpoint was written"
            raise FloatingPointError(f"the loss became {value} at step {first_step + i + 1}; training stopped "
                                     f"and {kept}. Try a lower lr or grad_clip.")
    return values


@torch.no_grad()
def _check_weights(models: dict, x0: torch.Tensor, labels, sched: NoiseSchedule, step: int, world: int,
                   ckpt_path: Path, use_bf16: bool, condition=lambda model, x0: model) -> None:
    """Stop before a checkpoint of weights that give NaN or inf: each model (the weights, the EMA) must be finite,
    give a finite loss on the last batch and draw finite samples of sane size in a short DDIM run (eval mode, its
    own noise stream: the run's random state is not touched). One host sync per checkpoint.

    The loss of step k is computed before update k, so an update that blows the weights up shows in no loss
    yet; without this check the checkpoint would keep exactly those weights. The last good one is left as it
    was."""
    gen = torch.Generator(x0.device).manual_seed(0)
    # A model whose noise predictions are of order 1 keeps |x0_hat| = |x_t - sqrt(1 - a) eps| / sqrt(a) below about
    # 10 / sqrt(alpha_bar_T) all along the run; samples beyond 100 times that come from predictions that have
    # blown up, and a longer run from them overflows. (Zero terminal SNR: finite is all that is asked.)
    a_T = float(sched.alpha_bars[-1])
    bound = 1e3 / math.sqrt(a_T) if a_T > 0 else math.inf
    bad = []
    for label, m in models.items():
        was_training = m.training
        m.eval()
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = eps_loss(condition(m, x0), x0, sched, y=labels, generator=gen)
            n = min(4, len(x0))
            try:
                few = ddim_sample(condition(m, x0[:n]), (n, *x0.shape[1:]), sched, steps=min(8, sched.T), generator=gen,
                                  y=None if labels is None else labels[:n])            # a short DDIM run
                sane = few.abs().max() <= bound                                         # NaN fails too
            except FloatingPointError:                                                  # a NaN/inf prediction
                sane = torch.tensor(False, device=x0.device)
        m.train(was_training)
        finite = torch.stack([torch.isfinite(p).all() for p in m.state_dict().values() if p.is_floating_point()])
        bad.append(~(finite.all() & torch.isfinite(loss) & sane))
    bad = torch.stack(bad).to(torch.int32)                                           # (2,)
    if world > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    for label, is_bad in zip(models, bad.tolist()):
        if is_bad:
            kept = f"the last good checkpoint {str(ckpt_path)!r} is left as it was" if ckpt_path.exists() \
                else "no checkpoint was written"
            raise FloatingPointError(f"the {label} after step {step} give NaN or inf (in the loss or in a short "
                                     f"sampling run); training stopped and "
                                     f"{kept}. Try a lower lr or grad_clip.")


@torch.no_grad()
def _save_samples(ema_model, sched: NoiseSchedule, config: TrainConfig, step: int, x: torch.Tensor,
                  num_classes: int | None, condition=lambda model, x0: model) -> None:
    """Draw ``sample_n`` samples with DDIM from the EMA model (fixed noise, so grids compare across steps); an
    SR3 model super-resolves the first ``sample_n`` training images."""
    n = min(config.sample_n, len(x)) if config.superres else config.sample_n
    y = torch.arange(n) % num_classes if num_classes else None        # (n,) every class in turn, one per column
    gen = torch.Generator().manual_seed(config.seed)
    device = next(ema_model.parameters()).device
    model = condition(ema_model, x[:n].to(device))                    # an SR3 model: the first n images, low-res
    samples = ddim_sample(model, (n, *x.shape[1:]), sched, steps=config.sample_steps, y=y, generator=gen,
                          device=device)
    path = Path(config.out) / "samples" / f"step_{step:07d}.png"
    if config.latent is not None:
        samples = LatentModel(ema_model, *autoencoder_for(config.latent)).decode(samples)   # (n, 1, 28, 28)
    if x.ndim == 2:
        save_scatter_2d(samples, path, reference=x[:n].cpu(), title=f"{config.dataset}, step {step}")
    else:
        save_image_grid(samples, path, nrow=num_classes)


# ------------------------------------------------------------------------------------------ resume
def _read_resume_state(path: Path, config: TrainConfig, world: int) -> dict:
    """The checkpoint to resume from, after checking it belongs to this run (nothing is written here)."""
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {str(path)!r} does not exist; start without resume")
    state = read_checkpoint(path)
    if is_exported(state):
        raise CheckpointError(f"cannot resume {str(path)!r}: it was exported for sampling and holds no optimizer "
                              "or random states; resume from the run's own ckpt.pt")
    now = config.to_dict()
    added = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in ADDED_LATER}
    saved = {**added, **state["config"]["train"]}          # a field added later has its default in older files
    diffs = [f"{k}: checkpoint {saved.get(k, '<missing>')!r}, now {v!r}"
             for k, v in now.items() if k not in RESUME_MAY_CHANGE and saved.get(k, "<missing>") != v]
    if diffs:
        raise CheckpointError(f"cannot resume {str(path)!r}: the config differs from the checkpoint's in "
                              f"{'; '.join(diffs)}. Only {', '.join(RESUME_MAY_CHANGE)} may change on resume.")
    if len(state["rng"]) != world:
        raise CheckpointError(f"cannot resume {str(path)!r}: it was written by {len(state['rng'])} processes, "
                              f"this run has {world}")
    if state["step"] > config.steps:
        raise ValueError(f"steps={config.steps} is below the checkpoint's step {state['step']}")
    return state


def _rng_state(data_gen, noise_gen, position: dict, device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "noise": noise_gen.get_state(),
            "data_epoch": position["epoch_state"], "data_batch": position["batch"]}


def _set_rng_state(rng: dict, data_gen, noise_gen, device: torch.device) -> dict:
    """Restore the random streams; returns the data position for :func:`_batches`."""
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)
    noise_gen.set_state(rng["noise"])
    return {"epoch_state": rng["data_epoch"], "batch": int(rng["data_batch"])}


def _seed(seed: int, rank: int, *, stream: int) -> int:
    """Independent seeds per (run seed, process, stream) via NumPy's SeedSequence."""
    return int(np.random.SeedSequence(seed, spawn_key=(rank, stream)).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------------------ processes
@dataclass(frozen=True)
class _Env:
    rank: int
    world: int
    device: torch.device
    owns_group: bool


def _setup_distributed(device_name: str) -> _Env:
    """One process, or one of ``WORLD_SIZE`` started by torchrun (nccl on CUDA, gloo on the CPU)."""
    device = default_device() if device_name == "auto" else torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device_name!r} but CUDA is not available; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device_name!r} but MPS is not available; use 'auto' or 'cpu'")
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be an int, got {os.environ['WORLD_SIZE']!r}") from None
    if world <= 1 and not dist.is_initialized():
        return _Env(0, 1, device, False)
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"multi-process training runs on CUDA (nccl) or the CPU (gloo), got device {device}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Env(dist.get_rank(), dist.get_world_size(), device, owns)


def _gather(obj, world: int) -> list:
    """``[obj from rank 0, obj from rank 1, ...]`` on every process (a collective)."""
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
