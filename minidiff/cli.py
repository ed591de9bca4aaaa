"""Command line: ``minidiff {demo,train,sample,evaluate,train-classifier,train-autoencoder,export,train-gan,
sample-gan}``, or ``python -m minidiff ...``.

``demo`` (the default) samples a small 2D data set with the exact :class:`~minidiff.OracleDenoiser` — DDPM
and DDIM, no training — and reports how close the samples land to the data.

Bad input gets one line on stderr, ``<prog> <command>: error: <what was wrong>``, and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import math
import os
import re
import sys
import time
from pathlib import Path

import torch

from . import __version__, fast
from .oracle import OracleDenoiser
from .samplers import ddim_sample, ddpm_sample
from .solvers import nfe, solver_sample
from .schedules import SCHEDULE_NAMES, NoiseSchedule

# What a command may raise for bad input (arguments, files): reported in one line, exit status 2.
INPUT_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)


# ------------------------------------------------------------------------------------------ shared pieces
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``<prog>: error: <message> (see <prog> --help)``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def prog_name(argv0: str | None = None) -> str:
    """The name the program was started by: ``python -m minidiff`` for ``python -m minidiff`` (argv[0] is then
    the package's ``minidiff/__main__.py``), ``minidiff`` for the console script or anything else."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    return "python -m minidiff" if path.name == "__main__.py" and path.parent.name == "minidiff" else "minidiff"


def _examples(prog: str, *lines: str) -> str:
    """An epilog of example command lines, each starting with the program's name."""
    return "examples:\n" + "\n".join(f"  {prog} {line}" for line in lines)


PROMPTS_MODEL = "fashion-mnist-prompts"               # the shipped text-conditional model (chapter 13)
PROMPT_GUIDANCE = 3.0                                   # its default guidance scale: class agreement 0.935 there


def shipped_models() -> list[str]:
    """The names ``--ckpt`` accepts for the models that ship with the package (``fashion-mnist-cond``, ...)."""
    from .pretrained import SHA256

    return sorted(name[:-len(".pt")] for name in SHA256 if name.endswith(".pt"))


def is_text_model(config: dict) -> bool:
    """Whether a checkpoint's config is that of a text-conditional model (trained with ``--prompts``)."""
    return bool((config.get("train") or {}).get("prompts", False))


def checkpoint_path(value: str) -> Path:
    """``--ckpt``: an existing file, else a shipped model's name (``toy-2d`` or ``toy-2d.pt``) found through
    :func:`minidiff.pretrained.pretrained`."""
    from .pretrained import pretrained as find_pretrained

    if Path(value).is_file():
        return Path(value)
    shipped = [f"{model}.pt" for model in shipped_models()]
    name = value if value.endswith(".pt") else f"{value}.pt"
    if name in shipped:
        return find_pretrained(name)
    raise FileNotFoundError(f"--ckpt {value!r} does not exist as a file and is not a shipped model "
                            f"({', '.join(shipped)}; the .pt may be left out)")


def refuse_shipped(path, force: bool) -> None:
    """Check ``--out`` before any work: writing over a file of the shipped, checksum-pinned ``checkpoints/`` folder
    needs ``--force``, and the file must be writable (its folder is made if need be)."""
    from ._io import check_writable
    from .pretrained import CHECKPOINTS

    path = Path(path)
    if not force and path.exists() and path.resolve().parent == CHECKPOINTS.resolve():
        raise FileExistsError(f"--out {str(path)!r} would overwrite a shipped file in {CHECKPOINTS}; choose "
                              "another path, or pass --force to replace it")
    check_writable(path)


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="allow --out to replace a file in the shipped checkpoints/ folder")


def class_names(config: dict, num_classes: int) -> list[str] | None:
    """The class names of a checkpoint's data set, or None when its labels have no known names."""
    from . import data

    names = {"fashion-mnist": data.FASHION_MNIST_CLASSES, "mnist": data.MNIST_CLASSES,
             "cifar10": data.CIFAR10_CLASSES}.get(config.get("train", {}).get("dataset", "fashion-mnist"))
    return names if names is not None and len(names) == num_classes else None


def parse_label(value: str, names: list[str] | None, num_classes: int) -> int:
    """``--label``: a class index, or a class name (case-insensitive; a unique prefix is enough)."""
    allowed = f"a class index in [0, {num_classes - 1}]"
    if names:
        allowed += f" or a class name ({', '.join(names)}; case-insensitive, a unique prefix is enough)"
    if value.strip().lstrip("-").isdigit():
        if 0 <= int(value) < num_classes:
            return int(value)
    elif names:
        key = value.strip().casefold()
        matches = [i for i, name in enumerate(names) if name.casefold() == key] or \
                  [i for i, name in enumerate(names) if name.casefold().startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"--label {value!r} is ambiguous: it could be {', '.join(names[i] for i in matches)}")
    raise ValueError(f"--label must be {allowed}; got {value!r}")


