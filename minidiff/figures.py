"""The chapters' figure helpers: animations that play in a static web page, and a few recurring plots.

:func:`jshtml` turns a matplotlib animation into a self-contained HTML player (frames embedded as PNG, a
slider and play buttons) that needs no kernel and loads nothing from the network, so it works in the
published book as well as in Jupyter and Colab.

Introduced in chapter 1.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np
import torch

from .plot import style_2d_axes

# matplotlib's player draws its buttons with an icon font loaded from a CDN; these characters need nothing.
_ICONS = {
    "fa-minus": "&minus;", "fa-plus": "+",
    "fa-fast-backward": "|&#x25C0;", "fa-fast-forward": "&#x25B6;|",
    "fa-step-backward": "&#x2039;", "fa-step-forward": "&#x203A;",
    "fa-play fa-flip-horizontal": "&#x25C0;", "fa-play": "&#x25B6;", "fa-pause": "&#x2016;",
}


def jshtml(anim, *, default_mode: str = "loop"):
    """A self-contained HTML player for ``anim`` (a ``FuncAnimation``); closes its figure.

    Frames are rendered at the figure's own dpi (not ``savefig.dpi``), so ``plt.subplots(dpi=64)`` keeps the
    page light.

    Args:
        anim: the animation, e.g. from :func:`animate`.
        default_mode: what the player does at the last frame: ``"loop"``, ``"once"`` or ``"reflect"``.

    Returns:
        An ``IPython.display.HTML`` object: the last expression of a cell shows it.
    """
    import matplotlib.pyplot as plt
    from IPython.display import HTML

    with plt.rc_context({"savefig.dpi": "figure"}):
        html = anim.to_jshtml(default_mode=default_mode)
    plt.close(anim._fig)
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html)
    for name, glyph in _ICONS.items():
        html = html.replace(f'<i class="fa {name}"></i>', f'<span class="anim-icon">{glyph}</span>')
    if re.search(r'(src|href)="https?://', html):
        raise RuntimeError("the animation's HTML still refers to the network")
    return HTML(html)


def animate(draw: Callable[[int], None], fig, n_frames: int, *, interval: int = 150):
    """``FuncAnimation`` calling ``draw(frame)`` for frames 0..n_frames-1 (no blitting: simple and robust).

    Args:
        draw: redraws the figure for frame number ``frame``.
        fig: the matplotlib figure ``draw`` draws on.
        n_frames: number of frames.
        interval: milliseconds between frames when played.
    """
    from matplotlib.animation import FuncAnimation

    return FuncAnimation(fig, draw, frames=n_frames, interval=interval, repeat=True)


def to_image(x: torch.Tensor) -> np.ndarray:
    """One image (1, H, W) or (H, W) in [-1, 1] as an (H, W) array in [0, 1] for ``imshow``."""
    x = x.detach().float().cpu()
    x = x[0] if x.ndim == 3 else x
    return ((x.clamp(-1, 1) + 1) / 2).numpy()


def image_row(ax, images: torch.Tensor, *, padding: int = 2) -> None:
    """Show a batch (B, 1, H, W) in [-1, 1] side by side on ``ax`` (grey, axes hidden).

    Args:
        ax: a matplotlib axes.
        images: (B, 1, H, W) images in [-1, 1].
        padding: white pixels between the images.
    """
    B, _, H, W = images.shape
    row = np.ones((H, B * (W + padding) - padding), dtype=np.float32)
    for i in range(B):
        row[:, i * (W + padding): i * (W + padding) + W] = to_image(images[i])
    ax.imshow(row, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def scatter(ax, points: torch.Tensor, *, lim: float = 3.5, color: str = "C0", size: float = 2.0,
            title: str | None = None, label: str | None = None) -> None:
    """2D points (N, 2) on ``ax`` with a fixed square window, so frames and panels compare.

    Args:
        ax: a matplotlib axes.
        points: (N, 2) the points.
        lim: the window is [-lim, lim] on both axes.
        color: the points' matplotlib colour.
        size: the marker size.
        title: the axes' title, if any.
        label: the legend label, if any.
    """
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=size, c=color, alpha=0.6, linewidths=0, label=label)
    style_2d_axes(ax, lim=lim, title=title)


def plot_schedules(scheds: Sequence, axes, *, paper_t: bool = True) -> None:
    """beta_t, alpha_bar_t and SNR(t) (log scale) of each schedule on three axes, labelled by ``sched.name``.

    Args:
        scheds: the :class:`~minidiff.schedules.NoiseSchedule` objects to compare.
        axes: three matplotlib axes.
        paper_t: label the x axis with the paper's step t = 1..T (True) or the 0-based index.
    """
    for sched in scheds:
        t = torch.arange(1, sched.T + 1) if paper_t else torch.arange(sched.T)
        axes[0].plot(t, sched.betas, label=sched.name)
        axes[1].plot(t, sched.alpha_bars, label=sched.name)
        axes[2].plot(t, sched.snr, label=sched.name)
    axes[0].set_title(r"$\beta_t$")
    axes[1].set_title(r"$\bar\alpha_t$")
    axes[2].set_title(r"SNR$(t) = \bar\alpha_t / (1 - \bar\alpha_t)$")
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("paper step $t$" if paper_t else "index $t$")
        ax.grid(alpha=0.3)
        ax.legend()
