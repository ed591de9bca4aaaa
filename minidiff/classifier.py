"""The small Fashion-MNIST classifier whose features FD_cls compares, its training recipe and its weights file.

Inception-based FID needs weights from the internet and means little on 28x28 grey images. Instead we use the
features of our own small Fashion-MNIST classifier, trained by a committed recipe (:func:`train_classifier`) and
shipped as ``checkpoints/classifier.safetensors``. The metrics built on it are in :mod:`minidiff.metrics`.

The shipped classifier first checks samples in chapter 4 (how many show their class); chapter 6 uses its
features for FD_cls.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write, write_json
from ._validate import check_int, check_real
from .runtime import machine_description, model_device

CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "checkpoints" / "classifier.safetensors"
IMAGE_SHAPE = (1, 28, 28)


# ------------------------------------------------------------------------------------------ the network
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
        self.config = _check_config(width=width, feature_dim=feature_dim, num_classes=num_classes)

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = self.config["width"]
        self.body = nn.Sequential(*conv(1, w), nn.MaxPool2d(2),                        # (B, w, 14, 14)
                                  *conv(w, 2 * w), nn.MaxPool2d(2),                    # (B, 2w, 7, 7)
                                  *conv(2 * w, 2 * w), nn.MaxPool2d(2), nn.Flatten())  # (B, 2w * 3 * 3)
        self.feature = nn.Sequential(nn.Linear(2 * w * 9, self.config["feature_dim"]), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(self.config["feature_dim"], self.config["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features (B, feature_dim) of images x (B, 1, 28, 28) in [-1, 1]."""
        return self.feature(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))


def _check_config(*, width, feature_dim, num_classes) -> dict:
    return dict(width=check_int(width, "width", low=1), feature_dim=check_int(feature_dim, "feature_dim", low=1),
                num_classes=check_int(num_classes, "num_classes", low=2))


def check_images(images, name: str) -> torch.Tensor:
    """``images`` must be a floating-point tensor (N, 1, 28, 28), Fashion-MNIST's shape."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor of shape (N, 1, 28, 28), got "
                        f"{type(images).__name__}" + (f" of dtype {images.dtype}" if torch.is_tensor(images) else ""))
    if images.ndim != 4 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(f"{name} must have shape (N, 1, 28, 28) (Fashion-MNIST), got {tuple(images.shape)}")
    return images


# ------------------------------------------------------------------------------------------ applying it
@contextlib.contextmanager
def eval_mode(model):
    """Run the block with ``model`` in eval mode; its training mode comes back afterwards, also on an error."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def _apply(classifier: nn.Module, images: torch.Tensor, fn: str, batch_size: int = 1000) -> torch.Tensor:
    """``classifier.features`` or ``classifier`` (logits) over ``images`` in batches, in eval mode; float64 on CPU.

    Images are clamped to the data range [-1, 1] first, as saving them as pictures would.
    """
    device = model_device(classifier)
    method = classifier.features if fn == "features" else classifier
    with eval_mode(classifier):
        out = [method(images[i:i + batch_size].to(device).float().clamp(-1, 1)).double().cpu()
               for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def classifier_features(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The classifier's penultimate-layer features (N, feature_dim), float64 on the CPU, of ``images``
    (N, 1, 28, 28) in [-1, 1] (values outside are clamped), computed in batches in eval mode."""
    return _apply(classifier, images, "features")


def predicted_labels(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The class (N,) the classifier gives each of ``images`` (N, 1, 28, 28) in [-1, 1], on the CPU."""
    return _apply(classifier, images, "logits").argmax(dim=1)


def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` the classifier labels correctly."""
    predicted = predicted_labels(classifier, check_images(images, "images"))
    return float((predicted == labels.cpu()).double().mean())


# ------------------------------------------------------------------------------------------ the recipe
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
    from .data import load_fashion_mnist

    recipe = _check_recipe(epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, weight_decay=weight_decay)
    device = torch.device(device) if device is not None else torch.device("cpu")
    x_train, y_train = load_fashion_mnist("train", root=root)
    x_test, y_test = load_fashion_mnist("test", root=root)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(recipe["seed"])               # initialisation and dropout, inside fork_rng only
        model = Classifier(width=width).to(device)
        seconds = _fit(model, x_train, y_train, device=device, log=log, **recipe)
    model.eval()
    acc = accuracy(model, x_test, y_test)
    record = dict(test_accuracy=round(acc, 4), train_seconds=round(seconds, 1), **recipe, config=model.config,
                  n_params=sum(p.numel() for p in model.parameters()), machine=machine_description(device),
                  torch=torch.__version__)
    if log is not None:
        log(f"test accuracy {acc:.4f} after {seconds:.0f} s of training")
    if out is not None:
        save_classifier(model, out, record)
    return model, record


def _check_recipe(*, epochs, seed, batch_size, lr, weight_decay) -> dict:
    return dict(epochs=check_int(epochs, "epochs", low=1), seed=check_int(seed, "seed"),
                batch_size=check_int(batch_size, "batch_size", low=1), lr=check_real(lr, "lr", low=0.0, low_open=True),
                weight_decay=check_real(weight_decay, "weight_decay", low=0.0))


def _fit(model: Classifier, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, batch_size: int, lr: float,
         weight_decay: float, device: torch.device, log) -> float:
    """Train ``model`` on images x (N, 1, 28, 28) and labels y (N,) with cross-entropy; return the seconds taken."""
    from .data import TensorLoader

    loader = TensorLoader(x, y, batch_size=batch_size, generator=torch.Generator().manual_seed(seed), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(loader))
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if log is not None:
            log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(loader):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ the weights file
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
    from safetensors.torch import load_file

    from .checkpoint import CheckpointError

    path = _check_weights_file(path)
    try:
        model = Classifier(**_weights_config(path))
        model.load_state_dict(load_file(str(path)))
    except Exception as e:              # safetensors raises its own SafetensorError; torch a RuntimeError
        raise CheckpointError(f"{path} is not a usable classifier weights file: "
                              f"{' '.join(str(e).split())[:300]}") from e
    return model.to(device if device is not None else "cpu").eval()


def _check_weights_file(path) -> Path:
    """The classifier file to load: ``path``, or the shipped one; it must exist."""
    if path is None:
        from .pretrained import pretrained

        path = pretrained("classifier.safetensors")         # shipped inside the package
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at {path}; train them with "
                                f"`python -m minidiff train-classifier --out {path}`")
    return path


def _weights_config(path: Path) -> dict:
    """The :class:`Classifier` arguments stored in a weights file's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} has no 'config' metadata: not a minidiff classifier checkpoint")
    return json.loads(meta["config"])