ODE_SOLVERS = {"euler": "Euler", "heun": "Heun", "dpmpp_2m": "DPM++(2M)"}    # chapter 11, on EDM's sigmas

def device_arg(value: str) -> str:
    """argparse ``type`` of ``--device``: a torch device string whose kind of device this machine has."""
    try:
        kind = torch.device(value).type
    except (RuntimeError, TypeError):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device (use e.g. cpu, cuda, cuda:1, mps)") from None
    mps = getattr(torch.backends, "mps", None)
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not (mps and mps.is_available())):
        raise argparse.ArgumentTypeError(f"{value!r}: this machine has no {kind.upper()} device")
    return value


def check_ddim_options(args: argparse.Namespace) -> None:
    """``--steps`` and ``--eta`` are DDIM's (``--steps`` also the ODE solvers'); DDPM takes all T steps, and
    the ODE solvers add no noise and do not clip their x_0 estimate."""
    given = [f"--{name}" for name in ("steps", "eta") if getattr(args, name) is not None]
    if args.sampler == "ddpm" and given:
        verb = "applies" if len(given) == 1 else "apply"
        raise ValueError(f"{' and '.join(given)} {verb} to --sampler ddim only (DDPM takes all T steps)")
    if args.sampler in ODE_SOLVERS:
        if args.eta is not None:
            raise ValueError(f"--eta applies to --sampler ddim only (--sampler {args.sampler} solves the "
                             "probability-flow ODE: it adds no noise)")
        if getattr(args, "clip_x0", None) is not None:
            raise ValueError(f"--clip-x0 applies to --sampler ddim and ddpm only (--sampler {args.sampler} "
                             "steps with the unclipped x_0 estimate)")


@contextlib.contextmanager
def progress_bar(total: int, desc: str, quiet: bool):
    """A sampler ``callback(i, t, x_t, x0_hat)`` that advances a tqdm bar on stderr by one step per call.

    The bar appears at the first step, so an error raised before sampling starts stays the only line printed.
    """
    from tqdm import tqdm

    bar = None

    def step(i, t, x_t, x0_hat):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="step", disable=quiet, dynamic_ncols=True)
        bar.update()

    try:
        yield step
    finally:
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------------------ demo
def _ring_points(n: int) -> torch.Tensor:
    """n points evenly spaced on the unit circle, shape (n, 2)."""
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    return torch.stack([angle.cos(), angle.sin()], dim=1)


def demo(args: argparse.Namespace) -> int:
    sched = NoiseSchedule.from_name(args.schedule, T=args.T)
    points = _ring_points(8)                                               # (8, 2)
    oracle = OracleDenoiser(points, sched)
    gen = torch.Generator().manual_seed(args.seed)
    print(f"{sched}\nData: 8 points on the unit circle. Exact denoiser, {args.n} samples per sampler.\n")
    print(f"{'sampler':<22}{'model calls':>12}{'seconds':>10}{'max dist to data':>18}{'points hit':>12}")
    runs = [("DDPM", dict(fn=ddpm_sample, calls=sched.T))]
    runs += [(f"DDIM-{s} (eta=0)", dict(fn=ddim_sample, steps=s, calls=s)) for s in (10, 50)]
    for name, spec in runs:
        fn, calls = spec.pop("fn"), spec.pop("calls")
        start = time.perf_counter()
        x0 = fn(oracle, (args.n, 2), sched, generator=gen, dtype=torch.float64, **spec)   # (n, 2)
        seconds = time.perf_counter() - start
        dist = torch.cdist(x0, points)                                     # (n, 8)
        hit = dist.argmin(dim=1).unique().numel()
        print(f"{name:<22}{calls:>12}{seconds:>10.2f}{float(dist.min(dim=1).values.max()):>18.2e}{hit:>10}/8")
    return 0


def _add_demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="sample a 2D data set with the exact denoiser (no training; the default)",
                       description="Sample 8 points on a circle with the exact denoiser (no training), with DDPM "
                                   "and DDIM, on the CPU in float64.")
    p.add_argument("--schedule", default="cosine", choices=SCHEDULE_NAMES, help="noise schedule (default: cosine)")
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps (default: 1000)")
    p.add_argument("--n", type=int, default=512, help="samples per sampler (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.set_defaults(func=demo)


# ------------------------------------------------------------------------------------------ train
def _field_help(cls) -> dict[str, str]:
    """The ``Args:`` entries of a dataclass's docstring, one line each, without reST markup or final period."""
    doc = inspect.getdoc(cls).split("Args:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=    \w+: )", "\n" + doc)[1:]
    plain = lambda text: re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(text.replace("``", "").split()))  # noqa: E731
    return {name: plain(text).rstrip(".") for name, text in
            (entry.strip().split(": ", 1) for entry in entries)}


