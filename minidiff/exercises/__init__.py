"""Auto-checks for the chapters' coding exercises.

Each checker runs the reader's function on random inputs, compares it with the package (the single source of
truth) and returns a :class:`CheckResult`: a pass, or a specific hint about what is wrong. The hints come from
recomputing the answer with the usual mistakes (``alpha_bar`` where ``sqrt(alpha_bar)`` belongs, an index off
by one, the wrong target, ...) and seeing which one the reader's output matches.

    >>> from minidiff.exercises import check_q_sample
    >>> check_q_sample(my_q_sample)          # doctest: +SKIP
    PASS check_q_sample: matches minidiff.q_sample on 2 schedules x 12 samples

A checker is called as ``check_...(fn, seed=0)``: ``fn`` is the reader's function, which takes positional
arguments with the same meaning as in the package, and ``seed`` seeds the random inputs. A checker of a batch
function runs it on batches (B, D), (B, 3, 2) and image batches (B, C, H, W), in float64 and float32: the output
must keep x's shape and dtype, and a coefficient shaped for one rank only gets a hint. The checkers by
chapter, each with the function it expects and the package function it compares that with:

Chapter 1, the forward process
    * :func:`check_alpha_bars`: ``fn(betas) -> alpha_bars``, against ``NoiseSchedule(betas).alpha_bars``
    * :func:`check_q_step`: ``fn(x_prev, t, sched, noise) -> x_t``, against :func:`minidiff.q_step`
Chapter 2, sampling x_t in closed form
    * :func:`check_q_sample`: ``fn(x0, t, sched, noise) -> x_t``, against :func:`minidiff.q_sample`
    * :func:`check_posterior`: ``fn(x0, x_t, t, sched) -> (mean, variance)``, against
      :func:`minidiff.q_posterior`
Chapter 3, the epsilon objective
    * :func:`check_eps_loss`: ``fn(model, x0, sched, t, noise) -> loss``, against :func:`minidiff.eps_loss`
Chapter 4, the U-Net
    * :func:`check_timestep_embedding`: ``fn(t, dim) -> emb``, against :func:`minidiff.timestep_embedding`
Chapter 5, DDPM sampling
    * :func:`check_ddpm_step`: ``fn(x_t, eps, t, sched, noise) -> x_prev``, against :func:`minidiff.ddpm_step`
Chapter 6, DDIM
    * :func:`check_ddim_step`: ``fn(x_t, eps, t, t_prev, sched, eta, noise) -> x_prev``, against
      :func:`minidiff.ddim_step`
Chapter 7, classifier-free guidance
    * :func:`check_cfg_combine`: ``fn(eps_uncond, eps_cond, scale) -> eps``, against :func:`minidiff.cfg_combine`
Chapter 8, applications
    * :func:`check_repaint_merge`: ``fn(x_unknown, x0, mask, t_prev, sched, noise) -> x_prev``, against the
      merge that :func:`minidiff.inpaint` does at every step
    * :func:`check_consistency_projection`: ``fn(x_hat, lowres, factor) -> x``, against the projection that
      :func:`minidiff.ilvr` ends with
Chapter 9, the score and the SDE
    * :func:`check_score_from_eps`: ``fn(eps, t, sched) -> score``, against :func:`minidiff.score_from_eps`
    * :func:`check_reverse_sde_step`: ``fn(x_t, eps, t, sched, noise) -> x_prev``, against
      :func:`minidiff.sde.reverse_sde_step`
Chapter 10, flow matching
    * :func:`check_flow_conversions`: ``fn(x_t, v, t) -> (x0, eps)``, the data and noise a velocity implies
    * :func:`check_flow_matching_loss`: ``fn(model, x0, t, noise) -> loss``, the conditional flow-matching loss

Chapter 11, fast solvers
    * :func:`check_karras_sigmas`: ``fn(steps, sigma_min, sigma_max, rho) -> sigmas``, EDM's schedule, then 0
    * :func:`check_heun_step`: ``fn(denoise, x, sigma, sigma_next) -> x_next``, one step of Heun's method

Chapter 12, latent diffusion
    * :func:`check_kl_term`: ``fn(mean, logvar) -> kl``, the autoencoder's KL term per latent entry
    * :func:`check_latent_scale`: ``fn(latents) -> scale``, 1 / std of the latents, Stable Diffusion's factor
Chapter 13, text prompts
    * :func:`check_cross_attention`: ``fn(x, context, mask, w_q, w_k, w_v) -> out``, one head of masked
      cross-attention
    * :func:`check_width`: ``fn(images) -> widths``, the width attribute of :mod:`minidiff.captions`

Each chapter's checkers live in a module of their own, named after the chapter (``ch01_forward_process`` to
``ch13_text``), beside the harness they share (``_harness``): a new chapter adds one module, and its
checkers are imported and listed here.

Introduced in chapter 1.
"""
from ._harness import CheckResult
from .ch01_forward_process import check_alpha_bars, check_q_step
from .ch02_closed_form import check_posterior, check_q_sample
from .ch03_eps_objective import check_eps_loss
from .ch04_unet import check_timestep_embedding
from .ch05_ddpm_sampling import check_ddpm_step
from .ch06_ddim import check_ddim_step
from .ch07_guidance import check_cfg_combine
from .ch08_applications import check_consistency_projection, check_repaint_merge
from .ch09_score_sde import check_reverse_sde_step, check_score_from_eps
from .ch10_flow import check_flow_conversions, check_flow_matching_loss
from .ch11_solvers import check_heun_step, check_karras_sigmas
from .ch12_latent import check_kl_term, check_latent_scale
from .ch13_text import check_cross_attention, check_width

__all__ = [
    "CheckResult",
    "check_alpha_bars", "check_q_step",                  # chapter 1
    "check_q_sample", "check_posterior",                 # chapter 2
    "check_eps_loss",                                    # chapter 3
    "check_timestep_embedding",                          # chapter 4
    "check_ddpm_step",                                   # chapter 5
    "check_ddim_step",                                   # chapter 6
    "check_cfg_combine",                                 # chapter 7
    "check_repaint_merge", "check_consistency_projection",   # chapter 8
    "check_score_from_eps", "check_reverse_sde_step",    # chapter 9
    "check_flow_conversions", "check_flow_matching_loss",   # chapter 10
    "check_karras_sigmas", "check_heun_step",            # chapter 11
    "check_kl_term", "check_latent_scale",               # chapter 12
    "check_cross_attention", "check_width",              # chapter 13
]
