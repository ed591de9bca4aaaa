"""The measurements behind chapter 12 (latent diffusion), on this machine's CPU.

    python benchmarks/latent.py autoencoders              # compression vs detail: latent channels 1, 2, 4, 8
    python benchmarks/latent.py compare --minutes 10      # latent vs pixel diffusion at equal training time

``autoencoders`` trains one autoencoder per latent size with the same short recipe (2 epochs on the 60,000
training images; the shipped one had 6) and records each one's test reconstruction error and PSNR (mean over the
10,000 test images, with its standard error over the images; one training run each), and its reconstructions of
the first eight test images (as pixel levels 0-255): what each compression keeps.

``compare`` trains two class-conditional models for the same wall-clock time on the same machine, one after the
other: the ``tiny`` U-Net on the 1 x 28 x 28 pixels for ``--minutes``, then the ``latent`` U-Net on the shipped
autoencoder's 4 x 7 x 7 latents for the time the pixel run took. Each run's number of steps comes from two short
probes of its speed (20 and 40 steps: their difference is the time per step without the set-up). Both are then sampled
the same way (n class-balanced images, DDIM-50, guidance scale 3, one seed): FD_cls against n test images with
its bootstrap standard deviation, the class agreement with its binomial standard error, and the time to sample
(for the latent model, the decoder included). One training run per model: the error bars cover the sampling,
not the seed-to-seed spread of training. The latent run's checkpoint is the shipped
``checkpoints/fashion-mnist-latent.pt`` (exported with its EMA weights only).

Results go to ``benchmarks/results/latent-autoencoders.json`` and ``benchmarks/results/latent-vs-pixel.json``,
with the command, the machine and the torch version. Chapter 12 reads them; it recomputes one small cell live.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

import minidiff as md
from minidiff._io import write_json
from minidiff.autoencoder import decode_latents, encode_images, train_autoencoder
from minidiff.classifier import classifier_features, load_classifier, predicted_labels
from minidiff.data import load_fashion_mnist
from minidiff.evaluate import generate
from minidiff.metrics import fd_bootstrap
from minidiff.runtime import cpu_model, machine_description
from minidiff.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LATENT_CHANNELS = (1, 2, 4, 8)
SHOWN = 8                            # test images whose reconstructions the results file keeps
RUNS = {
    "pixel": dict(model="tiny"),
    "latent": dict(model="latent", latent="autoencoder"),
}
COMMON = dict(dataset="fashion-mnist", conditional=True, batch_size=128, lr=5e-4, warmup=200, sample_every=0,
              checkpoint_every=0, log_every=50, seed=0, device="cpu")


def header(command: str) -> dict:
    return dict(command=command, machine=f"{cpu_model()}; {machine_description(torch.device('cpu'))}",
                torch=torch.__version__, date=datetime.date.today().isoformat())


def _levels(images: torch.Tensor) -> list:
    """Images in [-1, 1] (N, 1, 28, 28) as nested lists of pixel levels 0-255 (N, 28, 28), for the results file."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].tolist()


def autoencoders(args) -> None:
    out = dict(header(f"python benchmarks/latent.py autoencoders --epochs {args.epochs} --limit {args.limit}"),
               epochs=args.epochs, limit=args.limit, runs=[])
    shown = load_fashion_mnist("test")[0][:SHOWN]
    out["shown"] = f"the first {SHOWN} test images, as pixel levels 0-255"
    out["originals"] = _levels(shown)
    for c in LATENT_CHANNELS:
        model, record = train_autoencoder(epochs=args.epochs, limit=args.limit, latent_channels=c, log=None)
        reconstructions = decode_latents(model, encode_images(model, shown))
        out["runs"].append(dict(latent_channels=c, numbers=c * 49, compression=round(784 / (c * 49), 2),
                                test_mse=record["test_mse"], test_psnr=record["test_psnr"],
                                test_psnr_se=record["test_psnr_se"],
                                latent_scale=record["latent_scale"], train_seconds=record["train_seconds"],
                                reconstructions=_levels(reconstructions)))
        print(f"latent {c} x 7 x 7: test MSE {record['test_mse']:.4f}, PSNR {record['test_psnr']:.2f} dB "
              f"({record['train_seconds']:.0f} s)", flush=True)
        write_json(RESULTS / "latent-autoencoders.json", out)