# How `train` shows TrainConfig's fields (every field but model_kwargs is an option; help from the docstring).
TRAIN_GROUPS = {"dataset": "data and model", "steps": "optimisation", "out": "output"}   # first field of each
TRAIN_METAVARS = {"limit": "N", "p_uncond": "P", "out": "DIR", "log_every": "K", "sample_every": "K",
                  "sample_n": "N", "checkpoint_every": "K"}


def _add_train_parser(sub, prog: str) -> None:
    from .train import DATASETS, MLP_LR, MODELS, OBJECTIVES, RESUME_MAY_CHANGE, TOY_DATASETS, UNET_LR, TrainConfig

    may_change = ", ".join("--" + name.replace("_", "-") for name in RESUME_MAY_CHANGE)
    p = sub.add_parser(
        "train", help="train a noise predictor (U-Net on images, MLP on 2D toy data)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a noise predictor with L_simple (DDPM Algorithm 1): AdamW, EMA of the weights, sample "
                    "grids\nand checkpoints in --out. Runs on CUDA, MPS or the CPU, whichever is there (bf16 "
                    "autocast on\nCUDA GPUs of compute capability >= 8). Under `torchrun --nproc_per_node N` the "
                    "same command\ntrains on N processes (DDP).",
        epilog=_examples(prog, "train --dataset 8gaussians --steps 3000 --out runs/toy",
                         "train --dataset fashion-mnist --model tiny --conditional --steps 20000 --out runs/fmnist",
                         "train --out runs/fmnist --resume --steps 40000     # continue a run")
               + "\n  torchrun --nproc_per_node 4 -m minidiff train --dataset cifar10 --model ddpm-cifar10 "
                 "--out runs/cifar")
    choices = {"dataset": DATASETS, "model": MODELS, "schedule": SCHEDULE_NAMES, "objective": OBJECTIVES}
    shown_defaults = {"lr": f"{MLP_LR:g} for the 2D MLP, {UNET_LR:g} for U-Nets", "out": "runs/<dataset>",
                      "model": f"{TrainConfig.model} for images, mlp for {', '.join(TOY_DATASETS)}"}
    docs = _field_help(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "model_kwargs":
            continue
        group = p.add_argument_group(TRAIN_GROUPS[f.name]) if f.name in TRAIN_GROUPS else group
        text = docs[f.name]
        if f.name in shown_defaults or (f.default is not None and "(default:" not in text):
            text = re.sub(r"\s*\(default: (?:[^()]|\([^()]*\))*\)", "", text)
            text += f" (default: {shown_defaults.get(f.name, f.default)})"
        kind = f.type.split(" | ")[0]
        options = dict(action=argparse.BooleanOptionalAction) if kind == "bool" else \
            dict(type={"int": int, "float": float, "str": str}[kind], metavar=TRAIN_METAVARS.get(f.name),
                 choices=choices.get(f.name))
        group.add_argument("--" + f.name.replace("_", "-"), default=None, help=text.replace("%", "%%"), **options)
    group.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint (options given here override its "
                            f"config; only {may_change} may change)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .checkpoint import read_checkpoint
    from .train import CHECKPOINT_NAME, TOY_DATASETS, TrainConfig, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name, None) is not None}
    if given.get("grad_clip") == 0:
        given["grad_clip"] = None
    dataset = given.get("dataset", TrainConfig.dataset)
    given.setdefault("out", f"runs/{dataset}")
    if args.resume:      # start from the checkpoint's config; options given here override it
        saved = read_checkpoint(Path(given["out"]) / CHECKPOINT_NAME)["config"]["train"]
        given = {**saved, **given}
    elif dataset in TOY_DATASETS:
        given.setdefault("model", "mlp")
    config = TrainConfig(**given)
    start = time.perf_counter()
    result = train(config, resume=args.resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":
        tail = result.losses[-min(100, len(result.losses)):]
        print(f"trained {config.model} on {config.dataset} for {config.steps} steps in "
              f"{time.perf_counter() - start:.1f} s; mean loss of the last {len(tail)} steps {sum(tail) / len(tail):.4f}")
        print(f"checkpoint: {result.checkpoint}")
    return 0


# ------------------------------------------------------------------------------------------ sample
def _add_sample_parser(sub, prog: str) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained checkpoint and save them as a PNG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw samples from a checkpoint's EMA model with DDIM or DDPM and write a PNG: an image grid "
                    "for image\nmodels (one column per class for conditional ones), a scatter plot for 2D models.",
        epilog=_examples(prog, "sample --ckpt toy-2d --out toy.png",
                         "sample --ckpt fashion-mnist-cond --guidance 3 --label Bag --n 16 --out bags.png",
                         "sample --ckpt fashion-mnist-cond --sampler dpmpp_2m --steps 10 --guidance 3 --out fast.png",
                         'sample --prompt "a dark ankle boot" --out boots.png',
                         "sample --ckpt runs/fmnist/ckpt.pt --sampler ddpm --out ddpm.png"))
    p.add_argument("--ckpt", metavar="PATH",
                   help=f"checkpoint written by `train`, or a shipped model: {', '.join(shipped_models())} "
                        f"(required, except with --prompt, which defaults to {PROMPTS_MODEL})")
    p.add_argument("--sampler", choices=("ddim", "ddpm", *ODE_SOLVERS), default="ddim",
                   help="sampler: ddim, ddpm, or one of chapter 11's ODE solvers on EDM's sigma schedule "
                        "(euler, heun, dpmpp_2m = DPM-Solver++(2M)) (default: ddim)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: 50, at most T) or ODE solver steps (default: "
                                             "10; heun calls the model 2 S - 1 times); DDPM takes all T steps")
    p.add_argument("--eta", type=float, help="DDIM noise level: 0 deterministic, 1 DDPM-like (default: 0)")
    p.add_argument("--guidance", type=float, metavar="S",
                   help="classifier-free guidance scale s: 1 plain conditional, 0 unconditional (default: 1; "
                        f"{PROMPT_GUIDANCE:g} for a text-conditional model, the scale chapter 13 measures it at)")
    p.add_argument("--label", metavar="CLASS",
                   help="class of every sample: an index or a name such as Bag or sneaker (case-insensitive, a "
                        "unique prefix is enough); default: all classes in turn; conditional models only")
    p.add_argument("--prompt", metavar="TEXT",
                   help='text of every sample, e.g. "a dark ankle boot" (text-conditional models, trained with '
                        '--prompts); default: each prompt of the model\'s table in turn')
    p.add_argument("--negative-prompt", metavar="TEXT", default="",
                   help="the prompt that guidance steers away from, in place of the empty prompt (default: none)")
    p.add_argument("--n", type=int, help="number of samples (default: 64 images, 2000 points)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--clip-x0", type=float, metavar="B", help="clip the predicted x_0 to [-B, B] (default: no clip)")
    p.add_argument("--raw-weights", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", type=device_arg, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", default="samples.png", metavar="PNG", help="output image (default: samples.png)")
    _add_force(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=sample_command)


