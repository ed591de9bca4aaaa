"""Measuring sample quality offline: FD_cls and class agreement on Fashion-MNIST — used from chapter 5 on.

Inception-based FID needs weights from the internet and means little on 28x28 grey images. Instead we use
the features of our own small Fashion-MNIST classifier (trained by a committed recipe, :func:`train_classifier`,
and shipped as ``checkpoints/classifier.safetensors``):

- **FD_cls**: the Fréchet distance between Gaussians fitted to the classifier's penultimate-layer features of
  generated and of real test images (Heusel et al. 2017, eq. in section 3, with our features instead of
  Inception's), always reported next to its **floor**: the same distance between as many *real* training
  images and the test images. Compare numbers only at equal sample counts.
- **Class agreement**: for a class-conditional model, how often the classifier assigns a sample the label it
  was generated for.

Introduced in chapter 5, where the samplers are first compared.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_choice, check_int, check_real
from ._io import atomic_write

CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "checkpoints" / "classifier.safetensors"
IMAGE_SHAPE = (1, 28, 28)


# ------------------------------------------------------------------------------------------ classifier
class Classifier(nn.Module):
    """A small CNN for 28x28 grey images: three conv stages, a feature layer and a linear head::

        x (B, 1, 28, 28)
        -> conv, pool    (B, w, 14, 14)
        -> conv, pool    (B, 2w, 7, 7)
        -> conv, pool    (B, 2w, 3, 3) -> flatten
        -> Linear + ReLU: features (B, feature_dim)
        -> Linear: logits (B, num_classes)

    Each conv is 3x3 followed by BatchNorm and ReLU; w is ``width``.

    Args:
        width: channels of the first conv stage.
        feature_dim: size of the feature layer (the FD_cls features).
        num_classes: number of classes.
    """

    def __init__(self, *, width: int = 32, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        width = check_int(width, "width", low=1)
        feature_dim = check_int(feature_dim, "feature_dim", low=1)
        num_classes = check_int(num_classes, "num_classes", low=2)
        self.config = dict(width=width, feature_dim=feature_dim, num_classes=num_classes)

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(*conv(1, w), nn.MaxPool2d(2),                        # (B, w, 14, 14)
                                  *conv(w, 2 * w), nn.MaxPool2d(2),                    # (B, 2w, 7, 7)
                                  *conv(2 * w, 2 * w), nn.MaxPool2d(2), nn.Flatten())  # (B, 2w * 3 * 3)
        self.feature = nn.Sequential(nn.Linear(2 * w * 9, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (B, feature_dim) of images x (B, 1, 28, 28) in [-1, 1]."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))


def _check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor of shape (N, 1, 28, 28), got "
                        f"{type(images).__name__}" + (f" of dtype {images.dtype}" if torch.is_tensor(images) else ""))
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) (Fashion-MNIST), got {tuple(images.shape)}")
    return images


def _device_of(model) -> torch.device:
    """The device of a module's parameters (CPU for a parameterless callable, e.g. the oracle)."""
    params = getattr(model, "parameters", None)
    return next(iter(params()), torch.empty(0)).device if callable(params) else torch.device("cpu")


@torch.no_grad()
def _apply(classifier: nn.Module, images: torch.Tensor, fn: str, batch_size: int = 1000) -> torch.Tensor:
    """``classifier.features`` or ``classifier`` (logits) over ``images`` in batches, in eval mode; float64 on CPU.

    Images are clamped to the data range [-1, 1] first, as saving them as pictures would.
    """
    was_training = classifier.training
    classifier.eval()
    device = _device_of(classifier)
    method = classifier.features if fn == "features" else classifier
    try:
        out = [method(images[i:i + batch_size].to(device).float().clamp(-1, 1)).double().cpu()
               for i in range(0, images.shape[0], batch_size)]
    finally:
        classifier.train(was_training)
    return torch.cat(out)


