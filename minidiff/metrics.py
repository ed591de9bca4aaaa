"""Scoring samples offline: the Fréchet distance, FD_cls, class agreement and within-class diversity.

All three scores look at images through the shipped Fashion-MNIST classifier (:mod:`minidiff.classifier`):

- **FD_cls**: the Fréchet distance between Gaussians fitted to the classifier's penultimate-layer features of
  generated and of real test images (Heusel et al. 2017, eq. in section 3, with our features instead of
  Inception's), always reported next to its **floor**: the same distance between as many *real* training
  images and the test images. Compare numbers only at equal sample counts.
- **Class agreement**: for a class-conditional model, how often the classifier assigns a sample the label it
  was generated for.
- **Class diversity**: how spread out the features of each class are, to set next to that of real images.
- **Precision and recall** (Kynkäänniemi et al. 2019): the fraction of samples that look like some real image,
  and of real images that some sample looks like — mode coverage, where FD_cls mixes both into one number.

Introduced in chapter 6, where the samplers' quality is first measured (chapters 4 and 5 already count class
agreement); :func:`minidiff.evaluate.evaluate_samples` computes FD_cls and its floor in one call.
"""
from __future__ import annotations

import torch
from torch import nn

from .classifier import check_images, classifier_features, load_classifier, predicted_labels


# ------------------------------------------------------------------------------------------ Gaussians
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
    mu1, cov1, mu2, cov2 = _check_gaussians(mu1, cov1, mu2, cov2)
    s1 = _sqrt_psd(cov1)                                                              # C1^1/2, (d, d)
    m = s1 @ cov2 @ s1                                                                # (d, d), symmetric PSD
    lam = _psd_eigenvalues((m + m.T) / 2, "C1^1/2 C2 C1^1/2")                         # (d,), >= 0
    tr_sqrt = float(lam.sqrt().sum())
    diff = mu1 - mu2
    return float(diff @ diff) + float(cov1.trace()) + float(cov2.trace()) - 2.0 * tr_sqrt


def _sqrt_psd(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix by eigh (round-off-sized negative eigenvalues count as 0)."""
    lam, v = torch.linalg.eigh(c)                                                     # (d,), (d, d)
    return (v * lam.clamp(min=0).sqrt()) @ v.T                                        # (d, d)


def _psd_eigenvalues(c: torch.Tensor, name: str) -> torch.Tensor:
    """Eigenvalues of a symmetric PSD matrix, round-off-sized negative ones set to 0 (larger ones raise)."""
    lam = torch.linalg.eigvalsh(c)                                                    # (d,)
    _check_psd(lam, name)
    return lam.clamp(min=0)


def _check_gaussians(mu1, cov1, mu2, cov2) -> tuple[torch.Tensor, ...]:
    """The two means and covariances as float64 CPU tensors, checked: shapes (d,) and (d, d), finite values,
    covariances symmetric (then exactly symmetrised) and positive semi-definite up to round-off."""
    mu1, cov1 = _as_float64(mu1, "mu1"), _as_float64(cov1, "cov1")
    mu2, cov2 = _as_float64(mu2, "mu2"), _as_float64(cov2, "cov2")
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a vector (d,), got shape {tuple(mu1.shape)}")
    d = mu1.shape[0]
    for name, v, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if tuple(v.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1, got {tuple(v.shape)}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} contains NaN or inf values")
    for name, c in (("cov1", cov1), ("cov2", cov2)):
        asym = float((c - c.T).abs().max())
        if asym > 1e-8 * max(float(c.abs().max()), 1e-300):
            raise ValueError(f"{name} must be symmetric; max |C - C^T| = {asym:.3e}")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    _check_psd(torch.linalg.eigvalsh(cov1), "cov1")
    _check_psd(torch.linalg.eigvalsh(cov2), "cov2")
    return mu1, cov1, mu2, cov2


def _check_psd(lam: torch.Tensor, name: str) -> None:
    tol = 1e-10 * max(float(lam.abs().max()), 1e-300) * lam.numel()
    if float(lam.min()) < -tol:
        raise ValueError(f"{name} must be positive semi-definite; it has an eigenvalue {float(lam.min()):.3e} "
                         f"(more negative than round-off, tolerance {tol:.1e})")


def _as_float64(a, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor):
        try:
            a = torch.as_tensor(a)
        except Exception as err:
            raise TypeError(f"{name} must be a tensor or an array, got {type(a).__name__}") from err
    return a.detach().to("cpu", torch.float64)


def feature_stats(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and unbiased covariance (d, d) of features (N, d), in float64."""
    f = _check_features(features)
    mu = f.mean(dim=0)                                                                # (d,)
    centred = f - mu                                                                  # (N, d)
    return mu, centred.T @ centred / (f.shape[0] - 1)                                 # (d,), (d, d)


def _check_features(features) -> torch.Tensor:
    f = _as_float64(features, "features")
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N, d) with N >= 2, got {tuple(f.shape)}")
    return f