def _sample_labels(args: argparse.Namespace, model, config: dict, n: int) -> torch.Tensor | None:
    """The (n,) labels to sample: --label for all, else every class in turn; None for an unconditional model.
    A text-conditional model samples its prompt table in turn, or --prompt (index 0 of a one-row table)."""
    if getattr(args, "prompt", None) is not None:
        return torch.zeros(n, dtype=torch.long)
    num_classes = model.num_classes
    if num_classes is None:
        if args.label is not None or args.guidance != 1.0:
            raise ValueError("--label and --guidance need a class-conditional model; this checkpoint's is not")
        return None
    if args.label is None:
        return torch.arange(n) % num_classes
    return torch.full((n,), parse_label(args.label, class_names(config, num_classes), num_classes))


def _with_prompt(args: argparse.Namespace, model, config: dict):
    """--prompt and --negative-prompt: the model with that one-row prompt table (text-conditional models only)."""
    prompt, negative = getattr(args, "prompt", None), getattr(args, "negative_prompt", "")
    if not is_text_model(config):
        if prompt is not None or negative:
            raise ValueError("--prompt and --negative-prompt need a text-conditional model (trained with --prompts); "
                             "this checkpoint's is not")
        return model
    if args.label is not None:
        raise ValueError("--label is for class-conditional models; give this text-conditional one a --prompt")
    from .text import prompted

    if prompt is None:
        return prompted(model, list((model.model if hasattr(model, "decode") else model).prompts), negative)
    from .captions import parse_caption

    parse_caption(prompt)                         # a clear error for a prompt outside the captions' grammar
    return prompted(model, [prompt], negative)


def refuse_superres(ckpt: str, config: dict) -> None:
    """An SR3 checkpoint needs a low-resolution image to sample from: not a job for `sample` or `evaluate`."""
    factor = (config.get("train") or {}).get("superres")
    if factor:
        raise ValueError(f"{ckpt!r} is an SR3 super-resolution model (factor {factor}): it samples from a "
                         f"low-resolution image, in Python with minidiff.sr3_sample(model, lowres, sched, "
                         f"factor={factor})")


