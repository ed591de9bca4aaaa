"""The autoencoder of latent diffusion (chapter 12): images to a small latent and back.

Stable Diffusion does not diffuse pixels. A KL-regularised autoencoder (Rombach et al. 2022, sec. 3) maps each
image to a latent several times smaller, the diffusion model learns the latents, and the decoder turns sampled
latents back into images. Here a 28x28 Fashion-MNIST image becomes a latent of ``latent_channels`` x 7 x 7
(4 x 7 x 7 = 196 numbers for 784 pixels)::

    x (B, 1, 28, 28)
    -> encoder: conv, res, down, res, down, res   mean, logvar (B, c, 7, 7)
    -> z = mean + exp(logvar / 2) * noise        (reparameterisation)
    -> decoder: res, up, res, up, res, conv      x_hat (B, 1, 28, 28)

The loss is the reconstruction error plus a small KL term pulling each latent's posterior N(mean, exp(logvar))
toward N(0, I) (Kingma & Welling 2014, appendix B). The KL weight is kept small, as in Stable Diffusion, so the
latents carry detail; their overall scale is then arbitrary, and the diffusion model sees them multiplied by
``1 / std`` of the training latents (:func:`latent_scale`; Stable Diffusion's 0.18215 is this number for its
autoencoder).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write, write_json
from ._validate import check_int, check_real
from .runtime import machine_description

AUTOENCODER_PATH = Path(__file__).resolve().parent.parent / "checkpoints" / "autoencoder.safetensors"


# ------------------------------------------------------------------------------------------ the network
class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv -> GroupNorm -> SiLU -> conv, plus the input (a 1x1 conv if widths differ)."""

    def __init__(self, in_ch: int, out_ch: int, *, num_groups: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(num_groups, in_ch), nn.SiLU(), nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                  nn.GroupNorm(num_groups, out_ch), nn.SiLU(), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Autoencoder(nn.Module):
    """A KL-regularised convolutional autoencoder: 1 x 28 x 28 images <-> ``latent_channels`` x 7 x 7 latents.

    Args:
        latent_channels: channels of the 7 x 7 latent (the compression: 784 pixels to 49 c numbers).
        width: channels at 28 x 28; 2 * width at 14 x 14 and 7 x 7.
        num_groups: GroupNorm groups (must divide ``width``).

    ``model.config`` rebuilds the same architecture: ``Autoencoder(**model.config)``.

    Introduced in chapter 12.
    """

    def __init__(self, *, latent_channels: int = 4, width: int = 32, num_groups: int = 8):
        super().__init__()
        self.config = _check_config(latent_channels=latent_channels, width=width, num_groups=num_groups)
        c, w, g = latent_channels, width, num_groups
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), ResBlock(w, w, num_groups=g),                 # (B, w, 28, 28)
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), ResBlock(2 * w, 2 * w, num_groups=g),   # (B, 2w, 14, 14)
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), ResBlock(2 * w, 2 * w, num_groups=g),  # (B, 2w, 7, 7)
            nn.GroupNorm(g, 2 * w), nn.SiLU(), nn.Conv2d(2 * w, 2 * c, 3, padding=1))   # (B, 2c, 7, 7)
        self.decoder = nn.Sequential(
            nn.Conv2d(c, 2 * w, 3, padding=1), ResBlock(2 * w, 2 * w, num_groups=g),     # (B, 2w, 7, 7)
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            ResBlock(2 * w, 2 * w, num_groups=g),                                        # (B, 2w, 14, 14)
            nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(2 * w, w, 3, padding=1),
            ResBlock(w, w, num_groups=g),                                                # (B, w, 28, 28)
            nn.GroupNorm(g, w), nn.SiLU(), nn.Conv2d(w, 1, 3, padding=1))               # (B, 1, 28, 28)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """One latent's shape (c, 7, 7)."""
        return (self.config["latent_channels"], 7, 7)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior q(z | x) = N(mean, exp(logvar)) of images x (B, 1, 28, 28): (mean, logvar), (B, c, 7, 7)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)                            # (B, c, 7, 7) each
        return mean, logvar.clamp(-30.0, 20.0)                                    # as Stable Diffusion's encoder

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) from latents z (B, c, 7, 7)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Encode, sample z = mean + exp(logvar / 2) noise (the mean if ``noise`` is None), decode.
        Returns (x_hat, mean, logvar)."""
        mean, logvar = self.encode(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise      # the reparameterisation trick
        return self.decode(z), mean, logvar


def _check_config(*, latent_channels, width, num_groups) -> dict:
    config = dict(latent_channels=check_int(latent_channels, "latent_channels", low=1),
                  width=check_int(width, "width", low=1), num_groups=check_int(num_groups, "num_groups", low=1))
    if config["width"] % config["num_groups"]:
        raise ValueError(f"num_groups must divide width, got width={width} and num_groups={num_groups}")
    return config


# ------------------------------------------------------------------------------------------ the loss
def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent entry: (mean^2 + exp(logvar) - 1 - logvar) / 2
    (Kingma & Welling 2014, appendix B). Same shape as ``mean``."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def autoencoder_loss(model: Autoencoder, x: torch.Tensor, *, kl_weight: float,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss: mean squared reconstruction error per pixel + ``kl_weight`` x mean KL per latent entry.

    Returns (loss, reconstruction error, KL), each a scalar tensor.
    """
    mean, logvar = model.encode(x)
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    x_hat = model.decode(mean + torch.exp(0.5 * logvar) * noise)                  # (B, 1, 28, 28)
    reconstruction = F.mse_loss(x_hat, x)
    kl = kl_to_standard_normal(mean, logvar).mean()
    return reconstruction + kl_weight * kl, reconstruction, kl


