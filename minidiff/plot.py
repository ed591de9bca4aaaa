"""Pictures of samples: image grids and 2D scatter plots, written as PNG.

Images live in [-1, 1] (the library's data range); a grid maps them to [0, 1] for display. Files are written
atomically (a temporary file in the same folder, then ``os.replace``), so a reader never sees half a PNG.
Figures are built with ``matplotlib.figure.Figure`` directly, so nothing here touches pyplot's global state.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ._io import atomic_write


def image_grid(x: torch.Tensor, nrow: int | None = None, *, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch of images into one array for display.

    Args:
        x: (B, C, H, W) images in [-1, 1] with C = 1 (grey) or 3 (RGB). Values outside [-1, 1] are shown
            clipped (display only).
        nrow: images per row; default ceil(sqrt(B)).
        padding: pixels between images; pad_value: their brightness in [0, 1] (1 = white).

    Returns:
        A float32 array in [0, 1]: (H', W') for grey images, (H', W', 3) for RGB.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] < 1:
        raise ValueError(f"x must have shape (B, C, H, W) with B >= 1 and C in (1, 3), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    if nrow is None:
        nrow = math.ceil(math.sqrt(B))
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int (images per row), got {nrow!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    if not 0.0 <= float(pad_value) <= 1.0:
        raise ValueError(f"pad_value must be in [0, 1], got {pad_value!r}")
    ncol, nrows = min(nrow, B), math.ceil(B / nrow)
    images = ((x.detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()              # (B, C, H, W) in [0, 1]
    grid = np.full((C, nrows * (H + padding) + padding, ncol * (W + padding) + padding), pad_value, np.float32)
    for i in range(B):
        r, c = divmod(i, ncol)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[:, top:top + H, left:left + W] = images[i]
    return grid[0] if C == 1 else grid.transpose(1, 2, 0)                            # (H', W') or (H', W', 3)


def save_image_grid(x: torch.Tensor, path, nrow: int | None = None) -> Path:
    """Write :func:`image_grid` of ``x`` (B, C, H, W) in [-1, 1] to ``path`` as a PNG; returns the path."""
    grid = image_grid(x, nrow)
    kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grid.ndim == 2 else {}

    def write(f):
        import matplotlib.image
        matplotlib.image.imsave(f, grid, format="png", **kwargs)

    return _write_atomically(path, write)


def style_2d_axes(ax, *, lim: float | None, title: str | None = None) -> None:
    """A square window [-lim, lim]^2 (none if ``lim`` is None), equal aspect, x_1/x_2 labels and a title."""
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    if title is not None:
        ax.set_title(title)


def scatter_2d(points: torch.Tensor, ax=None, *, reference: torch.Tensor | None = None,
               title: str | None = None, lim: float | None = 4.0):
    """Scatter plot of 2D samples (N, 2), optionally over ``reference`` points (e.g. the data), on ``ax``.

    Returns the axes (a new figure's when ``ax`` is None).
    """
    points = _as_points(points, "points")
    if ax is None:
        ax = Figure(figsize=(4, 4)).subplots()
    if reference is not None:
        ref = _as_points(reference, "reference")
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.75", alpha=0.5, label="data")
    ax.scatter(points[:, 0], points[:, 1], s=2, c="C0", alpha=0.6, label="samples")
    style_2d_axes(ax, lim=lim, title=title)
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    return ax


def save_scatter_2d(points: torch.Tensor, path, *, reference: torch.Tensor | None = None,
                    title: str | None = None, lim: float | None = 4.0) -> Path:
    """Write :func:`scatter_2d` of ``points`` (N, 2) to ``path`` as a PNG; returns the path."""
    ax = scatter_2d(points, reference=reference, title=title, lim=lim)
    fig = ax.figure
    fig.tight_layout()
    return _write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _as_points(points, name: str) -> np.ndarray:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, 2), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {tuple(points.shape)}")
    return points.detach().float().cpu().numpy()


def _write_atomically(path, write) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {str(path)!r}")
    return atomic_write(path, write)