def as_eps_model(model, sched, config: dict):
    """A flow-matching checkpoint (``--objective flow``) samples as an eps-model on its schedule: DDIM on it is
    Euler's method on the flow ODE at DDIM's times (minidiff.flow.FlowAsEps); other checkpoints are returned as
    they are."""
    if (config.get("train") or {}).get("objective", "eps") != "flow":
        return model
    from .flow import FlowAsEps, FlowNet
    return FlowAsEps(FlowNet(model), sched)


def sample_command(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .plot import save_image_grid, save_scatter_2d

    if not args.out.lower().endswith(".png"):       # fail before sampling, not after
        raise ValueError(f"--out must end in .png, got {args.out!r}")
    refuse_shipped(args.out, args.force)
    check_ddim_options(args)
    if args.ckpt is None:
        if args.prompt is None and not args.negative_prompt:
            raise ValueError("--ckpt is required: a checkpoint written by `train`, or a shipped model "
                             f"({', '.join(shipped_models())}); with --prompt it defaults to {PROMPTS_MODEL}")
        args.ckpt = PROMPTS_MODEL
    model, sched, config = load_model(checkpoint_path(args.ckpt), ema=not args.raw_weights, device=args.device)
    refuse_superres(args.ckpt, config)
    fast.apply(model)                                   # the same function, faster on this device
    model = as_eps_model(model, sched, config)
    if args.guidance is None:
        args.guidance = PROMPT_GUIDANCE if is_text_model(config) else 1.0
    model = _with_prompt(args, model, config)
    shape = tuple(config["sample_shape"])
    is_2d = len(shape) == 1
    n = args.n if args.n is not None else (2000 if is_2d else 64)
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    y = _sample_labels(args, model, config, n)
    gen = torch.Generator().manual_seed(args.seed)
    common = dict(y=y, guidance_scale=args.guidance, clip_x0=args.clip_x0, generator=gen)
    if args.sampler in ODE_SOLVERS:
        steps = 10 if args.steps is None else args.steps
    else:
        steps = sched.T if args.sampler == "ddpm" else min(50, sched.T) if args.steps is None else args.steps
    start = time.perf_counter()
    with progress_bar(steps, "sample", args.quiet) as callback:
        if args.sampler in ODE_SOLVERS:
            x = solver_sample(model, (n, *shape), sched, solver=args.sampler, steps=steps, y=y,
                              guidance_scale=args.guidance, generator=gen, callback=callback)
            how = f"{ODE_SOLVERS[args.sampler]}-{steps}, {nfe(args.sampler, steps)} calls"
        elif args.sampler == "ddim":
            x = ddim_sample(model, (n, *shape), sched, steps=steps, eta=args.eta or 0.0, callback=callback, **common)
            how = f"DDIM-{steps}, eta={args.eta or 0.0}"
        else:
            x = ddpm_sample(model, (n, *shape), sched, callback=callback, **common)
            how = f"DDPM-{sched.T}"
    seconds = time.perf_counter() - start
    if hasattr(model, "decode"):                        # a latent model (chapter 12): latents -> images
        x = model.decode(x)
    if is_2d:
        save_scatter_2d(x, args.out, title=f"{n} samples, {how}")
    else:
        save_image_grid(x, args.out, nrow=model.num_classes if args.label is None and args.prompt is None else None)
    print(f"wrote {args.out}: {n} samples ({how}, guidance {args.guidance}) in {seconds:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------ evaluate
def _add_evaluate_parser(sub, prog: str) -> None:
    p = sub.add_parser(
        "evaluate", help="score a Fashion-MNIST checkpoint's samples: FD_cls, its floor, class agreement",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample --n images from a checkpoint's EMA model (class-balanced labels for a conditional "
                    "model) and\nreport FD_cls against as many test images, next to its floor (train vs test "
                    "images), and the class\nagreement, using the shipped classifier "
                    "(checkpoints/classifier.safetensors).",
        epilog=_examples(prog, "evaluate --ckpt fashion-mnist-cond --sampler ddim --steps 50 --guidance 3 "
                               "--n 10000 --out result.json"))
    p.add_argument("--ckpt", required=True, metavar="PATH",
                   help="checkpoint written by `train`, or a shipped image model: fashion-mnist-cond, "
                        "fashion-mnist-flow, fashion-mnist-latent")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampler (default: ddim)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: 50, at most T; DDPM always takes all T steps)")
    p.add_argument("--eta", type=float, help="DDIM noise level (default: 0)")
    p.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance scale, conditional models only (default: 1)")
    p.add_argument("--n", type=int, default=10000, help="number of samples, 2 to 10000 (default: 10000)")
    p.add_argument("--batch-size", type=int, default=500, help="images per sampler call (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: 0)")
    p.add_argument("--classifier", metavar="PATH", help="classifier weights (default: the shipped ones)")
    p.add_argument("--raw-weights", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", type=device_arg, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", metavar="JSON", help="also write the result to this JSON file")
    _add_force(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_model, load_classifier, write_json

    check_ddim_options(args)
    if args.out:
        refuse_shipped(args.out, args.force)
    model, sched, config = load_model(checkpoint_path(args.ckpt), ema=not args.raw_weights, device=args.device)
    refuse_superres(args.ckpt, config)
    if is_text_model(config):
        raise ValueError(f"{args.ckpt!r} is a text-conditional model: its prompt adherence is measured by "
                         f"the repository's benchmarks/prompts.py (class and attribute agreement over a guidance "
                         f"sweep), not by evaluate")
    images = (1, 28, 28) if hasattr(model, "decode") else tuple(config["sample_shape"])   # latents are decoded
    if images != (1, 28, 28):
        raise ValueError(f"evaluate needs a model of 28x28 grey images (Fashion-MNIST: FD_cls and class agreement "
                         f"use a classifier of those); {args.ckpt!r} makes samples of shape {images}")
    fast.apply(model)                                   # the same function, faster on this device
    model = as_eps_model(model, sched, config)
    device = next(model.parameters()).device
    classifier = load_classifier(args.classifier, device=device)
    steps = sched.T if args.sampler == "ddpm" else min(50, sched.T) if args.steps is None else args.steps
    batches = math.ceil(args.n / max(args.batch_size, 1))          # generate() checks batch_size
    with progress_bar(batches * steps, "sample", args.quiet) as callback:
        result = evaluate_model(model, sched, n=args.n, sampler=args.sampler, steps=steps, eta=args.eta or 0.0,
                                guidance_scale=args.guidance, batch_size=args.batch_size, seed=args.seed,
                                device=device, classifier=classifier, callback=callback)
    result = {"ckpt": args.ckpt, "ema": not args.raw_weights, **result}
    if args.out:
        write_json(args.out, result)
    line = (f"{result['sampler'].upper()}-{result['steps']}, guidance {result['guidance']}, n={result['n']}: "
            f"FD_cls {result['fd_cls']:.3f} (floor {result['fd_cls_floor']:.3f})")
    if "class_agreement" in result:
        line += f", class agreement {result['class_agreement']:.3f}"
    print(line + f"; sampling took {result['seconds']:.1f} s" + (f"; wrote {args.out}" if args.out else ""))
    return 0


# ------------------------------------------------------------------------------------------ train-classifier
def _add_train_classifier_parser(sub) -> None:
    p = sub.add_parser(
        "train-classifier", help="train the Fashion-MNIST classifier whose features FD_cls uses",
        description="Train the small Fashion-MNIST CNN behind FD_cls with the committed recipe, report its test "
                    "accuracy and save\nits weights (safetensors) with a JSON record beside them.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="passes over the 60,000 training images (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate (default: 3e-3)")
    p.add_argument("--device", type=device_arg, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", default="runs/classifier.safetensors", metavar="PATH",
                   help="weights file; the record goes beside it as .json (default: runs/classifier.safetensors)")
    _add_force(p)
    p.set_defaults(func=train_classifier_command)


def weights_out_and_device(args: argparse.Namespace) -> torch.device:
    """For the commands that train a weights file: --out must be a .safetensors file that is not shipped (nor
    its .json record), unless --force; returns the device to train on."""
    from .runtime import default_device

    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
    for path in (args.out, Path(args.out).with_suffix(".json")):
        refuse_shipped(path, args.force)
    return torch.device(args.device) if args.device is not None else default_device()


def train_classifier_command(args: argparse.Namespace) -> int:
    from .evaluate import save_classifier, train_classifier

    device = weights_out_and_device(args)
    command = (f"python -m minidiff train-classifier --epochs {args.epochs} --seed {args.seed} "
               f"--batch-size {args.batch_size} --lr {args.lr} --device {device} --out {args.out}")
    model, record = train_classifier(epochs=args.epochs, seed=args.seed, device=device,
                                     batch_size=args.batch_size, lr=args.lr)
    save_classifier(model, args.out, {"command": command, **record})
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}: test accuracy {record['test_accuracy']:.4f}")
    return 0


# ------------------------------------------------------------------------------------------ train-autoencoder
def _add_train_autoencoder_parser(sub) -> None:
    p = sub.add_parser(
        "train-autoencoder", help="train the autoencoder of latent diffusion (28x28 images <-> c x 7 x 7 latents)",
        description="Train the KL-regularised Fashion-MNIST autoencoder of chapter 12 with the committed recipe, "
                    "report its test\nreconstruction error and latent scale, and save its weights (safetensors) "
                    "with a JSON record beside them.", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6, help="passes over the training images (default: 6)")
    p.add_argument("--latent-channels", type=int, default=4, help="channels of the 7x7 latent (default: 4)")
    p.add_argument("--kl-weight", type=float, default=1e-4, help="weight of the KL term (default: 1e-4)")
    p.add_argument("--limit", type=int, help="train on the first N training images only (default: all 60,000)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and noise (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak one-cycle learning rate (default: 2e-3)")
    p.add_argument("--device", type=device_arg, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", default="runs/autoencoder.safetensors", metavar="PATH",
                   help="weights file; the record goes beside it as .json (default: runs/autoencoder.safetensors)")
    _add_force(p)
    p.set_defaults(func=train_autoencoder_command)


def train_autoencoder_command(args: argparse.Namespace) -> int:
    from .autoencoder import save_autoencoder, train_autoencoder

    device = weights_out_and_device(args)
    command = (f"python -m minidiff train-autoencoder --epochs {args.epochs} --latent-channels "
               f"{args.latent_channels} --kl-weight {args.kl_weight} --seed {args.seed} --batch-size "
               f"{args.batch_size} --lr {args.lr}" + (f" --limit {args.limit}" if args.limit else "")
               + f" --device {device} --out {args.out}")
    model, record = train_autoencoder(epochs=args.epochs, seed=args.seed, device=device, batch_size=args.batch_size,
                                      lr=args.lr, kl_weight=args.kl_weight, latent_channels=args.latent_channels,
                                      limit=args.limit)
    save_autoencoder(model, args.out, {"command": command, **record})
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}: test MSE {record['test_mse']:.4f}, "
          f"latent scale {record['latent_scale']:.4f}")
    return 0


# ------------------------------------------------------------------------------------------ export
def _add_export_parser(sub) -> None:
    from .checkpoint import EXPORT_DTYPES, EXPORT_WEIGHTS

    p = sub.add_parser("export", help="copy a checkpoint without its optimizer state (for sampling only)",
                       description="Write a smaller copy of a training checkpoint: model and EMA weights, config "
                                   "and loss history, without the optimizer and random states. load_model and "
                                   "`sample`/`evaluate` read it; training cannot be resumed from it. "
                                   "--weights ema --dtype float16 makes it about 4x smaller still.")
    p.add_argument("--ckpt", required=True, metavar="PATH",
                   help=f"checkpoint written by `train`, or a shipped model: {', '.join(shipped_models())}")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the exported copy")
    p.add_argument("--weights", choices=EXPORT_WEIGHTS, default="both",
                   help="'both': training and EMA weights; 'ema': only the EMA weights that sampling uses "
                        "(default: both)")
    p.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                   help="storage precision of the parameters; load_model returns float32 either way "
                        "(default: float32)")
    _add_force(p)
    p.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from .checkpoint import export_for_sampling

    refuse_shipped(args.out, args.force)
    path = export_for_sampling(checkpoint_path(args.ckpt), args.out, weights=args.weights, dtype=args.dtype)
    kept = "weights, EMA" if args.weights == "both" else "EMA weights"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {kept} ({args.dtype}), config and losses; "
          "no optimizer state")
    return 0


