"""Beta schedules for the forward process — chapter 1.

Glossary (one name per quantity, paper notation):

==============  ===============================  ===================
minidiff        DDPM paper (Ho et al. 2020)      diffusers
==============  ===============================  ===================
``betas``       beta_t                           ``betas``
``alphas``      alpha_t = 1 - beta_t             ``alphas``
``alpha_bars``  alpha-bar_t = prod alpha_s       ``alphas_cumprod``
``snr``         alpha-bar_t / (1 - alpha-bar_t)  —
==============  ===============================  ===================

Timestep convention (written once, used everywhere): arrays over time have length ``T`` and the 0-based
index ``i`` is the paper's step ``t = i + 1``. So ``alpha_bars[0]`` belongs to the paper's ``x_1`` and
``alpha_bars[T-1]`` to ``x_T``. The clean data ``x_0`` sits "before" index 0, with alpha-bar = 1. This is
exactly diffusers' ``alphas_cumprod`` indexing.

The DDIM paper (Song et al. 2020) writes ``alpha_t`` for what is ``alpha_bars`` here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._validate import check_int, check_real

SCHEDULE_NAMES = ("linear", "cosine", "sigmoid")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A variance schedule beta_1..beta_T and every quantity derived from it, stored in float64.

    Build one with :meth:`linear`, :meth:`cosine` or :meth:`sigmoid` (optionally followed by
    :meth:`rescale_zero_terminal_snr`), or pass your own ``betas``.

    Args:
        betas: (T,) the betas, values in (0, 1); only the last may equal 1, which gives zero terminal SNR.
        name: a label for plots and ``repr`` (the constructors set it).

    The attributes ``betas``, ``alphas``, ``alpha_bars`` and ``snr`` are float64 tensors of shape (T,).

    Introduced in chapter 1.
    """

    betas: torch.Tensor
    name: str = "custom"
    alphas: torch.Tensor = field(init=False, repr=False)
    alpha_bars: torch.Tensor = field(init=False, repr=False)
    alpha_bars_prev: torch.Tensor = field(init=False, repr=False)
    snr: torch.Tensor = field(init=False, repr=False)
    posterior_variance: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef_x0: torch.Tensor = field(init=False, repr=False)
    posterior_mean_coef_xt: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        betas = _check_betas(self.betas)                                # (T,) float64 on the CPU, a copy
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, dim=0)                       # (T,)
        alpha_bars_prev = torch.cat([alpha_bars.new_ones(1), alpha_bars[:-1]])
        one_minus = 1.0 - alpha_bars                                    # > 0 because alpha_1 < 1 (see _check_betas)
        set_ = object.__setattr__
        set_(self, "betas", betas)
        set_(self, "alphas", alphas)
        set_(self, "alpha_bars", alpha_bars)
        set_(self, "alpha_bars_prev", alpha_bars_prev)
        set_(self, "snr", alpha_bars / one_minus)
        # DDPM eq. (7): q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, beta_tilde_t).
        set_(self, "posterior_variance", betas * (1.0 - alpha_bars_prev) / one_minus)
        set_(self, "posterior_mean_coef_x0", betas * alpha_bars_prev.sqrt() / one_minus)
        set_(self, "posterior_mean_coef_xt", (1.0 - alpha_bars_prev) * alphas.sqrt() / one_minus)

    # ---------------------------------------------------------------- constructors
    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Betas evenly spaced from ``beta_start`` to ``beta_end`` (DDPM, Ho et al. 2020, sec. 4).

        Args:
            T: number of diffusion steps.
            beta_start: the first beta, in (0, 1).
            beta_end: the last beta, in (0, 1).
        """
        T, beta_start, beta_end = _check_beta_range(T, beta_start, beta_end)
        return cls(torch.linspace(beta_start, beta_end, T, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas capped at ``max_beta``::

            f(t)         = cos^2((t/T + s) / (1 + s) * pi/2)
            alpha_bar(t) = f(t) / f(0)
            beta_t       = min(1 - alpha_bar(t) / alpha_bar(t-1), max_beta)

        Args:
            T: number of diffusion steps.
            s: the small offset that keeps the first betas from being too small.
            max_beta: the cap on every beta, in (0, 1).
        """
        T, s, max_beta = _check_cosine(T, s, max_beta)
        steps = torch.arange(T + 1, dtype=torch.float64) / T                 # (T+1,) t/T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1.0 - f[1:] / f[:-1]                                        # (T,)
        return cls(betas.clamp(max=max_beta), name="cosine")

    @classmethod
    def sigmoid(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                width: float = 6.0) -> "NoiseSchedule":
        """Betas following a sigmoid from ``beta_start`` to ``beta_end`` (GeoDiff; diffusers' ``"sigmoid"``).

        Args:
            T: number of diffusion steps.
            beta_start: the first beta, in (0, 1).
            beta_end: the last beta, in (0, 1).
            width: the sigmoid is evaluated on [-width, width].
        """
        T, beta_start, beta_end, width = _check_sigmoid(T, beta_start, beta_end, width)
        ramp = torch.sigmoid(torch.linspace(-width, width, T, dtype=torch.float64))
        return cls(ramp * (beta_end - beta_start) + beta_start, name="sigmoid")

    @classmethod
    def from_name(cls, name: str, T: int = 1000, **kwargs) -> "NoiseSchedule":
        """``NoiseSchedule.from_name("cosine", T=1000)`` — the schedules by name, for configs and the CLI.

        Args:
            name: ``"linear"``, ``"cosine"`` or ``"sigmoid"``.
            T: number of diffusion steps.
            kwargs: the other arguments of that constructor.
        """
        _check_schedule_name(name)
        return getattr(cls, name)(T=T, **kwargs)

    def rescale_zero_terminal_snr(self) -> "NoiseSchedule":
        """Shift and scale sqrt(alpha_bar) so that alpha_bar_T = 0 exactly (Lin et al. 2023, Algorithm 1).

        sqrt(alpha_bar_1) is kept; the last beta becomes 1. Use it with ``spacing="trailing"``. At alpha_bar
        = 0 an eps prediction says nothing about x_0; see :func:`minidiff.x0_from_eps` for the guard.
        """
        _check_rescalable(self)
        sqrt_ab = self.alpha_bars.sqrt()
        first, last = sqrt_ab[0], sqrt_ab[-1]
        sqrt_ab = (sqrt_ab - last) * first / (first - last)
        alpha_bars = sqrt_ab**2
        alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])
        return NoiseSchedule(1.0 - alphas, name=f"{self.name}+zero_snr")

    # ---------------------------------------------------------------- helpers
    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.betas.numel()

    def __repr__(self) -> str:
        return (f"NoiseSchedule(name={self.name!r}, T={self.T}, beta=[{float(self.betas[0]):.3g}, "
                f"{float(self.betas[-1]):.3g}], alpha_bar_T={float(self.alpha_bars[-1]):.3g})")

    def config(self) -> dict:
        """A JSON-friendly description; :meth:`from_config` rebuilds the exact betas."""
        return {"name": self.name, "betas": self.betas.tolist()}

    @classmethod
    def from_config(cls, cfg: dict) -> "NoiseSchedule":
        """Rebuild the schedule that :meth:`config` described, with the exact betas."""
        return cls(torch.tensor(cfg["betas"], dtype=torch.float64), name=cfg.get("name", "custom"))