def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` the classifier labels correctly."""
    logits = _apply(classifier, _check_images(images, "images"), "logits")
    return float((logits.argmax(dim=1) == labels.cpu()).double().mean())


def train_classifier(*, epochs: int = 4, seed: int = 0, device=None, batch_size: int = 128, lr: float = 3e-3,
                     weight_decay: float = 1e-4, width: int = 32, out=None, root=None,
                     log=print) -> tuple[Classifier, dict]:
    """The committed recipe for the FD_cls classifier: AdamW with a one-cycle learning rate on all 60,000
    Fashion-MNIST training images (no augmentation), then one pass over the test set.

    The global random state is left untouched: all randomness comes from ``seed``.

    Args:
        epochs: passes over the training set.
        seed: the source of every random draw (initial weights, data order, dropout).
        device: where to train (default: CPU).
        batch_size: images per step.
        lr: the peak learning rate of the one-cycle schedule.
        weight_decay: AdamW's decoupled weight decay.
        width: the classifier's width (see :class:`Classifier`).
        out: if given, save the weights there (safetensors, written atomically) and a JSON record beside it.
        root: where to look for the data (see :func:`minidiff.data.load_fashion_mnist`).
        log: called with one progress line per epoch (``None``: silent).

    The defaults are the shipped model's recipe.

    Returns:
        ``(classifier, record)``: the classifier in eval mode and a dict with ``"test_accuracy"``,
        ``"train_seconds"`` and the recipe.
    """
    from .data import TensorLoader, load_fashion_mnist

    epochs = check_int(epochs, "epochs", low=1)
    seed = check_int(seed, "seed")
    batch_size = check_int(batch_size, "batch_size", low=1)
    lr = check_real(lr, "lr", low=0.0, low_open=True)
    weight_decay = check_real(weight_decay, "weight_decay", low=0.0)
    device = torch.device(device) if device is not None else torch.device("cpu")
    x_train, y_train = load_fashion_mnist("train", root=root)
    x_test, y_test = load_fashion_mnist("test", root=root)

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)                         # initialisation and dropout, inside fork_rng only
        model = Classifier(width=width).to(device)
        loader = TensorLoader(x_train, y_train, batch_size=batch_size, generator=gen, device=device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
        start = time.perf_counter()
        for epoch in range(epochs):
            model.train()
            total = 0.0
            for x, y in loader:
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item()
            if log is not None:
                log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(loader):.4f} "
                    f"({time.perf_counter() - start:.0f} s)")
        seconds = time.perf_counter() - start
    model.eval()
    acc = accuracy(model, x_test, y_test)
    record = dict(test_accuracy=round(acc, 4), train_seconds=round(seconds, 1), epochs=epochs, seed=seed,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, config=model.config,
                  n_params=sum(p.numel() for p in model.parameters()), machine=machine_description(device),
                  torch=torch.__version__)
    if log is not None:
        log(f"test accuracy {acc:.4f} after {seconds:.0f} s of training")
    if out is not None:
        save_classifier(model, out, record)
    return model, record


def cpu_model() -> str:
    """The processor's name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows), for result files."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{os.cpu_count()}-core CPU ({platform.machine()}, {platform.system()}), {torch.get_num_threads()} threads"


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    path = Path(path)
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def save_classifier(model: Classifier, path, record: dict | None = None) -> Path:
    """Save the weights as safetensors (config in its metadata) and, if given, ``record`` as JSON beside it."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda f: f.write(save(tensors, metadata={"config": json.dumps(model.config)})))
    if record is not None:
        write_json(path.with_suffix(".json"), record)
    return path


def load_classifier(path=None, *, device=None) -> Classifier:
    """Load the FD_cls classifier (default: the shipped ``checkpoints/classifier.safetensors``), in eval mode.

    safetensors files hold only tensors and a string metadata table: loading runs no code.

    Args:
        path: a ``.safetensors`` file written by :func:`train_classifier`.
        device: where to put the model (default: CPU).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if path is None:
        from .pretrained import pretrained

        path = pretrained("classifier.safetensors")         # shipped inside the package
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with "
                                f"`python -m minidiff train-classifier --out {path}`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: not a minidiff classifier checkpoint")
    model = Classifier(**json.loads(meta["config"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(device if device is not None else "cpu").eval()


# ------------------------------------------------------------------------------------------ the metric
def _as_float64(a, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        try:
            a = torch.as_tensor(a)
        except Exception as err:
            raise TypeError(f"{name} must be a tensor or an array, got {type(a).__name__}") from err
    return a.detach().to("cpu", torch.float64)


def _sqrt_psd(c: torch.Tensor, name: str) -> torch.Tensor:
    """Symmetric square root of a PSD matrix by eigh; only round-off-sized negative eigenvalues are clamped."""
    lam, v = torch.linalg.eigh(c)                                                     # (d,), (d, d)
    _check_psd(lam, name)
    return (v * lam.clamp(min=0).sqrt()) @ v.T                                        # (d, d)


def _check_psd(lam: torch.Tensor, name: str) -> None:
    tol = 1e-10 * max(float(lam.abs().max()), 1e-300) * lam.numel()
    if float(lam.min()) < -tol:
        raise ValueError(f"{name} must be positive semi-definite; it has an eigenvalue {float(lam.min()):.3e} "
                         f"(more negative than round-off, tolerance {tol:.1e})")


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2)::

        d^2 = ||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr( (C1^1/2 C2 C1^1/2)^1/2 )

    (Dowson & Landau 1982; FID, Heusel et al. 2017). tr((C1 C2)^1/2) is computed through the symmetric
    matrix C1^1/2 C2 C1^1/2 with ``eigh`` in float64 — no complex parts to discard, unlike ``sqrtm(C1 @ C2)``.

    Args:
        mu1: (d,) the first mean.
        cov1: (d, d) the first covariance, symmetric positive semi-definite.
        mu2: (d,) the second mean.
        cov2: (d, d) the second covariance.
    """
    mu1, cov1 = _as_float64(mu1, "mu1"), _as_float64(cov1, "cov1")
    mu2, cov2 = _as_float64(mu2, "mu2"), _as_float64(cov2, "cov2")
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a vector (d,), got shape {tuple(mu1.shape)}")
    d = mu1.shape[0]
    for name, v, shape in (("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if tuple(v.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1, got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or inf values")
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        asym = float((c - c.T).abs().max())
        if asym > 1e-8 * max(float(c.abs().max()), 1e-300):
            raise ValueError(f"{name} must be symmetric; max |C - C^T| = {asym:.3e}")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    s1 = _sqrt_psd(cov1, "cov1")                                                      # C1^1/2, (d, d)
    _check_psd(torch.linalg.eigvalsh(cov2), "cov2")
    m = s1 @ cov2 @ s1                                                                # (d, d), symmetric PSD
    lam = torch.linalg.eigvalsh((m + m.T) / 2)                                        # (d,)
    _check_psd(lam, "C1^1/2 C2 C1^1/2")
    tr_sqrt = float(lam.clamp(min=0).sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff) + float(cov1.trace()) + float(cov2.trace()) - 2.0 * tr_sqrt


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), in float64."""
    f = _as_float64(features, "features")
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, d) with N >= 2, got {tuple(f.shape)}")
    mu = f.mean(dim=0)                                                                # (d,)
    centred = f - mu                                                                  # (N, d)
    return mu, centred.T @ centred / (f.shape[0] - 1)                                 # (d,), (d, d)


def fd_cls(images_a: torch.Tensor, images_b: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """FD_cls: Fréchet distance between the classifier features of two image sets (N, 1, 28, 28) in [-1, 1].

    Args:
        images_a: (N, 1, 28, 28) images in [-1, 1].
        images_b: (M, 1, 28, 28) images in [-1, 1].
        classifier: whose features to compare; default the shipped one (:func:`load_classifier`).
    """
    classifier = classifier if classifier is not None else load_classifier()
    fa = _apply(classifier, _check_images(images_a, "images_a"), "features")         # (Na, d)
    fb = _apply(classifier, _check_images(images_b, "images_b"), "features")         # (Nb, d)
    return frechet_distance(*feature_stats(fa), *feature_stats(fb))


def class_agreement(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) that the classifier assigns their intended ``labels`` (N,).

    Args:
        images: (N, 1, 28, 28) images in [-1, 1].
        labels: (N,) the labels they were generated for.
        classifier: default the shipped one (:func:`load_classifier`).
    """
    classifier = classifier if classifier is not None else load_classifier()
    images = _check_images(images, "images")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got {labels!r:.80}")
    num_classes = classifier.config["num_classes"]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    logits = _apply(classifier, images, "logits")                                    # (N, num_classes)
    return float((logits.argmax(dim=1) == labels.cpu()).double().mean())


def class_diversity(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Within-class diversity: the trace of the classifier-feature covariance inside each class, averaged
    over the classes present (each with at least 2 images).

    0 when every image of a class is the same; compare generated images with real ones of the same labels
    (the ratio is 1 for a generator as varied as the data).

    Args:
        images: (N, 1, 28, 28) images in [-1, 1].
        labels: (N,) their labels.
        classifier: default the shipped one (:func:`load_classifier`).
    """
    classifier = classifier if classifier is not None else load_classifier()
    images = _check_images(images, "images")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got {labels!r:.80}")
    features = _apply(classifier, images, "features").double()                       # (N, d)
    labels = labels.cpu()
    traces = [torch.diagonal(feature_stats(features[labels == c])[1]).sum()
              for c in labels.unique().tolist() if int((labels == c).sum()) >= 2]
    if not traces:
        raise ValueError("class_diversity needs at least 2 images of some class")
    return float(torch.stack(traces).mean())


def _real_subset(split: str, n: int, seed: int, root=None) -> torch.Tensor:
    """n real Fashion-MNIST images of ``split``, a fixed random subset (from ``seed``)."""
    from .data import load_fashion_mnist

    images, _ = load_fashion_mnist(split, root=root)
    idx = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx]                                                                # (n, 1, 28, 28)


def evaluate_samples(samples: torch.Tensor, labels: torch.Tensor | None = None, *,
                     classifier: nn.Module | None = None, n: int | None = None, root=None) -> dict:
    """FD_cls of ``samples`` against n test images, its floor (n train vs the same n test images), and —
    with ``labels`` — the class agreement.

    Args:
        samples: (N, 1, 28, 28) generated images in [-1, 1]; the first ``n`` are used (default: all, at most
            10,000, the size of the test set).
        labels: optional (N,) labels the samples were generated for.
        classifier: default the shipped one (:func:`load_classifier`).
        n: how many samples, test and training images to compare.
        root: where to look for the real images (see :func:`minidiff.data.load_fashion_mnist`).

    Returns:
        {"fd_cls", "fd_cls_floor", "class_agreement" (only with labels), "n"}.
    """
    samples = _check_images(samples, "samples")
    n = samples.shape[0] if n is None else check_int(n, "n", low=2)
    if not 2 <= n <= min(samples.shape[0], 10000):
        raise ValueError(f"n must be in [2, {min(samples.shape[0], 10000)}] (the number of samples, at most the "
                         f"10,000 test images), got {n}")
    classifier = classifier if classifier is not None else load_classifier()
    test = _apply(classifier, _real_subset("test", n, seed=0, root=root), "features")    # (n, d)
    train = _apply(classifier, _real_subset("train", n, seed=1, root=root), "features")  # (n, d)
    fake = _apply(classifier, samples[:n], "features")                                   # (n, d)
    test_stats = feature_stats(test)
    result = dict(fd_cls=frechet_distance(*feature_stats(fake), *test_stats),
                  fd_cls_floor=frechet_distance(*feature_stats(train), *test_stats))
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape[:1] != samples.shape[:1]:
            raise ValueError(f"labels must be a tensor of shape ({samples.shape[0]},) like the samples, got "
                             f"{labels!r:.80}")
        result["class_agreement"] = class_agreement(samples[:n], labels[:n], classifier)
    result["n"] = n
    return result


def generate(model: nn.Module, sched, *, n: int, sampler: str = "ddim", steps: int | None = None,
             eta: float = 0.0, guidance: float = 1.0, batch_size: int = 500, seed: int = 0,
             device=None, variance: str = "beta_tilde",
             callback=None) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """Sample ``n`` Fashion-MNIST images in batches: the sampling half of :func:`evaluate_model`.

    A class-conditional model gets class-balanced labels (sample i has label i mod num_classes) and guidance
    scale ``guidance``; an unconditional one needs ``guidance=1``.

    Args:
        model: the diffusion model, ``model(x_t, t, y) -> eps_hat`` for 1 x 28 x 28 images.
        sched: its noise schedule.
        n: number of images.
        sampler: ``"ddim"`` or ``"ddpm"``.
        steps: model calls per image; default 50 for DDIM and all T for DDPM (fewer: DDPM on the respaced
            chain).
        eta: DDIM's noise level.
        guidance: the guidance scale for a class-conditional model (class-balanced labels); 1 otherwise.
        batch_size: images per sampler call.
        seed: seeds the sampler's generator.
        device: where to sample (default: the model's device).
        variance: DDPM's, ``"beta_tilde"`` or ``"beta"``.
        callback: ``callback(i, t, x_t, x0_hat)``, passed to the sampler of every batch: it is called once per
            step of each batch (a progress bar's hook).

    Returns:
        (samples (n, 1, 28, 28) on the CPU, labels (n,) or None, settings: sampler, steps, eta, guidance, seed,
        seconds spent sampling).
    """
    from .guidance import num_classes_of
    from .samplers import VARIANCES, ddim_sample, ddpm_sample

    sampler = check_choice(sampler, "sampler", ("ddim", "ddpm"))
    n = check_int(n, "n", low=2, high=10000)
    batch_size = check_int(batch_size, "batch_size", low=1)
    seed = check_int(seed, "seed")
    eta = check_real(eta, "eta", low=0.0)
    guidance = check_real(guidance, "guidance")
    variance = check_choice(variance, "variance", VARIANCES)
    default_steps = sched.T if sampler == "ddpm" else 50
    steps = check_int(default_steps if steps is None else steps, "steps", low=1, high=sched.T)
    in_channels = getattr(model, "config", {}).get("in_channels", 1)
    if in_channels != 1:
        raise ValueError(f"the model must generate 1-channel 28x28 images (Fashion-MNIST), its in_channels is "
                         f"{in_channels}")
    num_classes = num_classes_of(model)
    if num_classes is None and guidance != 1.0:
        raise ValueError(f"guidance={guidance} needs a class-conditional model; this one is unconditional "
                         "(use guidance=1)")
    device = torch.device(device) if device is not None else _device_of(model)
    labels = torch.arange(n) % num_classes if num_classes is not None else None              # (n,)
    gen = torch.Generator().manual_seed(seed)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    chunks = []
    start = time.perf_counter()
    try:
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            y = labels[i:i + b].to(device) if labels is not None else None
            kwargs = dict(y=y, guidance_scale=guidance if y is not None else 1.0, generator=gen, device=device,
                          callback=callback)
            if sampler == "ddim":
                x = ddim_sample(model, (b, *IMAGE_SHAPE), sched, steps=steps, eta=eta, **kwargs)
            else:
                x = ddpm_sample(model, (b, *IMAGE_SHAPE), sched, steps=steps, variance=variance, **kwargs)
            chunks.append(x.float().cpu())                                               # (b, 1, 28, 28)
    finally:
        if was_training:
            model.train()
    settings = dict(sampler=sampler, steps=steps, eta=eta if sampler == "ddim" else None, guidance=guidance,
                    seed=seed, seconds=round(time.perf_counter() - start, 2))
    if sampler == "ddpm":
        settings["variance"] = variance
    return torch.cat(chunks), labels, settings                                         # (n, 1, 28, 28)


def evaluate_model(model: nn.Module, sched, *, n: int = 10000, sampler: str = "ddim", steps: int | None = None,
                   eta: float = 0.0, guidance: float = 1.0, batch_size: int = 500, seed: int = 0, device=None,
                   classifier: nn.Module | None = None, root=None, callback=None) -> dict:
    """Sample ``n`` Fashion-MNIST images from a diffusion model (:func:`generate`) and score them with
    :func:`evaluate_samples`. The sampling arguments (``sampler``, ``steps``, ``eta``, ``guidance``,
    ``batch_size``, ``seed``, ``device``) are those of :func:`generate`.

    Args:
        model: the diffusion model, ``model(x_t, t, y) -> eps_hat`` for 1 x 28 x 28 images.
        sched: its noise schedule.
        n: number of images (at most 10,000, the test set).
        classifier: default the shipped one (:func:`load_classifier`).
        root: where to look for the real images (see :func:`minidiff.data.load_fashion_mnist`).
        callback: called once per sampler step of every batch (see :func:`generate`).

    Returns:
        the metrics plus the sampling settings and ``seconds`` spent sampling.
    """
    samples, labels, settings = generate(model, sched, n=n, sampler=sampler, steps=steps, eta=eta,
                                         guidance=guidance, batch_size=batch_size, seed=seed, device=device,
                                         callback=callback)
    result = evaluate_samples(samples, labels, classifier=classifier, n=n, root=root)
    result.update(settings)
    return result
