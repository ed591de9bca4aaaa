"""Measuring a diffusion model's sample quality offline: sample Fashion-MNIST images, then score them.

:func:`generate` samples class-balanced images in batches, :func:`evaluate_samples` scores them (FD_cls against
real test images, its floor, class agreement) and :func:`evaluate_model` does both; ``python -m minidiff
evaluate`` and ``benchmarks/quality.py`` run them. The scores themselves are in :mod:`minidiff.metrics`, the
classifier they use in :mod:`minidiff.classifier`; their names stay importable from here too.

Used from chapter 4 on; chapter 6 introduces FD_cls.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from ._io import write_json
from ._validate import check_choice, check_int, check_real
from .classifier import (CLASSIFIER_PATH, IMAGE_SHAPE, Classifier, check_images, eval_mode, accuracy,
                         classifier_features, load_classifier, predicted_labels, save_classifier, train_classifier)
from .guidance import num_classes_of
from .metrics import class_agreement, class_diversity, fd_bootstrap, fd_cls, feature_stats, frechet_distance, psnr
from .runtime import cpu_model, machine_description, model_device
from .samplers import VARIANCES, ddim_sample, ddpm_sample

__all__ = ["generate", "evaluate_samples", "evaluate_model", "fd_cls_floor", "score_superres", "evaluate_prompts",
           # moved to minidiff.classifier, minidiff.metrics, minidiff.runtime and minidiff._io; importable from here
           "CLASSIFIER_PATH", "IMAGE_SHAPE", "Classifier", "accuracy", "classifier_features", "predicted_labels",
           "train_classifier", "save_classifier", "load_classifier", "frechet_distance", "feature_stats",
           "fd_cls", "class_agreement", "class_diversity", "cpu_model", "machine_description", "write_json"]


# ------------------------------------------------------------------------------------------ scoring
def evaluate_samples(samples: torch.Tensor, labels: torch.Tensor | None = None, *,
                     classifier: nn.Module | None = None, n: int | None = None, root=None) -> dict:
    """FD_cls of ``samples`` against n test images, its floor (n train vs the same n test images), and —
    with ``labels`` — the class agreement.

    Args:
        samples: (N, 1, 28, 28) generated images in [-1, 1]; the first ``n`` are used (default: all, at most
            10,000, the size of the test set).
        labels: optional (N,) labels the samples were generated for.
        classifier: default the shipped one (:func:`~minidiff.classifier.load_classifier`).
        n: how many samples, test and training images to compare.
        root: where to look for the real images (see :func:`minidiff.data.load_fashion_mnist`).

    Returns:
        {"fd_cls", "fd_cls_floor", "class_agreement" (only with labels), "n"}.
    """
    n = _check_samples(samples, labels, n)
    classifier = classifier if classifier is not None else load_classifier()
    test_stats = _test_stats(classifier, n, root)
    fake = classifier_features(classifier, samples[:n])                                   # (n, d)
    result = dict(fd_cls=frechet_distance(*feature_stats(fake), *test_stats),
                  fd_cls_floor=fd_cls_floor(n, classifier=classifier, root=root, test_stats=test_stats))
    if labels is not None:
        result["class_agreement"] = class_agreement(samples[:n], labels[:n], classifier)
    result["n"] = n
    return result


def fd_cls_floor(n: int, *, train_seed: int = 1, classifier: nn.Module | None = None, root=None,
                 test_stats: tuple | None = None) -> float:
    """FD_cls between n real training images and the n test images :func:`evaluate_samples` compares with.

    Both sides are real, so this is the finite-sample part of any FD_cls at this n: it shrinks roughly as 1/n,
    and it varies with the training subset drawn (``train_seed``; :func:`evaluate_samples` uses 1).

    Args:
        n: images per side, 2 <= n <= 10,000.
        train_seed: which random subset of the 60,000 training images.
        classifier: default the shipped one.
        root: where to look for the real images (see :func:`minidiff.data.load_fashion_mnist`).
        test_stats: the test images' feature mean and covariance, when already computed.
    """
    n = check_int(n, "n", low=2, high=10000)
    check_int(train_seed, "train_seed", low=0)
    classifier = classifier if classifier is not None else load_classifier()
    test_stats = _test_stats(classifier, n, root) if test_stats is None else test_stats
    train = classifier_features(classifier, _real_subset("train", n, seed=train_seed, root=root))  # (n, d)
    return frechet_distance(*feature_stats(train), *test_stats)


def _test_stats(classifier: nn.Module, n: int, root) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature mean and covariance of the n test images every FD_cls here compares with (a fixed subset)."""
    return feature_stats(classifier_features(classifier, _real_subset("test", n, seed=0, root=root)))


