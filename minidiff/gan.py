"""A small DCGAN on Fashion-MNIST: the model family that diffusion is measured against in chapter 8.

**The game.** A generative adversarial network (Goodfellow et al. 2014) trains two networks against each other.
The generator G maps a noise vector z ~ N(0, I) to an image G(z); the discriminator D maps an image to the
probability D(x) that it is real rather than generated. They play the minimax game of Goodfellow et al.
(2014), eq. (1)::

    min_G max_D V(D, G) = E_x[log D(x)] + E_z[log(1 - D(G(z)))]

For a fixed G the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_G(x)), and against it the game's
value is -log 4 + 2 JS(p_data || p_G): G wins exactly when its distribution equals the data's. The two players
take turns: one gradient step on D, one on G, with the same batch of fakes.

**The non-saturating generator loss.** Early in training D rejects the fakes easily, D(G(z)) ~ 0, where
log(1 - D(G(z))) is flat and gives G almost no gradient. Goodfellow et al. (section 3) therefore let G maximise
log D(G(z)) instead: the same fixed point, strong gradients where G is losing. With D's logit l(x) (so
D(x) = sigmoid(l(x))) both losses are binary cross-entropies on logits::

    L_D = BCE(l(x), 1) + BCE(l(G(z)), 0) = -log D(x) - log(1 - D(G(z)))
    L_G = BCE(l(G(z)), 1)                = -log D(G(z))

computed with ``binary_cross_entropy_with_logits``, which never forms log(sigmoid(.)) from a rounded
probability. A discriminator at chance, D = 1/2 everywhere, has L_D = 2 log 2 ~ 1.386 and gives
L_G = log 2 ~ 0.693: the training log reads relative to those values.

**The architecture.** DCGAN (Radford et al. 2016, section 3) made GANs of images train reliably with a few
rules, all followed here: no pooling, strided convolutions in D and fractionally strided ones
(``ConvTranspose2d``) in G; BatchNorm in both, except G's output and D's input layer; ReLU in G with a tanh
output (images live in [-1, 1]); LeakyReLU(0.2) in D; Adam with learning rate 2e-4 and beta_1 = 0.5. At 28x28
there are two resolution changes: G goes 7 -> 14 -> 28, D 28 -> 14 -> 7.

**Measuring it.** :func:`train_gan` logs both losses every step and, every ``eval_every`` steps, the FD_cls of
generator samples (:func:`minidiff.evaluate.evaluate_samples`) and the fraction of them in each class the
shipped classifier predicts: a generator that covers only some classes (mode collapse) shows there as empty
classes and a rising FD_cls.

Introduced in chapter 8 (diffusion compared with a GAN).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write, write_json
from ._validate import check_int, check_tensor, randn
from .classifier import check_images, eval_mode
from .runtime import machine_description, model_device

FORMAT = "minidiff-gan-generator"            # the safetensors metadata's "format": what load_gan accepts
GENERATOR_NAME = "generator.safetensors"      # the file `python -m minidiff train-gan --out DIR` writes in DIR
LR, BETAS = 2e-4, (0.5, 0.999)                # Adam, as DCGAN (Radford et al. 2016, section 4)


# ------------------------------------------------------------------------------------------ the networks
class Generator(nn.Module):
    """DCGAN generator for 28x28 grey images: z (B, z_dim) -> images (B, 1, 28, 28) in [-1, 1]::

        z (B, z_dim)
        -> Linear, BatchNorm, ReLU, reshape       (B, 2w, 7, 7)
        -> ConvTranspose 4x4 stride 2, BN, ReLU   (B, w, 14, 14)
        -> ConvTranspose 4x4 stride 2, tanh       (B, 1, 28, 28)

    w is ``width``. Sample it with :func:`gan_sample` (eval mode: BatchNorm uses its running statistics).

    Args:
        z_dim: size of the noise vector z ~ N(0, I).
        width: channels of the 14x14 layer (the 7x7 one has twice as many).

    Introduced in chapter 8.
    """

    def __init__(self, *, z_dim: int = 64, width: int = 64):
        super().__init__()
        self.config = _check_config(z_dim=z_dim, width=width)
        z_dim, w = self.config["z_dim"], self.config["width"]
        self.project = nn.Sequential(nn.Linear(z_dim, 2 * w * 7 * 7, bias=False),   # (B, 2w * 49)
                                     nn.BatchNorm1d(2 * w * 7 * 7), nn.ReLU(inplace=True))
        self.body = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1, bias=False),        # (B, w, 14, 14)
            nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),                        # (B, 1, 28, 28)
            nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [-1, 1] from noise z (B, z_dim)."""
        h = self.project(z).view(z.shape[0], 2 * self.config["width"], 7, 7)        # (B, 2w, 7, 7)
        return self.body(h)                                                          # (B, 1, 28, 28)


