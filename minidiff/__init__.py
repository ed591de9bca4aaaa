"""minidiff: diffusion models, built up chapter by chapter.

The public API (see the book's API reference page): schedules (chapter 1), the forward process (chapters
1-2), the epsilon objective (chapter 3), samplers (chapters 5-6), classifier-free guidance (chapter 7) and an
exact denoiser for finite data sets. Timestep convention: 0-based index i is the paper's t = i + 1.
"""
from .conventions import cfg_w_from_scale, ddim_paper_alpha, ddim_sigma, index_from_paper_t, paper_t, scale_from_cfg_w
from .conversions import eps_from_v, eps_from_x0, v_from_eps, x0_from_eps, x0_from_v
from .forward import q_posterior, q_sample, q_step
from .guidance import cfg_combine
from .losses import eps_loss
from .oracle import OracleDenoiser
from .runtime import default_device, quick_mode
from .samplers import ddim_invert, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample, ddpm_step
from .schedules import NoiseSchedule

__version__ = "0.1.0"

__all__ = [
    "NoiseSchedule",
    "q_step", "q_sample", "q_posterior",
    "x0_from_eps", "eps_from_x0", "v_from_eps", "x0_from_v", "eps_from_v",
    "eps_loss",
    "ddpm_sample", "ddpm_step", "ddim_sample", "ddim_step", "ddim_timesteps", "ddim_invert",
    "cfg_combine",
    "OracleDenoiser",
    "paper_t", "index_from_paper_t", "ddim_paper_alpha", "cfg_w_from_scale", "scale_from_cfg_w", "ddim_sigma",
    "default_device", "quick_mode",
]

# models (chapters 3-4), data, and the offline quality metric
from . import classifier, data, evaluate, metrics
from .classifier import Classifier, load_classifier
from .data import FASHION_MNIST_CLASSES, TensorLoader, load_cifar10, load_fashion_mnist, load_mnist, toy_2d
from .evaluate import evaluate_samples
from .metrics import class_agreement, class_diversity, fd_cls, frechet_distance, precision_recall
from .mlp import MLPDenoiser
from .unet import UNet, n_params, timestep_embedding
from . import fast                  # opt-in speed paths: fast.apply(model), as minidiff.train does

__all__ += [
    "UNet", "MLPDenoiser", "n_params", "timestep_embedding", "fast",
    "data", "load_fashion_mnist", "load_mnist", "load_cifar10", "toy_2d", "TensorLoader", "FASHION_MNIST_CLASSES",
    "evaluate", "evaluate_samples", "classifier", "Classifier", "load_classifier",
    "metrics", "frechet_distance", "fd_cls", "class_agreement", "class_diversity", "precision_recall",
]

# training, checkpoints and pictures of samples (chapter 4)
from . import plot
from .checkpoint import CheckpointError, load_model
from . import pretrained            # a callable module: md.pretrained(name) -> Path
from .pretrained import load_result
from .ema import EMA
from .plot import image_grid, save_image_grid, save_scatter_2d, scatter_2d
from .train import TrainConfig, TrainResult, train

# editing with a trained model (chapters 6 and 8)
from .editing import inpaint, sdedit, slerp

__all__ += ["inpaint", "sdedit", "slerp"]

# super-resolution (chapter 8): ILVR with any model, and SR3-style conditional models
from . import superres
from .superres import LowResConditioned, ilvr, sr3_sample

__all__ += ["superres", "ilvr", "sr3_sample", "LowResConditioned"]

# a GAN to compare with (chapter 8)
from . import gan
from .gan import Discriminator, GANResult, Generator, gan_sample, load_gan, save_gan, train_gan

__all__ += ["gan", "Generator", "Discriminator", "GANResult", "train_gan", "gan_sample", "save_gan", "load_gan"]

# the continuous-time view (chapter 9): the score, the SDE, the probability-flow ODE and exact likelihoods
from . import likelihood, sde
from .likelihood import bits_per_dim, elbo_bpd, ode_log_likelihood
from .sde import score_from_eps

__all__ += ["sde", "likelihood", "score_from_eps", "ode_log_likelihood", "elbo_bpd", "bits_per_dim"]

# flow matching and rectified flow (chapter 10)
from . import flow
from .flow import FlowNet, flow_matching_loss, flow_sample

__all__ += ["flow", "FlowNet", "flow_matching_loss", "flow_sample"]

# fast solvers in sigma (chapter 11): Euler, Heun, DPM-Solver++(2M) on EDM's schedule
from . import solvers
from .solvers import solver_sample

__all__ += ["solvers", "solver_sample"]

__all__ += [
    "TrainConfig", "TrainResult", "train", "EMA", "load_model", "CheckpointError", "pretrained", "load_result",
    "plot", "image_grid", "save_image_grid", "scatter_2d", "save_scatter_2d",
]

# what the network predicts and how the loss weights the timesteps (chapter 10): eps, x_0, v; min-SNR-gamma
from . import targets
from .targets import target_loss

__all__ += ["targets", "target_loss"]

# the shipped models as ONNX files (the book's in-page Fashion-MNIST demo runs them); needs the onnx extra
from . import export

__all__ += ["export"]

# latent diffusion (chapter 12) and text prompts (chapter 13)
from . import autoencoder, captions, latent, text
from .autoencoder import Autoencoder, load_autoencoder
from .latent import LatentModel
from .text import TextConditionedUNet, TextEncoder, Tokenizer

__all__ += ["autoencoder", "latent", "captions", "text", "Autoencoder", "load_autoencoder", "LatentModel",
            "Tokenizer", "TextEncoder", "TextConditionedUNet"]