def _check_samples(samples, labels, n) -> int:
    """Check evaluate_samples' arguments; return n (default: all samples)."""
    samples = check_images(samples, "samples")
    n = samples.shape[0] if n is None else check_int(n, "n", low=2)
    if not 2 <= n <= min(samples.shape[0], 10000):
        raise ValueError(f"n must be in [2, {min(samples.shape[0], 10000)}] (the number of samples, at most the "
                         f"10,000 test images), got {n}")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape[:1] != samples.shape[:1]):
        raise ValueError(f"labels must be a tensor of shape ({samples.shape[0]},) like the samples, got "
                         f"{labels!r:.80}")
    return n


def _real_subset(split: str, n: int, seed: int, root=None) -> torch.Tensor:
    """n real Fashion-MNIST images of ``split``, a fixed random subset (from ``seed``)."""
    from .data import load_fashion_mnist

    images, _ = load_fashion_mnist(split, root=root)
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx]                                                                # (n, 1, 28, 28)


def score_superres(images: torch.Tensor, originals: torch.Tensor, labels: torch.Tensor, *, factor: int,
                   reference: torch.Tensor, classifier: nn.Module | None = None, resamples: int = 50,
                   seed: int = 0) -> dict:
    """Chapter 8's super-resolution scores of ``images`` (N, 1, 28, 28), made from ``downsample(originals,
    factor)``, each with its spread.

    Returns a dict of:

    - ``psnr``, ``psnr_se``: mean PSNR against the originals (dB, data range 2) and its standard error over the
      images;
    - ``consistency``: the mean over images of the RMS of downsample(image) - downsample(original);
    - ``class_kept``, ``class_kept_se``: how often the classifier gives an image its original's label, and the
      binomial standard error;
    - ``fd_cls``, ``fd_cls_sd``: FD_cls against the ``reference`` images (M, 1, 28, 28) and its bootstrap
      standard deviation over ``resamples`` rounds (:func:`minidiff.metrics.fd_bootstrap`, seeded by ``seed``);
    - ``n``: the number of images.

    Images are clamped to [-1, 1] for the classifier only (bicubic upsampling overshoots a little).

    Introduced in chapter 8.
    """
    from .superres import downsample

    check_images(images.clamp(-1, 1), "images")
    if originals.shape != images.shape or labels.shape != images.shape[:1]:
        raise ValueError(f"originals must have the shape of images {tuple(images.shape)} and labels shape "
                         f"({images.shape[0]},); got {tuple(originals.shape)} and {tuple(labels.shape)}")
    classifier = classifier if classifier is not None else load_classifier()
    shown = images.clamp(-1, 1)
    p = psnr(images, originals)                                                            # (N,)
    kept = (predicted_labels(classifier, shown) == labels.cpu()).double()                  # (N,)
    gap = (downsample(images, factor) - downsample(originals, factor)).double()
    fd = fd_bootstrap(classifier_features(classifier, shown), classifier_features(classifier, reference),
                      resamples=resamples, generator=torch.Generator().manual_seed(seed))
    n = images.shape[0]
    return dict(psnr=float(p.mean()), psnr_se=float(p.std() / n**0.5),
                consistency=float(gap.pow(2).flatten(1).mean(1).sqrt().mean()),
                class_kept=float(kept.mean()), class_kept_se=float((kept.mean() * (1 - kept.mean()) / n) ** 0.5),
                fd_cls=fd["fd"], fd_cls_sd=fd["sd"], n=n)