class Discriminator(nn.Module):
    """DCGAN discriminator for 28x28 grey images: images (B, 1, 28, 28) -> logits (B,), D(x) = sigmoid(logit)::

        x (B, 1, 28, 28)
        -> Conv 4x4 stride 2, LeakyReLU(0.2)      (B, w, 14, 14)
        -> Conv 4x4 stride 2, BN, LeakyReLU(0.2)  (B, 2w, 7, 7)
        -> flatten, Linear                        (B, 2w * 49) -> (B,)

    The input layer has no BatchNorm (DCGAN's rule); w is ``width``.

    Args:
        width: channels of the 14x14 layer (the 7x7 one has twice as many).

    Introduced in chapter 8.
    """

    def __init__(self, *, width: int = 64):
        super().__init__()
        w = check_int(width, "width", low=1)
        self.config = dict(width=w)
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),          # (B, w, 14, 14)
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2, inplace=True), nn.Flatten())                                     # (B, 2w * 49)
        self.head = nn.Linear(2 * w * 7 * 7, 1)                                                 # (B, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B,) that x (B, 1, 28, 28) is real."""
        return self.head(self.body(x)).squeeze(1)                                    # (B,)


def _check_config(*, z_dim, width) -> dict:
    return dict(z_dim=check_int(z_dim, "z_dim", low=1), width=check_int(width, "width", low=1))


