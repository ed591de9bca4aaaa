"""Checkpoints: one file holds a training run's state, and rebuilds its model for sampling.

A checkpoint is a ``torch.save`` of a dict made only of tensors, numbers, strings and plain containers, so it
loads with ``torch.load(weights_only=True)``: loading never runs code from the file. The configuration (model
class and constructor arguments, schedule betas, training config) is stored as one JSON string inside. A
SHA-256 digest of everything else detects a damaged file, which the zip container alone does not. Files are
written atomically: a temporary file in the same folder, flushed to disk, then renamed over the old one, so a
crash mid-write leaves the previous checkpoint intact. ::

    # the EMA weights, ready to sample
    model, sched, config = minidiff.load_model("checkpoints/toy-2d.pt")
"""
from __future__ import annotations

import hashlib
import inspect
import json
import pickle
from pathlib import Path

import torch

from ._io import atomic_write
from ._validate import check_choice
from .mlp import MLPDenoiser
from .runtime import default_device
from .schedules import NoiseSchedule
from .unet import UNet

FORMAT = "minidiff-checkpoint"
VERSION = 1
KEYS = ("format", "version", "config", "step", "model", "ema", "optimizer", "rng", "losses", "digest")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: truncated, corrupt, unsafe, incomplete or from a different run."""


# ------------------------------------------------------------------------------------------ models
def _model_classes() -> dict:
    from .text import TextConditionedUNet

    return {"UNet": UNet, "MLPDenoiser": MLPDenoiser, "TextConditionedUNet": TextConditionedUNet}


def model_spec(model: torch.nn.Module) -> dict:
    """``{"class": name, "config": kwargs}``: what :func:`build_model` needs to rebuild ``model``."""
    name = type(model).__name__
    if name not in _model_classes():
        raise TypeError(f"model must be one of {', '.join(_model_classes())} to be checkpointed, got {name}")
    config = dict(model.config)
    json.dumps(config)                                   # fails loudly if a constructor argument is not JSON-able
    return {"class": name, "config": config}


MAX_PARAMETERS = 2_000_000_000       # 8 GB of float32 weights: far beyond any model here, far below a bad config


def build_model(spec: dict, *, source: str = "the model spec") -> torch.nn.Module:
    """A freshly initialised model from a :func:`model_spec` dict.

    The spec is checked before anything is allocated: a known class, keyword arguments its constructor takes,
    values it accepts, and at most ``MAX_PARAMETERS`` parameters (counted on the ``meta`` device, which stores
    no data). Any failure is a :class:`CheckpointError` naming ``source`` (the file)."""
    classes = _model_classes()
    if not isinstance(spec, dict) or spec.get("class") not in classes or not isinstance(spec.get("config"), dict):
        raise CheckpointError(f"{source}: model spec must be {{'class': one of {list(classes)}, 'config': dict}}, "
                              f"got {spec!r:.200}")
    cls, config = classes[spec["class"]], spec["config"]
    allowed = [name for name in inspect.signature(cls).parameters]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise CheckpointError(f"{source}: the {spec['class']} config has unknown arguments {unknown}; "
                              f"{spec['class']} takes {allowed}")
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(**config).parameters())
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: the {spec['class']} config is not valid: {e}") from None
    if count > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: the {spec['class']} config asks for {count:,} parameters, more than "
                              f"the {MAX_PARAMETERS:,} allowed; the file is damaged or not a minidiff model")
    return cls(**config)


# ------------------------------------------------------------------------------------------ save
def save_checkpoint(path, *, model: torch.nn.Module, ema_model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, step: int, sched: NoiseSchedule, train_config: dict,
                    sample_shape: tuple[int, ...], rng: list, losses: list[float]) -> Path:
    """Write a training run's state to ``path`` atomically; returns the path.

    Args:
        model, ema_model: the trained model and its EMA copy (unwrapped modules).
        sample_shape: the shape of one example, (C, H, W) or (dim,).
        step: optimizer steps taken. rng: the random-number states needed to continue exactly (per process).
        train_config: the JSON-able training configuration. losses: the per-step loss history.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": json.dumps({"model": model_spec(model), "schedule": sched.config(), "train": train_config,
                              "sample_shape": [int(s) for s in sample_shape]}),
        "step": int(step),
        "model": _cpu(model.state_dict()),
        "ema": _cpu(ema_model.state_dict()),
        "optimizer": _cpu(optimizer.state_dict()),
        "rng": _cpu(rng),
        "losses": torch.tensor(losses, dtype=torch.float64),
    }
    return _write_atomic(payload, path)


EXPORT_WEIGHTS = ("both", "ema")
EXPORT_DTYPES = ("float32", "float16")


def export_for_sampling(src, dst, *, weights: str = "both", dtype: str = "float32") -> Path:
    """Copy a checkpoint without its optimizer and random states: a smaller file for sampling only.

    The config, the step and the loss history are kept, so :func:`load_model` works as before; training cannot
    be resumed from the exported file (a clear error says so).

    Args:
        src: the checkpoint to copy.
        dst: the file to write (atomically).
        weights: ``"both"`` keeps the training and the EMA weights; ``"ema"`` only the EMA weights, which is
            what sampling uses (``load_model(..., ema=False)`` then raises a clear error).
        dtype: ``"float16"`` stores the parameters in half precision (half the bytes; a rounding of about 5e-4
            relative, below what a trained model's samples show) and :func:`load_model` returns a float32 model
            as usual. ``"float32"`` keeps them as they are.

    Returns:
        The path of the written file.
    """
    check_choice(weights, "weights", EXPORT_WEIGHTS)
    check_choice(dtype, "dtype", EXPORT_DTYPES)
    payload = read_checkpoint(src)
    params = {name for name, _ in build_model(payload["config"]["model"], source=f"checkpoint {str(src)!r}").named_parameters()}

    def cast(state: dict) -> dict:            # parameters only: buffers (if any) keep their precision
        if dtype == "float32":
            return state
        return {k: v.half() if k in params and v.is_floating_point() else v for k, v in state.items()}

    payload = {**payload, "config": json.dumps(payload["config"]), "optimizer": {}, "rng": [],
               "model": {} if weights == "ema" else cast(payload["model"]), "ema": cast(payload["ema"])}
    return _write_atomic(payload, dst)