# ------------------------------------------------------------------------------------------ train-gan, sample-gan
def _add_train_gan_parser(sub, prog: str) -> None:
    p = sub.add_parser(
        "train-gan", help="train the small DCGAN on Fashion-MNIST that chapter 8 compares with diffusion",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a DCGAN (non-saturating loss, Adam 2e-4, betas 0.5/0.999) on the 60,000 Fashion-MNIST "
                    "training images.\nWrites DIR/generator.safetensors and DIR/generator.json (the record: command, "
                    "seed, time, the per-step\nlosses, and FD_cls and class fractions of --eval-n samples every "
                    "--eval-every steps).",
        epilog=_examples(prog, "train-gan --steps 4000 --seed 0 --eval-every 250 --eval-n 500 --out runs/gan-seed0",
                         "train-gan --steps 20 --limit 256 --eval-every 0 --out /tmp/gan-smoke"))
    p.add_argument("--steps", type=int, default=4000, help="training steps, one D and one G update each "
                                                            "(default: 4000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, data order and noise (default: 0)")
    p.add_argument("--batch-size", type=int, default=64, help="real images per step (default: 64)")
    p.add_argument("--z-dim", type=int, default=64, help="size of the generator's noise vector (default: 64)")
    p.add_argument("--width", type=int, default=64, help="width of both networks (default: 64)")
    p.add_argument("--eval-every", type=int, default=250, metavar="K",
                   help="steps between FD_cls evaluations, also after the last step; 0 = never (default: 250)")
    p.add_argument("--eval-n", type=int, default=500, metavar="N",
                   help="samples per evaluation, 2 to 10000 (default: 500)")
    p.add_argument("--limit", type=int, metavar="N", help="train on only the first N training images")
    p.add_argument("--device", type=device_arg, help="device (default: CPU)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="replace a generator already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_gan_command)


