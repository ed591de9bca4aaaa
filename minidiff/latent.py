"""Latent diffusion (chapter 12): the diffusion model learns an autoencoder's latents, the decoder makes the images.

Rombach et al. (2022) split image generation in two. The autoencoder (:mod:`minidiff.autoencoder`) removes the
detail that costs compute but says little, and the diffusion model works on what is left: here a 4 x 7 x 7
latent instead of 1 x 28 x 28 pixels, four times fewer numbers, and a U-Net that runs at 7 x 7 only. Training
is the chapter-4 trainer on the latents (``TrainConfig(latent="autoencoder")``, ``--latent autoencoder`` on the
command line), multiplied by the latent scale so they have unit variance; sampling is any sampler of the book
on the latents, then one decoder call::

    # a LatentModel
    model, sched, config = md.load_model("runs/latent/ckpt.pt")
    # (16, 4, 7, 7): scaled latents
    z = md.ddim_sample(model, (16, *model.sample_shape), sched, steps=50)
    images = model.decode(z)                    # (16, 1, 28, 28)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .autoencoder import Autoencoder, decode_latents, encode_images, load_autoencoder

SHIPPED_AUTOENCODER = "autoencoder"     # TrainConfig.latent's name for checkpoints/autoencoder.safetensors


def autoencoder_for(latent: str, *, device=None) -> tuple[Autoencoder, float]:
    """The autoencoder that ``TrainConfig.latent`` names ("autoencoder": the shipped one; else a file path) and
    its latent scale."""
    return load_autoencoder(None if latent == SHIPPED_AUTOENCODER else Path(latent), device=device)


def encode_dataset(images: torch.Tensor, latent: str) -> torch.Tensor:
    """The training data of a latent run: scale x (posterior means of ``images``), (N, c, 7, 7), unit variance."""
    autoencoder, scale = autoencoder_for(latent)
    return encode_images(autoencoder, images) * scale


class LatentModel(nn.Module):
    """A noise predictor on scaled latents, with the decoder that turns its samples into images.

    ``model(z_t, t, y)`` is the latent U-Net (the samplers call it like any model); ``decode(z)`` divides by the
    latent scale and runs the autoencoder's decoder. ``sample_shape`` is one latent's shape.

    Introduced in chapter 12.
    """

    def __init__(self, model: nn.Module, autoencoder: Autoencoder, scale: float):
        super().__init__()
        self.model, self.autoencoder, self.scale = model, autoencoder.eval(), float(scale)
        self.num_classes = getattr(model, "num_classes", None)
        self.config = model.config
        self.sample_shape = autoencoder.latent_shape

    def forward(self, z_t: torch.Tensor, t, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(z_t, t, y)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) from scaled latents z (B, c, 7, 7), on the CPU."""
        return decode_latents(self.autoencoder, z.float() / self.scale)