def is_exported(payload: dict) -> bool:
    """True for a checkpoint written by :func:`export_for_sampling` (no optimizer state)."""
    return not payload["optimizer"]


def _write_atomic(payload: dict, path) -> Path:
    """Seal ``payload`` with its digest and write it to ``path``: temp file, fsync, rename."""
    payload = {k: v for k, v in payload.items() if k != "digest"}
    payload["digest"] = _digest(payload)
    return atomic_write(path, lambda f: torch.save(payload, f))


# ------------------------------------------------------------------------------------------ load
def read_checkpoint(path) -> dict:
    """Load and verify a checkpoint (on the CPU). The ``"config"`` entry comes back parsed into a dict.

    Raises ``FileNotFoundError`` if there is no file and :class:`CheckpointError` (a ``ValueError``) if it is
    truncated, corrupt, not a minidiff checkpoint, missing entries, or holds pickled objects other than
    tensors and plain containers (``torch.load(weights_only=True)`` refuses those; we never retry unsafely).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was rejected by torch.load(weights_only=True): it is corrupt or holds "
            f"pickled Python objects other than tensors and plain containers, which minidiff never loads "
            f"({str(e).splitlines()[0][:200]})") from e
    except Exception as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt: torch.load failed with "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a minidiff checkpoint (no format={FORMAT!r} entry)")
    missing = [k for k in KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is missing entries {missing}; a complete one has {list(KEYS)}")
    if payload["version"] != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} has format version {payload['version']!r}; "
                              f"this minidiff reads version {VERSION}")
    if payload["digest"] != _digest(payload):
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its contents do not match the SHA-256 "
                              "digest stored in it")
    try:
        config = json.loads(payload["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unreadable config entry: {e}") from e
    missing = [k for k in ("model", "schedule", "train", "sample_shape") if k not in config]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} config is missing {missing}")
    return {**payload, "config": config}


def load_model(path, *, ema: bool = True, device=None) -> tuple[torch.nn.Module, NoiseSchedule, dict]:
    """Rebuild the model saved in a checkpoint, ready to sample.

    Args:
        path: a file written by the trainer (``python -m minidiff train``).
        ema: load the EMA weights (default; what samples should use) or, if False, the raw training weights.
        device: where to put the model; default :func:`minidiff.default_device`.

    Returns:
        ``(model, sched, config)``: the model (``UNet`` or ``MLPDenoiser``, in eval mode; a
        :class:`~minidiff.latent.LatentModel` around the U-Net for a run trained on latents), its
        :class:`NoiseSchedule`, and the stored configuration dict: ``"model"`` (class and constructor
        arguments), ``"schedule"``, ``"train"`` (the training config), ``"sample_shape"`` (one example's
        shape, e.g. ``[1, 28, 28]`` or ``[2]``) and ``"step"`` (optimizer steps trained).

    Introduced in chapter 4.
    """
    if not isinstance(ema, bool):
        raise TypeError(f"ema must be a bool, got {ema!r}")
    payload = read_checkpoint(path)
    config = payload["config"]
    model = build_model(config["model"], source=f"checkpoint {str(path)!r}")
    if not ema and not payload["model"]:
        raise CheckpointError(f"checkpoint {str(path)!r} was exported with its EMA weights only "
                              "(export --weights ema): load it with ema=True")
    weights = payload["ema" if ema else "model"]
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {str(path)!r} holds NaN or inf {'EMA ' if ema else ''}weights (in "
                              f"{bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}); it cannot sample")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} weights do not fit its model config: {e}") from e
    sched = NoiseSchedule.from_config(config["schedule"])
    device = default_device() if device is None else torch.device(device)
    model = model.to(device).eval()
    latent = config.get("train", {}).get("latent")
    if latent:                                   # a latent-diffusion run (chapter 12): sample latents, decode them
        from .latent import LatentModel, autoencoder_for

        model = LatentModel(model, *autoencoder_for(latent, device=device))
    return model, sched, {**config, "step": payload["step"]}


# ------------------------------------------------------------------------------------------ helpers
def _cpu(obj):
    """A copy of a nested dict/list of tensors with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _digest(payload: dict) -> str:
    """SHA-256 over every entry except ``"digest"``: keys, tensor dtypes, shapes and bytes, other values' repr."""
    h = hashlib.sha256()

    def visit(obj, key: str) -> None:
        if isinstance(obj, dict):
            for k in sorted(obj, key=str):
                visit(obj[k], f"{key}/{k}")
        elif isinstance(obj, (list, tuple)):
            h.update(f"{key}:{type(obj).__name__}[{len(obj)}]".encode())
            for i, v in enumerate(obj):
                visit(v, f"{key}/{i}")
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        else:
            h.update(f"{key}={obj!r}".encode())

    visit({k: v for k, v in payload.items() if k != "digest"}, "")
    return h.hexdigest()