# ------------------------------------------------------------------------------------------ the losses
def gan_losses(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss L_D = -log D(x) - log(1 - D(G(z))), from its logits on real (B,) and fake (B,)
    images (batch means; 2 log 2 when D is at chance). Goodfellow et al. 2014, eq. (1)."""
    real = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))       # -log D(x)
    fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))      # -log(1 - D(G(z)))
    return real + fake


def generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss L_G = -log D(G(z)) from D's logits on fakes (B,) (batch mean;
    log 2 when D is at chance). Goodfellow et al. 2014, section 3."""
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


# ------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def gan_sample(G: Generator, n: int, *, generator: torch.Generator | None = None,
               z: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` images (n, 1, 28, 28) in [-1, 1] from the generator network ``G``: one forward pass, in eval mode.

    The network is called ``G`` (the paper's name) because ``generator=`` is, everywhere in this package, the
    ``torch.Generator`` the random draws come from.

    Args:
        G: a :class:`Generator`.
        n: number of images.
        generator: the source of z ~ N(0, I) (ignored when ``z`` is given).
        z: optional noise (n, z_dim) to use instead.

    Returns:
        images (n, 1, 28, 28) on G's device.

    Introduced in chapter 8.
    """
    z = _check_sample(G, n, generator, z)
    with eval_mode(G):
        return G(z)                                                                  # (n, 1, 28, 28)


def _check_sample(G, n, generator, z) -> torch.Tensor:
    """Check gan_sample's arguments; return the noise z (n, z_dim) on G's device."""
    if not isinstance(G, Generator):
        raise TypeError(f"G must be a minidiff.gan.Generator, got {type(G).__name__}")
    n = check_int(n, "n", low=1)
    device, z_dim = model_device(G), G.config["z_dim"]
    if z is None:
        return randn((n, z_dim), generator=generator, device=device, dtype=torch.float32)
    check_tensor(z, "z")
    if tuple(z.shape) != (n, z_dim):
        raise ValueError(f"z must have shape (n, z_dim) = ({n}, {z_dim}), got {tuple(z.shape)}")
    return z.to(device=device, dtype=torch.float32)


# ------------------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class GANResult:
    """What :func:`train_gan` returns: the generator and discriminator (eval mode), the training log and the
    record saved with the weights.

    ``log`` holds, per step, ``"d_loss"``, ``"g_loss"``, ``"d_real"`` and ``"d_fake"`` (the batch means of
    D(x) and D(G(z)) before that step's update) and, per evaluation, ``"eval_step"``, ``"fd_cls"``,
    ``"fd_cls_floor"`` and ``"class_fractions"`` (10 fractions per evaluation: the classes the shipped
    classifier gives the samples).
    """

    generator: Generator
    discriminator: Discriminator
    log: dict
    record: dict
    path: Path | None


def train_gan(*, steps: int, batch_size: int = 64, seed: int = 0, z_dim: int = 64, width: int = 64,
              eval_every: int = 0, eval_n: int = 500, out=None, data: torch.Tensor | None = None,
              device=None, progress: bool = True, command: str | None = None) -> GANResult:
    """Train a DCGAN on the 60,000 Fashion-MNIST training images (or ``data``): alternate one Adam step on D
    (:func:`gan_losses`) and one on G (:func:`generator_loss`, non-saturating) on the same batch of fakes.

    The global random state is left untouched: the initial weights come from ``seed`` inside ``fork_rng``, the
    data order and every z from ``torch.Generator`` objects seeded from it.

    Args:
        steps: training steps (one D update and one G update each).
        batch_size: real images per step (as many fakes).
        seed: the run's seed.
        z_dim: size of G's noise vector.
        width: width of both networks (see :class:`Generator`, :class:`Discriminator`).
        eval_every: steps between evaluations (FD_cls and class fractions of ``eval_n`` samples; also after the
            last step); 0 = never.
        eval_n: samples per evaluation, 2 to 10,000 (FD_cls compares with as many test images).
        out: if given, save the generator there (safetensors) with the record as JSON beside it.
        data: optional images (N, 1, 28, 28) in [-1, 1] to train on instead of Fashion-MNIST's training set.
        device: where to train (default: CPU).
        progress: show a tqdm bar with the losses.
        command: the command line that started the run, stored in the record.

    Returns:
        A :class:`GANResult`.

    Raises:
        FloatingPointError: a loss became NaN or inf (the message names the step).

    Introduced in chapter 8.
    """
    plan = _check_train(steps=steps, batch_size=batch_size, seed=seed, z_dim=z_dim, width=width,
                        eval_every=eval_every, eval_n=eval_n)
    out = Path(out) if out is not None else None
    if out is not None:
        from ._io import check_writable
        check_writable(out)                                              # before any work is spent
    x = _training_images(data)
    if len(x) < plan["batch_size"]:
        raise ValueError(f"batch_size={plan['batch_size']} exceeds the {len(x)} training images")
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(plan["seed"])                                  # initial weights, inside fork_rng only
        G = Generator(z_dim=plan["z_dim"], width=plan["width"]).to(device)
        D = Discriminator(width=plan["width"]).to(device)
    log, seconds = _fit(G, D, x, device=device, progress=progress, **plan)
    G.eval(), D.eval()
    record = dict(command=command, **plan, train_seconds=round(seconds["train"], 1),
                  eval_seconds=round(seconds["eval"], 1),
                  images_per_second=round(plan["steps"] * plan["batch_size"] / max(seconds["train"], 1e-9), 1),
                  n_images=len(x), data="fashion-mnist train" if data is None else "data= argument",
                  config=G.config, n_params=dict(generator=_n_params(G), discriminator=_n_params(D)),
                  machine=machine_description(device), torch=torch.__version__, log=log)
    if out is not None:
        save_gan(G, out, record)
    return GANResult(G, D, log, record, out)


def _fit(G: Generator, D: Discriminator, x: torch.Tensor, *, steps: int, batch_size: int, seed: int, z_dim: int,
         width: int, eval_every: int, eval_n: int, device: torch.device, progress: bool) -> tuple[dict, dict]:
    """The training loop; returns the log and the seconds spent training and evaluating."""
    from tqdm import tqdm

    from .data import TensorLoader

    loader = TensorLoader(x, batch_size=batch_size, generator=torch.Generator().manual_seed(seed), device=device)
    z_gen = torch.Generator(device).manual_seed(seed + 1)                # z for training; evaluation has its own
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS)
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
    log = {k: [] for k in ("d_loss", "g_loss", "d_real", "d_fake", "eval_step", "fd_cls", "fd_cls_floor",
                           "class_fractions")}
    batches = _forever(loader)
    evaluator = _Evaluator(eval_n, z_dim=z_dim, seed=seed, device=device) if eval_every else None
    bar = tqdm(total=steps, desc="train-gan", disable=not progress, dynamic_ncols=True)
    start, eval_seconds = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        real = next(batches)                                             # (B, 1, 28, 28)
        fake = G(randn((batch_size, z_dim), generator=z_gen, device=device, dtype=torch.float32))  # (B, 1, 28, 28)

        # D step: ascend log D(x) + log(1 - D(G(z))), with G held fixed (fake detached).
        d_real, d_fake = D(real), D(fake.detach())                       # (B,), (B,) logits
        d_loss = gan_losses(d_real, d_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        # G step: descend -log D(G(z)) through the updated D (the non-saturating loss).
        g_loss = generator_loss(D(fake))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        _record_step(log, step, d_loss, g_loss, d_real, d_fake)          # stops on NaN or inf
        bar.update()
        bar.set_postfix(d_loss=f"{log['d_loss'][-1]:.3f}", g_loss=f"{log['g_loss'][-1]:.3f}", refresh=False)
        if evaluator is not None and (step % eval_every == 0 or step == steps):
            tick = time.perf_counter()
            evaluator(G, step, log)
            eval_seconds += time.perf_counter() - tick
    bar.close()
    total = time.perf_counter() - start
    return log, dict(train=total - eval_seconds, eval=eval_seconds)


def _forever(loader):
    """Batches of images from ``loader``, epoch after epoch (a fresh permutation each)."""
    while True:
        for xb, _ in loader:
            yield xb


def _record_step(log: dict, step: int, d_loss, g_loss, d_real, d_fake) -> None:
    """Append the step's losses and mean D outputs to ``log``; a NaN or inf loss stops the run."""
    d, g = float(d_loss.detach()), float(g_loss.detach())
    if not (math.isfinite(d) and math.isfinite(g)):
        raise FloatingPointError(f"the GAN losses became non-finite at step {step}: d_loss={d}, g_loss={g}; the "
                                 "run diverged (its weights are not usable)")
    log["d_loss"].append(d)
    log["g_loss"].append(g)
    log["d_real"].append(float(torch.sigmoid(d_real.detach()).mean()))
    log["d_fake"].append(float(torch.sigmoid(d_fake.detach()).mean()))


class _Evaluator:
    """FD_cls (:func:`~minidiff.evaluate.evaluate_samples`) and class fractions of ``n`` samples, each time from
    the same z (so the curve follows the generator, not the noise)."""

    def __init__(self, n: int, *, z_dim: int, seed: int, device: torch.device):
        from .classifier import load_classifier

        self.classifier = load_classifier(device=device)
        self.n = n
        self.z = torch.randn((n, z_dim), generator=torch.Generator().manual_seed(seed + 2))     # (n, z_dim)

    def __call__(self, G: Generator, step: int, log: dict) -> None:
        from .classifier import predicted_labels
        from .evaluate import evaluate_samples

        samples = gan_sample(G, self.n, z=self.z).cpu()                                  # (n, 1, 28, 28)
        scores = evaluate_samples(samples, classifier=self.classifier, n=self.n)
        classes = predicted_labels(self.classifier, samples)                             # (n,)
        num_classes = self.classifier.config["num_classes"]
        fractions = torch.bincount(classes, minlength=num_classes).double() / self.n     # (num_classes,)
        log["eval_step"].append(step)
        log["fd_cls"].append(scores["fd_cls"])
        log["fd_cls_floor"].append(scores["fd_cls_floor"])
        log["class_fractions"].append([round(float(f), 4) for f in fractions])


def _training_images(data) -> torch.Tensor:
    """The training images: ``data`` checked, else the 60,000 Fashion-MNIST training images in [-1, 1]."""
    if data is None:
        from .data import load_fashion_mnist

        return load_fashion_mnist("train")[0]                                           # (60000, 1, 28, 28)
    x = check_images(data, "data")
    if len(x) == 0:
        raise ValueError("data is empty (shape (0, 1, 28, 28)); it needs at least one image")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < -1 or float(x.max()) > 1:
        raise ValueError(f"data must hold finite values in [-1, 1] (the data range), got values in "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}]" + ("" if bool(torch.isfinite(x).all())
                                                                             else " with NaN or inf"))
    return x.float()


def _check_train(*, steps, batch_size, seed, z_dim, width, eval_every, eval_n) -> dict:
    return dict(steps=check_int(steps, "steps", low=1), batch_size=check_int(batch_size, "batch_size", low=2),
                seed=check_int(seed, "seed", low=0), **_check_config(z_dim=z_dim, width=width),
                eval_every=check_int(eval_every, "eval_every", low=0),
                eval_n=check_int(eval_n, "eval_n", low=2, high=10000))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ the weights file
def save_gan(G: Generator, path, record: dict | None = None) -> Path:
    """Save the generator's weights as safetensors (its config in the metadata) and, if given, ``record`` as
    JSON beside it (``.json`` for ``.safetensors``); both written atomically.

    Introduced in chapter 8.
    """
    from safetensors.torch import save

    if not isinstance(G, Generator):
        raise TypeError(f"G must be a minidiff.gan.Generator, got {type(G).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"path must end in .safetensors, got {str(path)!r}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(G.config)}
    atomic_write(path, lambda f: f.write(save(tensors, metadata=metadata)))
    if record is not None:
        write_json(path.with_suffix(".json"), record)
    return path


def load_gan(path, *, device=None) -> Generator:
    """Load a generator saved by :func:`save_gan` (or ``python -m minidiff train-gan``), in eval mode.

    safetensors files hold only tensors and a string metadata table: loading runs no code.

    Args:
        path: the ``.safetensors`` file.
        device: where to put the network (default: CPU).

    Raises:
        FileNotFoundError: no file at ``path``.
        minidiff.CheckpointError: the file is not a minidiff GAN generator, or is truncated or corrupt.

    Introduced in chapter 8.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .checkpoint import CheckpointError

    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GAN generator file at {str(path)!r}; train one with "
                                f"`python -m minidiff train-gan --out DIR` (it writes DIR/{GENERATOR_NAME})")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:              # safetensors raises its own SafetensorError
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file (truncated, corrupt or of another "
                              f"format): {' '.join(str(e).split())[:200]}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a minidiff GAN generator (its metadata has format="
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        G = Generator(**json.loads(meta["config"]))
        G.load_state_dict(load_file(str(path)))
    except Exception as e:              # bad config (ValueError/TypeError), missing or misshaped tensors
        raise CheckpointError(f"{str(path)!r} is not a usable GAN generator file: "
                              f"{' '.join(str(e).split())[:300]}") from None
    return G.to(device if device is not None else "cpu").eval()
