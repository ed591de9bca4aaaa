"""Image grids and scatter plots: exact layout and value mapping, PNGs that read back, clear errors."""
import matplotlib.image
import numpy as np
import pytest
import torch

from minidiff.plot import image_grid, save_image_grid, save_scatter_2d, scatter_2d


def test_grid_places_each_image_and_maps_minus_one_one_to_zero_one():
    x = torch.stack([torch.full((1, 3, 4), v) for v in (-1.0, 0.0, 1.0, 0.5, -0.5)])   # (5, 1, 3, 4)
    grid = image_grid(x, nrow=3, padding=1, pad_value=0.25)
    assert grid.shape == (2 * (3 + 1) + 1, 3 * (4 + 1) + 1) and grid.dtype == np.float32
    for i, v in enumerate((0.0, 0.5, 1.0, 0.75, 0.25)):
        r, c = divmod(i, 3)
        tile = grid[1 + r * 4:1 + r * 4 + 3, 1 + c * 5:1 + c * 5 + 4]
        assert np.all(tile == v)
    assert np.all(grid[5:, 11:] == 0.25)           # the empty sixth slot is padding
    assert np.all(grid[0] == 0.25) and np.all(grid[:, 0] == 0.25)


def test_rgb_grid_is_height_width_channels_and_out_of_range_values_are_shown_clipped():
    x = torch.zeros(4, 3, 2, 2)
    x[0, 0] = 3.0                                  # red channel far above 1
    grid = image_grid(x)                           # default nrow = ceil(sqrt(4)) = 2
    assert grid.shape == (2 * 4 + 2, 2 * 4 + 2, 3)
    assert grid[2, 2, 0] == 1.0 and grid[2, 2, 1] == 0.5


def test_saved_grid_reads_back(tmp_path):
    x = torch.linspace(-1, 1, 2 * 8 * 8).reshape(2, 1, 8, 8)
    path = save_image_grid(x, tmp_path / "sub" / "grid.png", nrow=2)
    back = matplotlib.image.imread(path)
    assert back.shape[:2] == (12, 22)
    # 8-bit grey levels: matplotlib picks LUT entry floor(256 v) (<= 1/256 off) and writes bytes by truncating
    # 255 * lut (< 1/255 more): under 2/255 in all
    assert np.allclose(back[..., 0], image_grid(x, nrow=2), atol=2 / 255)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_scatter_helpers(tmp_path):
    points = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    ax = scatter_2d(points, reference=points + 1, title="samples")
    assert ax.get_title() == "samples" and len(ax.collections) == 2
    path = save_scatter_2d(points, tmp_path / "s.png")
    assert matplotlib.image.imread(path).shape[:2] == (400, 400)


@pytest.mark.parametrize("call, error, words", [
    (lambda: image_grid(np.zeros((1, 1, 2, 2))), TypeError, ["x", "ndarray"]),
    (lambda: image_grid(torch.zeros(1, 2, 2, 2)), ValueError, ["(B, C, H, W)", "(1, 2, 2, 2)"]),
    (lambda: image_grid(torch.zeros(3, 4, 4)), ValueError, ["(3, 4, 4)"]),
    (lambda: image_grid(torch.zeros(2, 1, 4, 4), nrow=0), ValueError, ["nrow", "0"]),
    (lambda: image_grid(torch.zeros(2, 1, 4, 4), pad_value=2), ValueError, ["pad_value", "2"]),
    (lambda: scatter_2d(torch.zeros(5, 3)), ValueError, ["points", "(N, 2)", "(5, 3)"]),
    (lambda: save_image_grid(torch.zeros(1, 1, 2, 2), "grid.jpg"), ValueError, ["png", "grid.jpg"]),
])
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value)