# ------------------------------------------------------------------------------------------ argument checks
def _check_betas(betas) -> torch.Tensor:
    """Returns a float64 CPU copy of ``betas``: 1-D, finite, in (0, 1) (only the last may be 1), and large
    enough that alpha = 1 - beta < 1 in float64."""
    if not isinstance(betas, torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or betas.numel() < 1:
        raise ValueError(f"betas must be a 1-D tensor with T >= 1 entries, got shape {tuple(betas.shape)}")
    betas = betas.detach().to(device="cpu", dtype=torch.float64).clone()
    if not bool(torch.isfinite(betas).all()):
        raise ValueError("betas must be finite, got NaN or inf")
    inner = betas[:-1]
    if bool((betas <= 0).any()) or bool((inner >= 1).any()) or float(betas[-1]) > 1:
        raise ValueError(
            "betas must lie in (0, 1) (only the last may equal 1, for zero terminal SNR); "
            f"got values in [{float(betas.min())}, {float(betas.max())}]"
        )
    if bool(((1.0 - betas) == 1).any()):
        # A beta below float64's resolution near 1 (~1.1e-16) gives alpha = 1 exactly, hence 1 - alpha_bar = 0
        # and a 0/0 posterior variance (DDPM eq. 7).
        raise ValueError(
            "betas must be large enough that 1 - beta < 1 in float64 (beta > ~1.1e-16); "
            f"got a smallest beta of {float(betas.min())}"
        )
    return betas


def _check_beta_range(T, beta_start, beta_end) -> tuple[int, float, float]:
    return (check_int(T, "T", low=1),
            check_real(beta_start, "beta_start", low=0, high=1, low_open=True, high_open=True),
            check_real(beta_end, "beta_end", low=0, high=1, low_open=True, high_open=True))


def _check_sigmoid(T, beta_start, beta_end, width) -> tuple[int, float, float, float]:
    return (*_check_beta_range(T, beta_start, beta_end), check_real(width, "width", low=0, low_open=True))


def _check_cosine(T, s, max_beta) -> tuple[int, float, float]:
    return (check_int(T, "T", low=1), check_real(s, "s", low=0),
            check_real(max_beta, "max_beta", low=0, high=1, low_open=True, high_open=True))


def _check_schedule_name(name) -> None:
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"name must be one of {', '.join(map(repr, SCHEDULE_NAMES))} (the schedule); "
                         f"got {name!r}")


def _check_rescalable(sched: NoiseSchedule) -> None:
    sqrt_ab = sched.alpha_bars.sqrt()
    if sched.T < 2 or float(sqrt_ab[0] - sqrt_ab[-1]) <= 0:
        raise ValueError(f"rescale_zero_terminal_snr needs T >= 2 and a decreasing alpha_bar, got T={sched.T}")


def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pick ``values[t]`` per sample and shape it to broadcast against ``like``.

    values: (T,) float64 schedule entries; t: (B,) int64; returns (B, 1, ..., 1) in ``like``'s dtype/device.
    """
    out = values.to(device=like.device, dtype=like.dtype)[t.to(like.device)]   # (B,)
    return out.view(-1, *([1] * (like.ndim - 1)))                               # (B, 1, ..., 1)