def train_gan_command(args: argparse.Namespace) -> int:
    from ._io import claim_folder
    from .gan import GENERATOR_NAME, train_gan

    weights = Path(args.out) / GENERATOR_NAME
    if not args.force:
        for path in (weights, weights.with_suffix(".json")):
            if path.exists():
                raise FileExistsError(f"{str(path)!r} exists; choose another --out, or pass --force to replace it")
    data = None
    if args.limit is not None:
        from .data import load_fashion_mnist

        if args.limit < args.batch_size:
            raise ValueError(f"--limit must be at least --batch-size ({args.batch_size}), got {args.limit}")
        data = load_fashion_mnist("train")[0][:args.limit]                               # (limit, 1, 28, 28)
    command = (f"python -m minidiff train-gan --steps {args.steps} --seed {args.seed} --batch-size {args.batch_size} "
               f"--z-dim {args.z_dim} --width {args.width} --eval-every {args.eval_every} --eval-n {args.eval_n}"
               + (f" --limit {args.limit}" if args.limit is not None else "")
               + (f" --device {args.device}" if args.device else "") + f" --out {args.out}")
    with claim_folder(args.out):                        # a writable folder no other run is using, checked first
        result = train_gan(steps=args.steps, batch_size=args.batch_size, seed=args.seed, z_dim=args.z_dim,
                           width=args.width, eval_every=args.eval_every, eval_n=args.eval_n, out=weights, data=data,
                           device=args.device, progress=not args.quiet, command=command)
    rec, log = result.record, result.log
    line = (f"wrote {weights} and {weights.with_suffix('.json')}: {args.steps} steps in {rec['train_seconds']:.1f} s "
            f"({rec['images_per_second']:.0f} img/s)")
    if log["fd_cls"]:
        line += f"; FD_cls {log['fd_cls'][-1]:.2f} (floor {log['fd_cls_floor'][-1]:.2f}) at n={args.eval_n}"
    print(line)
    return 0