def _train_for(kind: str, seconds: float, work: Path) -> dict:
    """Train the run from scratch for about ``seconds`` of wall-clock time: two probes of 20 and 40 steps give the
    time per step without the fixed costs (loading, and for the latent run encoding the 60,000 images)."""
    times = []
    for probe_steps in (20, 40):
        probe = work / f"{kind}-probe"
        shutil.rmtree(probe, ignore_errors=True)
        start = time.perf_counter()
        train(TrainConfig(**COMMON, **RUNS[kind], steps=probe_steps, out=str(probe)), progress=False)
        times.append(time.perf_counter() - start)
    per_step, fixed = (times[1] - times[0]) / 20, 2 * times[0] - times[1]
    steps = max(100, int((seconds - max(fixed, 0.0)) / per_step))
    run = work / kind
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    result = train(TrainConfig(**COMMON, **RUNS[kind], steps=steps, out=str(run)), progress=False)
    took = time.perf_counter() - start
    print(f"{kind}: {steps} steps in {took:.0f} s ({per_step:.3f} s per step, {fixed:.0f} s to set up)", flush=True)
    return dict(steps=steps, train_seconds=round(took, 1), seconds_per_step=round(per_step, 4),
                setup_seconds=round(fixed, 1), checkpoint=str(Path(result.checkpoint).resolve().relative_to(ROOT)))


def _score(kind: str, ckpt: str, n: int, guidance: float, classifier) -> dict:
    model, sched, config = md.load_model(ckpt, device="cpu")
    samples, labels, settings = generate(model, sched, n=n, steps=50, guidance_scale=guidance, seed=0)
    real = load_fashion_mnist("test")[0][:n]
    fd = fd_bootstrap(classifier_features(classifier, samples), classifier_features(classifier, real),
                      generator=torch.Generator().manual_seed(0))
    agree = float((predicted_labels(classifier, samples) == labels).double().mean())
    params = sum(p.numel() for p in (model.model if hasattr(model, "decode") else model).parameters())
    return dict(fd_cls=round(fd["fd"], 3), fd_cls_sd=round(fd["sd"], 3), class_agreement=round(agree, 4),
                class_agreement_se=round(math.sqrt(agree * (1 - agree) / n), 4),
                sample_seconds=settings["seconds"], parameters=params, sample_shape=config["sample_shape"])


def compare(args) -> None:
    """The pixel run trains for ``--minutes``; the latent run then for the pixel run's measured time."""
    work = ROOT / "runs" / "latent-benchmark"
    work.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "latent-vs-pixel.json"
    command = f"python benchmarks/latent.py compare --minutes {args.minutes:g} --n {args.n} --guidance {args.guidance:g}"
    out = dict(header(command), minutes=args.minutes, n=args.n, guidance=args.guidance, sampler="DDIM-50",
               training={k: v for k, v in COMMON.items() if k != "device"}, runs={})
    if args.only == "latent":                     # continue a run whose pixel half is done
        out = json.loads(path.read_text())
    classifier = load_classifier()
    for kind in RUNS:
        if args.only and kind != args.only:
            continue
        seconds = args.minutes * 60 if kind == "pixel" else out["runs"]["pixel"]["train_seconds"]
        out["runs"][kind] = _train_for(kind, seconds, work)
        out["runs"][kind].update(_score(kind, str(ROOT / out["runs"][kind]["checkpoint"]), args.n, args.guidance,
                                        classifier))
        print(kind, out["runs"][kind], flush=True)
        write_json(path, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("autoencoders")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=60000)
    p.set_defaults(func=autoencoders)
    p = sub.add_parser("compare")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--only", choices=tuple(RUNS), help="train and score one run only (latent: next to the pixel "
                                                        "run already in the results file)")
    p.set_defaults(func=compare)
    args = parser.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
