"""Improved precision and recall (Kynkäänniemi et al. 2019), checked on point sets whose answer is known."""
import pytest
import torch

import minidiff as md


def _blobs(centres, n, scale, seed):
    g = torch.Generator().manual_seed(seed)
    c = torch.as_tensor(centres, dtype=torch.float64)                                    # (K, d)
    idx = torch.arange(n) % len(c)
    return c[idx] + scale * torch.randn(n, c.shape[1], generator=g, dtype=torch.float64)  # (n, d)


CENTRES = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]


def test_a_set_against_itself_has_precision_and_recall_one():
    x = _blobs(CENTRES, 200, 1.0, 0)
    assert md.precision_recall(x, x) == dict(precision=1.0, recall=1.0, k=3)   # every point is its own centre


def test_two_samples_of_one_distribution_score_near_one():
    pr = md.precision_recall(_blobs(CENTRES, 400, 1.0, 1), _blobs(CENTRES, 400, 1.0, 0))
    # Only points beyond all 3-NN balls of the other sample miss: a few percent of 400 (0.975 and 0.96 here).
    assert pr["precision"] > 0.9 and pr["recall"] > 0.9


def test_a_collapsed_generator_keeps_precision_and_loses_the_missing_modes_recall():
    real = _blobs(CENTRES, 400, 1.0, 0)
    fake = _blobs(CENTRES[:1], 400, 1.0, 1)              # one of the four blobs: mode collapse
    pr = md.precision_recall(fake, real)
    # The fake points sit in a real blob, whose 3-NN balls cover it except the outermost points.
    assert pr["precision"] > 0.9
    # Real points of the three missing blobs (3/4 of them, 10 apart) are in no fake ball (radii ~ 0.3).
    assert 0.15 < pr["recall"] <= 0.25         # at most the covered blob's quarter of the real points


def test_samples_off_the_data_lose_precision_and_recall():
    real = _blobs(CENTRES, 400, 1.0, 0)
    fake = _blobs([[5.0, 5.0]], 400, 1.0, 1)             # between the blobs, 7 away from each centre
    pr = md.precision_recall(fake, real)
    assert pr["precision"] < 0.05 and pr["recall"] < 0.05


def test_a_wider_generator_keeps_recall_and_loses_precision():
    real = _blobs(CENTRES, 400, 1.0, 0)
    fake = _blobs(CENTRES, 400, 3.0, 1)                  # every mode, but 3 times too spread
    pr = md.precision_recall(fake, real)
    assert pr["recall"] > 0.9 and pr["precision"] < 0.7


def test_bad_arguments_get_clear_errors():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="same width d"):
        md.precision_recall(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 9\]"):
        md.precision_recall(x, x, k=10)
    with pytest.raises(ValueError, match=r"features must have shape \(N, d\)"):
        md.precision_recall(x[0], x)