# ------------------------------------------------------------------------------------------ sampling
def generate(model: nn.Module, sched, *, n: int, sampler: str = "ddim", steps: int | None = None,
             eta: float = 0.0, guidance_scale: float = 1.0, batch_size: int = 500, seed: int = 0,
             device=None, variance: str = "beta_tilde",
             callback=None) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Sample ``n`` Fashion-MNIST images in batches: the sampling half of :func:`evaluate_model`.

    A class-conditional model gets class-balanced labels (sample i has label i mod num_classes) and guidance
    scale ``guidance_scale``; an unconditional one needs ``guidance_scale=1``.

    Args:
        model: the diffusion model, ``model(x_t, t, y) -> eps_hat`` for 1 x 28 x 28 images.
        sched: its noise schedule.
        n: number of images.
        sampler: ``"ddim"`` or ``"ddpm"``.
        steps: model calls per image; default 50 for DDIM and all T for DDPM (fewer: DDPM on the respaced
            chain).
        eta: DDIM's noise level.
        guidance_scale: the guidance scale for a class-conditional model (class-balanced labels); 1 otherwise.
        batch_size: images per sampler call.
        seed: seeds the sampler's generator.
        device: where to sample (default: the model's device).
        variance: DDPM's, ``"beta_tilde"`` or ``"beta"``.
        callback: ``callback(i, t, x_t, x0_hat)``, passed to the sampler of every batch: it is called once per
            step of each batch (a progress bar's hook).

    Returns:
        (samples (n, 1, 28, 28) on the CPU, labels (n,) or None, settings: sampler, steps, eta, guidance (the
        scale), seed, seconds spent sampling).
    """
    plan = _check_generate(model, sched, n=n, sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                           batch_size=batch_size, seed=seed, variance=variance)
    num_classes = num_classes_of(model)
    labels = torch.arange(plan["n"]) % num_classes if num_classes is not None else None     # (n,)
    device = torch.device(device) if device is not None else model_device(model)
    with eval_mode(model):
        start = time.perf_counter()
        samples = _sample_in_batches(model, sched, labels, device=device, callback=callback, **plan)
        seconds = time.perf_counter() - start
    ddim = plan["sampler"] == "ddim"
    settings = dict(sampler=plan["sampler"], steps=plan["steps"], eta=plan["eta"] if ddim else None,
                    guidance=plan["guidance_scale"], seed=plan["seed"], seconds=round(seconds, 2))
    if not ddim:
        settings["variance"] = plan["variance"]
    return samples, labels, settings                                                  # (n, 1, 28, 28)


def _sample_in_batches(model: nn.Module, sched, labels: torch.Tensor | None, *, n: int, sampler: str, steps: int,
                       eta: float, guidance_scale: float, batch_size: int, seed: int, variance: str, device,
                       callback) -> torch.Tensor:
    """``n`` images (n, 1, 28, 28) on the CPU, ``batch_size`` per sampler call, all from one generator."""
    gen = torch.Generator().manual_seed(seed)
    chunks = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        y = labels[i:i + b].to(device) if labels is not None else None
        kwargs = dict(y=y, guidance_scale=guidance_scale if y is not None else 1.0, generator=gen, device=device,
                      callback=callback)
        shape = (b, *getattr(model, "sample_shape", IMAGE_SHAPE))             # a LatentModel samples latents
        if sampler == "ddim":
            x = ddim_sample(model, shape, sched, steps=steps, eta=eta, **kwargs)
        else:
            x = ddpm_sample(model, shape, sched, steps=steps, variance=variance, **kwargs)
        if hasattr(model, "decode"):
            x = model.decode(x)                                                       # latents -> images
        chunks.append(x.float().cpu())                                               # (b, 1, 28, 28)
    return torch.cat(chunks)                                                          # (n, 1, 28, 28)


def _check_generate(model, sched, *, n, sampler, steps, eta, guidance_scale, batch_size, seed, variance) -> dict:
    """Check generate's arguments; return them checked, with the default number of steps filled in."""
    sampler = check_choice(sampler, "sampler", ("ddim", "ddpm"))
    default_steps = sched.T if sampler == "ddpm" else 50
    plan = dict(sampler=sampler, n=check_int(n, "n", low=2, high=10000),
                batch_size=check_int(batch_size, "batch_size", low=1), seed=check_int(seed, "seed"),
                eta=check_real(eta, "eta", low=0.0), guidance_scale=check_real(guidance_scale, "guidance_scale"),
                variance=check_choice(variance, "variance", VARIANCES),
                steps=check_int(default_steps if steps is None else steps, "steps", low=1, high=sched.T))
    in_channels = getattr(model, "config", {}).get("in_channels", 1)
    if in_channels != 1 and not hasattr(model, "decode"):
        raise ValueError(f"the model must generate 1-channel 28x28 images (Fashion-MNIST), its in_channels is "
                         f"{in_channels}")
    if num_classes_of(model) is None and plan["guidance_scale"] != 1.0:
        raise ValueError(f"guidance_scale={plan['guidance_scale']} needs a class-conditional model; this one is "
                         "unconditional (use guidance_scale=1)")
    return plan


def evaluate_model(model: nn.Module, sched, *, n: int = 10000, sampler: str = "ddim", steps: int | None = None,
                   eta: float = 0.0, guidance_scale: float = 1.0, batch_size: int = 500, seed: int = 0, device=None,
                   classifier: nn.Module | None = None, root=None, callback=None) -> dict:
    """Sample ``n`` Fashion-MNIST images from a diffusion model (:func:`generate`) and score them with
    :func:`evaluate_samples`. The sampling arguments (``sampler``, ``steps``, ``eta``, ``guidance_scale``,
    ``batch_size``, ``seed``, ``device``) are those of :func:`generate`.

    Args:
        model: the diffusion model, ``model(x_t, t, y) -> eps_hat`` for 1 x 28 x 28 images.
        sched: its noise schedule.
        n: number of images (at most 10,000, the test set).
        classifier: default the shipped one (:func:`~minidiff.classifier.load_classifier`).
        root: where to look for the real images (see :func:`minidiff.data.load_fashion_mnist`).
        callback: called once per sampler step of every batch (see :func:`generate`).

    Returns:
        the metrics plus the sampling settings and ``seconds`` spent sampling.
    """
    if hasattr(getattr(model, "model", model), "prompts"):
        raise ValueError("model is text-conditional: its labels index prompts, not classes; measure it with "
                         "minidiff.evaluate.evaluate_prompts")
    samples, labels, settings = generate(model, sched, n=n, sampler=sampler, steps=steps, eta=eta,
                                         guidance_scale=guidance_scale, batch_size=batch_size, seed=seed,
                                         device=device, callback=callback)
    result = evaluate_samples(samples, labels, classifier=classifier, n=n, root=root)
    result.update(settings)
    return result


def evaluate_prompts(model: nn.Module, sched, prompts: list[str], *, n_per_prompt: int, guidance_scale: float,
                     steps: int = 50, seed: int = 0, negative: str = "", batch_size: int = 500,
                     classifier: nn.Module | None = None, device=None) -> dict:
    """Prompt adherence, measured without any downloaded model (chapter 13): sample ``n_per_prompt`` images for
    each prompt (DDIM, ``steps``, ``guidance_scale``) and check the class with the shipped classifier and the
    attributes with the attribute functions (:func:`minidiff.captions.attribute_agreement`).

    Returns {"class_agreement", "class_agreement_se" (binomial), "attributes": {name: {"asked", "agreement",
    "words"}}, "word_shares" (:func:`minidiff.captions.word_shares` of all the samples), "n"} and the sampling
    settings.
    """
    from .captions import _agreement, _shares, attribute_words, parse_caption
    from .text import prompted

    view = prompted(model, prompts, negative)
    n = check_int(n_per_prompt, "n_per_prompt", low=1) * len(prompts)
    samples, labels, settings = generate(view, sched, n=n, steps=steps, guidance_scale=guidance_scale, seed=seed,
                                         batch_size=batch_size, device=device)
    parsed = [parse_caption(prompts[i]) for i in labels.tolist()]                # (class, words asked) per sample
    classes = torch.tensor([label for label, _ in parsed])
    measured = attribute_words(samples, classes)                                # measured once, read twice
    classifier = classifier if classifier is not None else load_classifier()
    agree = float((predicted_labels(classifier, samples) == classes).double().mean())
    return dict(class_agreement=agree, class_agreement_se=math.sqrt(agree * (1 - agree) / n),
                attributes=_agreement(parsed, measured), word_shares=_shares(measured), n=n, **settings)