def _add_sample_gan_parser(sub, prog: str) -> None:
    p = sub.add_parser("sample-gan", help="draw samples from a generator written by train-gan, as a PNG grid",
                       description="Draw --n images from a DCGAN generator (one forward pass) and write an image grid.",
                       epilog=_examples(prog, "sample-gan --gan runs/gan-seed0/generator.safetensors --out gan.png"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", required=True, metavar="PATH", help="generator.safetensors written by train-gan")
    p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise z (default: 0)")
    p.add_argument("--out", default="gan-samples.png", metavar="PNG", help="output image (default: gan-samples.png)")
    _add_force(p)
    p.set_defaults(func=sample_gan_command)


def sample_gan_command(args: argparse.Namespace) -> int:
    from .gan import gan_sample, load_gan
    from .plot import save_image_grid

    if not args.out.lower().endswith(".png"):       # fail before sampling, not after
        raise ValueError(f"--out must end in .png, got {args.out!r}")
    refuse_shipped(args.out, args.force)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    G = load_gan(args.gan)
    start = time.perf_counter()
    x = gan_sample(G, args.n, generator=torch.Generator().manual_seed(args.seed))     # (n, 1, 28, 28)
    seconds = time.perf_counter() - start
    save_image_grid(x, args.out)
    print(f"wrote {args.out}: {args.n} GAN samples in {seconds:.2f} s")
    return 0


# ------------------------------------------------------------------------------------------ main
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``prog`` (default: :func:`prog_name`) names the program in usage, help,
    examples and errors."""
    prog = prog_name() if prog is None else prog
    parser = _Parser(prog=prog, description="minidiff: diffusion models from scratch. Train, sample and evaluate "
                                            "noise predictors; run without a command for a quick demo.")
    parser.add_argument("--version", action="version", version=f"minidiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_parser(sub)
    _add_train_parser(sub, prog)
    _add_sample_parser(sub, prog)
    _add_evaluate_parser(sub, prog)
    _add_train_classifier_parser(sub)
    _add_train_autoencoder_parser(sub)
    _add_export_parser(sub)
    _add_train_gan_parser(sub, prog)
    _add_sample_gan_parser(sub, prog)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for bad input, reported as one line on stderr)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    try:
        return args.func(args)
    except INPUT_ERRORS as e:
        message = " ".join(str(e).splitlines())
        print(f"{parser.prog} {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