# ------------------------------------------------------------------------------------------ using it
@torch.no_grad()
def encode_images(model: Autoencoder, images: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """The posterior means (N, c, 7, 7) of ``images`` (N, 1, 28, 28), in batches, in eval mode, on the CPU."""
    from .classifier import eval_mode
    from .runtime import model_device

    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model.encode(images[i:i + batch_size].to(device))[0].cpu()
                          for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def decode_latents(model: Autoencoder, z: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Images (N, 1, 28, 28) decoded from latents ``z`` (N, c, 7, 7), in batches, in eval mode, on the CPU."""
    from .classifier import eval_mode
    from .runtime import model_device

    device = model_device(model)
    with eval_mode(model):
        return torch.cat([model.decode(z[i:i + batch_size].to(device)).cpu()
                          for i in range(0, z.shape[0], batch_size)])


def latent_scale(latents: torch.Tensor) -> float:
    """1 / std of ``latents`` (N, ...) over all their entries: the factor that gives the diffusion model latents of
    unit variance, computed as Stable Diffusion's 0.18215 was (Rombach et al. 2022, sec. G)."""
    return float(1.0 / latents.double().std())


# ------------------------------------------------------------------------------------------ the recipe
def train_autoencoder(*, epochs: int = 6, seed: int = 0, device=None, batch_size: int = 128, lr: float = 2e-3,
                      kl_weight: float = 1e-4, latent_channels: int = 4, width: int = 32, limit: int | None = None,
                      out=None, root=None, log=print) -> tuple[Autoencoder, dict]:
    """The committed recipe for the shipped autoencoder: AdamW with a one-cycle learning rate on the Fashion-MNIST
    training images, then the reconstruction error and PSNR on the test set and the latent scale.

    Args:
        epochs: passes over the training set.
        seed: the source of every random draw (initial weights, data order, the posterior samples).
        device: where to train (default: CPU).
        batch_size, lr: images per step and the peak learning rate.
        kl_weight: the weight of the KL term (per latent entry, against the per-pixel squared error).
        latent_channels, width: the architecture (see :class:`Autoencoder`).
        limit: train on the first ``limit`` training images only (quick runs and tests); default all 60,000.
        out: if given, save the weights there (safetensors, written atomically) and a JSON record beside it.
        root: where to look for the data (see :func:`minidiff.data.load_fashion_mnist`).
        log: called with one progress line per epoch (``None``: silent).

    Returns:
        ``(autoencoder, record)``: the model in eval mode and a dict with ``"test_mse"``, ``"test_psnr"`` (the
        mean over the test images) and ``"test_psnr_se"`` (its standard error over them), ``"latent_scale"``,
        ``"train_seconds"`` and the recipe.
    """
    from .data import TensorLoader, load_fashion_mnist
    from .metrics import psnr

    recipe = dict(epochs=check_int(epochs, "epochs", low=1), seed=check_int(seed, "seed"),
                  batch_size=check_int(batch_size, "batch_size", low=1),
                  lr=check_real(lr, "lr", low=0.0, low_open=True), kl_weight=check_real(kl_weight, "kl_weight", low=0.0),
                  limit=None if limit is None else check_int(limit, "limit", low=1))
    device = torch.device(device) if device is not None else torch.device("cpu")
    x_train = load_fashion_mnist("train", root=root)[0][:recipe["limit"]]
    x_test = load_fashion_mnist("test", root=root)[0]
    generator = torch.Generator(device=device).manual_seed(recipe["seed"])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(recipe["seed"])                                          # the initial weights
        model = Autoencoder(latent_channels=latent_channels, width=width).to(device)
    loader = TensorLoader(x_train, batch_size=recipe["batch_size"],
                          generator=torch.Generator().manual_seed(recipe["seed"]), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0.0)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=epochs * len(loader))
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        totals = torch.zeros(2)
        for xb, _ in loader:
            loss, rec, kl = autoencoder_loss(model, xb, kl_weight=recipe["kl_weight"], generator=generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lr_schedule.step()
            totals += torch.stack([rec.detach(), kl.detach()]).cpu()
        if log is not None:
            rec, kl = (totals / len(loader)).tolist()
            log(f"epoch {epoch + 1}/{epochs}: reconstruction MSE {rec:.4f}, KL {kl:.3f} "
                f"({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    model.eval()
    latents = encode_images(model, x_test)
    x_hat = decode_latents(model, latents)
    per_image = psnr(x_hat.clamp(-1, 1), x_test).double()                        # (10000,) dB
    record = dict(test_mse=round(float(F.mse_loss(x_hat, x_test)), 5),
                  test_psnr=round(float(per_image.mean()), 2),
                  test_psnr_se=round(float(per_image.std() / per_image.numel() ** 0.5), 3),
                  latent_scale=round(latent_scale(encode_images(model, x_train[:10000])), 5),
                  train_seconds=round(seconds, 1), **recipe, config=model.config,
                  n_params=sum(p.numel() for p in model.parameters()), machine=machine_description(device),
                  torch=torch.__version__)
    if log is not None:
        log(f"test MSE {record['test_mse']:.4f} (PSNR {record['test_psnr']:.2f} dB), latent scale "
            f"{record['latent_scale']:.4f}, after {seconds:.0f} s of training")
    if out is not None:
        save_autoencoder(model, out, record)
    return model, record


# ------------------------------------------------------------------------------------------ the weights file
def save_autoencoder(model: Autoencoder, path, record: dict | None = None) -> Path:
    """Save the weights as safetensors (config and latent scale in its metadata) and ``record`` as JSON beside it."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(model.config)}
    if record is not None and "latent_scale" in record:
        metadata["latent_scale"] = repr(float(record["latent_scale"]))
    atomic_write(path, lambda f: f.write(save(tensors, metadata=metadata)))
    if record is not None:
        write_json(path.with_suffix(".json"), record)
    return path


def load_autoencoder(path=None, *, device=None) -> tuple[Autoencoder, float]:
    """Load an autoencoder (default: the shipped ``checkpoints/autoencoder.safetensors``), in eval mode.

    Returns ``(autoencoder, latent_scale)``. safetensors files hold only tensors and a string metadata table:
    loading runs no code.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .checkpoint import CheckpointError

    if path is None:
        from .pretrained import pretrained

        path = pretrained("autoencoder.safetensors")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no autoencoder weights at {path}; train them with "
                                f"`python -m minidiff train-autoencoder --out {path}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        model = Autoencoder(**json.loads(metadata["config"]))
        model.load_state_dict(load_file(str(path)))
        scale = float(metadata["latent_scale"])
    except Exception as e:              # safetensors raises its own SafetensorError; torch a RuntimeError
        raise CheckpointError(f"{path} is not a usable autoencoder weights file: "
                              f"{' '.join(str(e).split())[:300]}") from e
    return model.to(device if device is not None else "cpu").eval(), scale