def precision_recall(fake_features, real_features, *, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019): how much of each set lies on the other's manifold.

    Each set's manifold is estimated as the union of balls around its points, each ball's radius the distance
    from the point to its k-th nearest neighbour within the set. Then::

        precision = fraction of fake points inside the real manifold
        recall    = fraction of real points inside the fake manifold

    Precision asks whether the samples are realistic, recall whether every kind of real image is produced.

    A generator that collapses onto a few modes keeps its precision and loses recall; one that spreads over
    everything keeps recall and loses precision. Both estimates depend on k and on the set sizes: compare them
    at equal sizes.

    Args:
        fake_features: (N, d) features of generated samples.
        real_features: (M, d) features of real images.
        k: the neighbour that sets each radius (the paper uses k = 3), 1 <= k < min(N, M).

    Returns:
        {"precision": float, "recall": float, "k": k}.

    Introduced in chapter 8.
    """
    fake, real = _check_features(fake_features), _check_features(real_features)
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"fake_features and real_features must have the same width d, got {fake.shape[1]} and "
                         f"{real.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(len(fake), len(real)):
        raise ValueError(f"k must be an int in [1, {min(len(fake), len(real)) - 1}] (below both set sizes), "
                         f"got {k!r}")

    def radii(f):                       # distance of each point to its k-th nearest neighbour in its own set
        d = torch.cdist(f, f)                                                        # (N, N), 0 on the diagonal
        return d.kthvalue(k + 1, dim=1).values                                       # (N,): k + 1 skips itself

    def inside(points, centres, r):     # is each point within some centre's ball?
        return (torch.cdist(points, centres) <= r[None, :]).any(dim=1)               # (P,)

    precision = float(inside(fake, real, radii(real)).double().mean())
    recall = float(inside(real, fake, radii(fake)).double().mean())
    return dict(precision=precision, recall=recall, k=k)


def fd_bootstrap(features_a, features_b, *, resamples: int = 50, generator: torch.Generator | None = None) -> dict:
    """The Fréchet distance between two feature sets and its bootstrap standard deviation.

    Each of ``resamples`` rounds redraws both sets with replacement (same sizes) and recomputes the distance; the
    standard deviation of those values is the error bar. (A bootstrap distance is biased upwards — duplicated
    points shrink the covariances — so only the spread is used, not the resampled values' mean.)

    Args:
        features_a: (N, d) features, e.g. of generated images.
        features_b: (M, d) features, e.g. of real images.
        resamples: bootstrap rounds, >= 2.
        generator: the source of the resampling indices.

    Returns:
        {"fd": the distance of the sets as given, "sd": the bootstrap standard deviation, "resamples"}.

    Introduced in chapter 8.
    """
    fa, fb = _check_features(features_a), _check_features(features_b)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 2:
        raise ValueError(f"resamples must be an int >= 2, got {resamples!r}")
    fd = lambda a, b: frechet_distance(*feature_stats(a), *feature_stats(b))          # noqa: E731
    boot = [fd(fa[torch.randint(len(fa), (len(fa),), generator=generator)],
               fb[torch.randint(len(fb), (len(fb),), generator=generator)]) for _ in range(resamples)]
    return dict(fd=fd(fa, fb), sd=float(torch.tensor(boot, dtype=torch.float64).std()), resamples=resamples)


def psnr(images: torch.Tensor, originals: torch.Tensor, *, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, 10 log10(data_range^2 / MSE) in dB: (N, ...) -> (N,).

    ``data_range`` is the span of the pixel values: 2 for images in [-1, 1]. An exact copy scores inf.

    Introduced in chapter 8.
    """
    if not isinstance(images, torch.Tensor) or not isinstance(originals, torch.Tensor):
        raise TypeError(f"images and originals must be tensors, got {type(images).__name__} and "
                        f"{type(originals).__name__}")
    if images.shape != originals.shape or images.ndim < 2:
        raise ValueError(f"images and originals must have one shape (N, ...), got {tuple(images.shape)} and "
                         f"{tuple(originals.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    mse = (images.double() - originals.double()).pow(2).flatten(1).mean(1)                 # (N,)
    return 10 * torch.log10(data_range**2 / mse)


# ------------------------------------------------------------------------------------------ the scores
def fd_cls(images_a: torch.Tensor, images_b: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """FD_cls: Fréchet distance between the classifier features of two image sets (N, 1, 28, 28) in [-1, 1].

    Args:
        images_a: (N, 1, 28, 28) images in [-1, 1].
        images_b: (M, 1, 28, 28) images in [-1, 1].
        classifier: whose features to compare; default the shipped one (:func:`~minidiff.classifier.load_classifier`).
    """
    check_images(images_a, "images_a")
    check_images(images_b, "images_b")
    classifier = classifier if classifier is not None else load_classifier()
    fa = classifier_features(classifier, images_a)                                   # (Na, d)
    fb = classifier_features(classifier, images_b)                                   # (Nb, d)
    return frechet_distance(*feature_stats(fa), *feature_stats(fb))


def class_agreement(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) that the classifier assigns their intended ``labels`` (N,).

    Args:
        images: (N, 1, 28, 28) images in [-1, 1].
        labels: (N,) the labels they were generated for.
        classifier: default the shipped one (:func:`~minidiff.classifier.load_classifier`).
    """
    classifier = classifier if classifier is not None else load_classifier()
    _check_labelled_images(images, labels, num_classes=classifier.config["num_classes"])
    predicted = predicted_labels(classifier, images)                                 # (N,)
    return float((predicted == labels.cpu()).double().mean())


def class_diversity(images: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> float:
    """Within-class diversity: the trace of the classifier-feature covariance inside each class, averaged
    over the classes present (each with at least 2 images).

    0 when every image of a class is the same; compare generated images with real ones of the same labels
    (the ratio is 1 for a generator as varied as the data).

    Args:
        images: (N, 1, 28, 28) images in [-1, 1].
        labels: (N,) their labels.
        classifier: default the shipped one (:func:`~minidiff.classifier.load_classifier`).
    """
    _check_labelled_images(images, labels, pairs=True)
    classifier = classifier if classifier is not None else load_classifier()
    features = classifier_features(classifier, images)                               # (N, d)
    labels = labels.cpu()
    traces = [torch.diagonal(feature_stats(features[labels == c])[1]).sum()
              for c in labels.unique().tolist() if int((labels == c).sum()) >= 2]
    return float(torch.stack(traces).mean())


def _check_labelled_images(images, labels, *, num_classes: int | None = None, pairs: bool = False) -> None:
    """Images (N, 1, 28, 28) and integer labels (N,); labels in [0, num_classes - 1] if given; with ``pairs``,
    at least 2 images of some class."""
    check_images(images, "images")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be an integer tensor of shape ({images.shape[0]},), got {labels!r:.80}")
    if num_classes is not None and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if pairs and not (labels.numel() and int(labels.unique(return_counts=True)[1].max()) >= 2):
        raise ValueError("class_diversity needs at least 2 images of some class")
