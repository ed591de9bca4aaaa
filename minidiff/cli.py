"""Command line: ``python -m minidiff {demo,train,sample,evaluate,train-classifier,export}``.

``demo`` (the default) samples a small 2D data set with the exact :class:`~minidiff.OracleDenoiser` — DDPM
and DDIM, no training — and reports how close the samples land to the data.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

import torch

from .oracle import OracleDenoiser
from .samplers import ddim_sample, ddpm_sample
from .schedules import NoiseSchedule


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


# ------------------------------------------------------------------------------------------ train
def _add_train_parser(sub) -> None:
    from .train import DATASETS, MODELS, TOY_DATASETS, TrainConfig

    d = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    p = sub.add_parser(
        "train", help="train a noise predictor (U-Net on images, MLP on 2D toy data)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a noise predictor with L_simple (DDPM Algorithm 1): AdamW, EMA of the weights, sample "
                    "grids\nand checkpoints in --out. Runs on CUDA (bf16 autocast), MPS or the CPU, whichever is "
                    "there.\nUnder `torchrun --nproc_per_node N` the same command trains on N processes (DDP).",
        epilog="examples:\n"
               "  python -m minidiff train --dataset 8gaussians --steps 3000 --lr 1e-3 --out runs/toy\n"
               "  python -m minidiff train --dataset fashion-mnist --model tiny --conditional --steps 20000 "
               "--out runs/fmnist\n"
               "  python -m minidiff train --out runs/fmnist --resume --steps 40000     # continue a run\n"
               "  torchrun --nproc_per_node 4 -m minidiff train --dataset cifar10 --model ddpm-cifar10 "
               "--out runs/cifar")
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset", choices=DATASETS, default=None,
                   help=f"training data (default: {d['dataset']})")
    g.add_argument("--limit", type=int, metavar="N", help="use only the first N training examples")
    g.add_argument("--model", choices=MODELS, default=None,
                   help=f"U-Net preset for images, 'mlp' for 2D data (default: {d['model']} for images, mlp for "
                        f"{', '.join(TOY_DATASETS)})")
    g.add_argument("--conditional", action="store_true", default=None,
                   help="class-conditional model, trained with label dropout for classifier-free guidance")
    g.add_argument("--p-uncond", type=float, metavar="P", help="label dropout probability (default: 0.1 if "
                                                                "--conditional)")
    g.add_argument("--schedule", choices=("linear", "cosine", "sigmoid"), help=f"noise schedule (default: "
                                                                              f"{d['schedule']})")
    g.add_argument("--T", type=int, help=f"diffusion steps (default: {d['T']})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"optimizer steps (default: {d['steps']})")
    g.add_argument("--batch-size", type=int, help=f"examples per step and process (default: {d['batch_size']})")
    g.add_argument("--lr", type=float, help=f"AdamW learning rate (default: {d['lr']})")
    g.add_argument("--warmup", type=int, help=f"linear learning-rate warm-up steps (default: {d['warmup']})")
    g.add_argument("--weight-decay", type=float, help=f"AdamW weight decay (default: {d['weight_decay']})")
    g.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 for none (default: {d['grad_clip']})")
    g.add_argument("--ema-decay", type=float, help=f"EMA decay of the weights (default: {d['ema_decay']})")
    g.add_argument("--seed", type=int, help=f"seed of the run (default: {d['seed']})")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output folder for ckpt.pt and samples/ (default: runs/<dataset>)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (options given here override its config; "
                        "only the step counts, output and device options may change)")
    g.add_argument("--log-every", type=int, metavar="K", help=f"read the loss every K steps (default: {d['log_every']})")
    g.add_argument("--sample-every", type=int, metavar="K",
                   help=f"sample grid every K steps, 0 = never (default: {d['sample_every']})")
    g.add_argument("--sample-n", type=int, metavar="N", help="samples per grid (default: 64 images, 2000 points)")
    g.add_argument("--sample-steps", type=int, help="DDIM steps for the grids (default: 50, at most T)")
    g.add_argument("--checkpoint-every", type=int, metavar="K",
                   help=f"checkpoint every K steps, 0 = only at the end (default: {d['checkpoint_every']})")
    g.add_argument("--device", help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:1', 'mps' (default: auto)")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on with CUDA, off otherwise)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from .checkpoint import read_checkpoint
    from .train import CHECKPOINT_NAME, TOY_DATASETS, TrainConfig, train

    names = ("dataset", "limit", "model", "conditional", "p_uncond", "schedule", "T", "steps", "batch_size", "lr",
             "warmup", "weight_decay", "grad_clip", "ema_decay", "seed", "log_every", "sample_every", "sample_n",
             "sample_steps", "checkpoint_every", "out", "device", "bf16")
    given = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if given.get("grad_clip") == 0:
        given["grad_clip"] = None
    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        dataset = given.get("dataset", "fashion-mnist")
        given.setdefault("out", f"runs/{dataset}")
        if args.resume:      # start from the checkpoint's config; options given here override it
            saved = read_checkpoint(Path(given["out"]) / CHECKPOINT_NAME)["config"]["train"]
            given = {**saved, **given}
        elif dataset in TOY_DATASETS:
            given.setdefault("model", "mlp")
        config = TrainConfig(**given)
        start = time.perf_counter()
        result = train(config, resume=args.resume, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, FloatingPointError) as e:
        print(f"minidiff train: error: {e}", file=sys.stderr)
        return 1
    if rank0:
        tail = result.losses[-min(100, len(result.losses)):]
        print(f"trained {config.model} on {config.dataset} for {config.steps} steps in "
              f"{time.perf_counter() - start:.1f} s; mean loss of the last {len(tail)} steps {sum(tail) / len(tail):.4f}")
        print(f"checkpoint: {result.checkpoint}")
    return 0


# ------------------------------------------------------------------------------------------ sample
def _add_sample_parser(sub) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained checkpoint and save them as a PNG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw samples from a checkpoint's EMA model with DDIM or DDPM and write a PNG: an image grid "
                    "for image\nmodels (one column per class for conditional ones), a scatter plot for 2D models.",
        epilog="examples:\n"
               "  python -m minidiff sample --ckpt checkpoints/toy-2d.pt --out toy.png\n"
               "  python -m minidiff sample --ckpt runs/fmnist/ckpt.pt --guidance 3 --label 7 --n 16 --out bags.png\n"
               "  python -m minidiff sample --ckpt runs/fmnist/ckpt.pt --sampler ddpm --out ddpm.png")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint written by `minidiff train`")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampler (default: ddim)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: 50, at most T; DDPM always takes all T steps)")
    p.add_argument("--eta", type=float, help="DDIM noise level: 0 deterministic, 1 DDPM-like (default: 0)")
    p.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance scale s: 1 plain conditional, 0 unconditional (default: 1)")
    p.add_argument("--label", type=int, help="class of every sample (default: all classes in turn); "
                                             "conditional models only")
    p.add_argument("--n", type=int, help="number of samples (default: 64 images, 2000 points)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--clip-x0", type=float, metavar="B", help="clip the predicted x_0 to [-B, B] (default: no clip)")
    p.add_argument("--raw-weights", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", default=None, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", default="samples.png", metavar="PNG", help="output image (default: samples.png)")
    p.set_defaults(func=sample_command)


def sample_command(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .plot import save_image_grid, save_scatter_2d

    try:
        if not args.out.lower().endswith(".png"):       # fail before sampling, not after
            raise ValueError(f"--out must end in .png, got {args.out!r}")
        model, sched, config = load_model(args.ckpt, ema=not args.raw_weights, device=args.device)
        shape = tuple(config["sample_shape"])
        is_2d = len(shape) == 1
        n = args.n if args.n is not None else (2000 if is_2d else 64)
        if n < 1:
            raise ValueError(f"--n must be >= 1, got {n}")
        if args.sampler == "ddpm" and (args.steps is not None or args.eta is not None):
            raise ValueError("--steps and --eta apply to --sampler ddim only (DDPM takes all T steps)")
        num_classes = model.num_classes
        if num_classes is None and (args.label is not None or args.guidance != 1.0):
            raise ValueError("--label and --guidance need a class-conditional model; this checkpoint's is not")
        if args.label is not None and not 0 <= args.label < num_classes:
            raise ValueError(f"--label must be in [0, {num_classes - 1}], got {args.label}")
        y = None
        if num_classes is not None:
            y = torch.full((n,), args.label) if args.label is not None else torch.arange(n) % num_classes
        gen = torch.Generator().manual_seed(args.seed)
        common = dict(y=y, guidance_scale=args.guidance, clip_x0=args.clip_x0, generator=gen)
        start = time.perf_counter()
        if args.sampler == "ddim":
            steps = min(50, sched.T) if args.steps is None else args.steps
            x = ddim_sample(model, (n, *shape), sched, steps=steps, eta=args.eta or 0.0, **common)
            how = f"DDIM-{steps}, eta={args.eta or 0.0}"
        else:
            x = ddpm_sample(model, (n, *shape), sched, **common)
            how = f"DDPM-{sched.T}"
        seconds = time.perf_counter() - start
        if is_2d:
            save_scatter_2d(x, args.out, title=f"{n} samples, {how}")
        else:
            save_image_grid(x, args.out, nrow=num_classes if args.label is None else None)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"minidiff sample: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {n} samples ({how}, guidance {args.guidance}) in {seconds:.1f} s")
    return 0


# ------------------------------------------------------------------------------------------ evaluate
def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a Fashion-MNIST checkpoint's samples: FD_cls, its floor, class agreement",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample --n images from a checkpoint's EMA model (class-balanced labels for a conditional "
                    "model) and\nreport FD_cls against as many test images, next to its floor (train vs test "
                    "images), and the class\nagreement, using the shipped classifier "
                    "(checkpoints/classifier.safetensors).",
        epilog="example:\n"
               "  python -m minidiff evaluate --ckpt runs/fmnist/ckpt.pt --sampler ddim --steps 50 --guidance 3 "
               "--n 10000 --out result.json")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint written by `minidiff train`")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampler (default: ddim)")
    p.add_argument("--steps", type=int, help="DDIM steps (default: 50; DDPM always takes all T steps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise level (default: 0)")
    p.add_argument("--guidance", type=float, default=1.0, metavar="S",
                   help="classifier-free guidance scale, conditional models only (default: 1)")
    p.add_argument("--n", type=int, default=10000, help="number of samples, at most 10000 (default: 10000)")
    p.add_argument("--batch-size", type=int, default=500, help="images per sampler call (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler's noise (default: 0)")
    p.add_argument("--classifier", metavar="PATH", help="classifier weights (default: the shipped ones)")
    p.add_argument("--raw-weights", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", default=None, help="device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--out", metavar="JSON", help="also write the result to this JSON file")
    p.set_defaults(func=evaluate_command)


def evaluate_command(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .evaluate import evaluate_model, load_classifier, write_json

    try:
        if args.sampler == "ddpm" and args.steps is not None:
            raise ValueError("--steps applies to --sampler ddim only (DDPM takes all T steps)")
        model, sched, _ = load_model(args.ckpt, ema=not args.raw_weights, device=args.device)
        device = next(model.parameters()).device
        classifier = load_classifier(args.classifier, device=device)
        result = evaluate_model(model, sched, n=args.n, sampler=args.sampler, steps=args.steps, eta=args.eta,
                                guidance=args.guidance, batch_size=args.batch_size, seed=args.seed,
                                device=device, classifier=classifier)
        result = {"ckpt": args.ckpt, "ema": not args.raw_weights, **result}
        if args.out:
            write_json(args.out, result)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"minidiff evaluate: error: {e}", file=sys.stderr)
        return 1
    line = (f"{result['sampler'].upper()}-{result['steps']}, guidance {result['guidance']}, n={result['n']}: "
            f"FD_cls {result['fd_cls']:.3f} (floor {result['fd_cls_floor']:.3f})")
    if "class_agreement" in result:
        line += f", class agreement {result['class_agreement']:.3f}"
    print(line + f"; sampling took {result['seconds']:.1f} s" + (f"; wrote {args.out}" if args.out else ""))
    return 0


# ------------------------------------------------------------------------------------------ train-classifier
def _add_train_classifier_parser(sub) -> None:
    from .evaluate import CLASSIFIER_PATH

    p = sub.add_parser(
        "train-classifier", help="train the Fashion-MNIST classifier whose features FD_cls uses",
        description="Train the small Fashion-MNIST CNN behind FD_cls with the committed recipe, report its test "
                    "accuracy and save\nits weights (safetensors) with a JSON record beside them.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4, help="passes over the 60,000 training images (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and shuffling (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak one-cycle learning rate (default: 3e-3)")
    p.add_argument("--device", default="cpu", help="device (default: cpu)")
    p.add_argument("--out", default=str(CLASSIFIER_PATH.relative_to(CLASSIFIER_PATH.parents[1])),
                   metavar="PATH", help="weights file; the record goes beside it as .json "
                                        "(default: checkpoints/classifier.safetensors)")
    p.set_defaults(func=train_classifier_command)


def train_classifier_command(args: argparse.Namespace) -> int:
    from .evaluate import save_classifier, train_classifier

    command = (f"python -m minidiff train-classifier --epochs {args.epochs} --seed {args.seed} "
               f"--batch-size {args.batch_size} --lr {args.lr} --device {args.device} --out {args.out}")
    try:
        if not args.out.endswith(".safetensors"):
            raise ValueError(f"--out must end in .safetensors, got {args.out!r}")
        model, record = train_classifier(epochs=args.epochs, seed=args.seed, device=args.device,
                                         batch_size=args.batch_size, lr=args.lr)
        save_classifier(model, args.out, {"command": command, **record})
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"minidiff train-classifier: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}: test accuracy {record['test_accuracy']:.4f}")
    return 0


def export(args: argparse.Namespace) -> int:
    from .checkpoint import export_for_sampling
    try:
        path = export_for_sampling(args.ckpt, args.out, weights=args.weights, dtype=args.dtype)
    except (ValueError, FileNotFoundError) as e:
        print(f"minidiff export: error: {e}", file=sys.stderr)
        return 1
    kept = "weights, EMA" if args.weights == "both" else "EMA weights"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {kept} ({args.dtype}), config and losses; "
          "no optimizer state")
    return 0


def _add_export_parser(sub) -> None:
    from .checkpoint import EXPORT_DTYPES, EXPORT_WEIGHTS
    p = sub.add_parser("export", help="copy a checkpoint without its optimizer state (for sampling only)",
                       description="Write a smaller copy of a training checkpoint: model and EMA weights, config "
                                   "and loss history, without the optimizer and random states. load_model and "
                                   "`sample`/`evaluate` read it; training cannot be resumed from it. "
                                   "--weights ema --dtype float16 makes it about 4x smaller still.")
    p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint written by `minidiff train`")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the exported copy")
    p.add_argument("--weights", choices=EXPORT_WEIGHTS, default="both",
                   help="'both': training and EMA weights; 'ema': only the EMA weights that sampling uses "
                        "(default: both)")
    p.add_argument("--dtype", choices=EXPORT_DTYPES, default="float32",
                   help="storage precision of the parameters; load_model returns float32 either way "
                        "(default: float32)")
    p.set_defaults(func=export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minidiff", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="sample a 2D data set with the exact denoiser (no training)")
    p.add_argument("--schedule", default="cosine", choices=["linear", "cosine", "sigmoid"])
    p.add_argument("--T", type=int, default=1000, help="number of diffusion steps")
    p.add_argument("--n", type=int, default=512, help="samples per sampler")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=demo)
    _add_train_parser(sub)
    _add_sample_parser(sub)
    _add_evaluate_parser(sub)
    _add_train_classifier_parser(sub)
    _add_export_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo", *(argv or [])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
