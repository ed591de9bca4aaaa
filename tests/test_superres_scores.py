"""The scores of chapter 8's super-resolution table: PSNR, the bootstrap spread of FD_cls, score_superres."""
import math

import pytest
import torch

import minidiff as md
from minidiff import superres as sr
from tolerances import F64_EPS


def test_psnr_of_a_constant_offset_is_known_exactly():
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 2 - 1
    p = md.metrics.psnr(x + 0.1, x)                                       # MSE 0.01 -> 10 log10(4 / 0.01)
    expected = 10 * math.log10(400)
    assert torch.allclose(p, torch.full((3,), expected, dtype=torch.float64), rtol=0, atol=1e3 * F64_EPS)
    assert torch.isinf(md.metrics.psnr(x, x)).all()                          # an exact copy
    assert math.isclose(float(md.metrics.psnr(x + 0.1, x, data_range=1.0)[0]), expected - 20 * math.log10(2),
                        abs_tol=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        md.metrics.psnr(x, x[:2])
    with pytest.raises(ValueError, match="data_range must be > 0"):
        md.metrics.psnr(x, x, data_range=0)


def test_fd_bootstrap_returns_the_plain_distance_and_a_spread_that_shrinks_with_n():
    g = torch.Generator().manual_seed(0)
    small = [torch.randn(200, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    large = [torch.randn(5000, 4, generator=g, dtype=torch.float64) for _ in range(2)]
    r = md.metrics.fd_bootstrap(*small, resamples=30, generator=torch.Generator().manual_seed(1))
    plain = md.frechet_distance(*md.metrics.feature_stats(small[0]), *md.metrics.feature_stats(small[1]))
    assert r["fd"] == plain and r["resamples"] == 30 and r["sd"] > 0
    r_large = md.metrics.fd_bootstrap(*large, resamples=30, generator=torch.Generator().manual_seed(1))
    # The distance between two samples of one Gaussian and its spread both fall like 1/n: 25 times more points,
    # far smaller values (a factor 5 leaves room for the 30-round estimate of the spread).
    assert r_large["sd"] < r["sd"] / 5 and r_large["fd"] < r["fd"]
    with pytest.raises(ValueError, match="resamples must be an int >= 2"):
        md.metrics.fd_bootstrap(*small, resamples=1)


def test_score_superres_on_nearest_upsampling_and_on_the_originals():
    x, y = md.load_fashion_mnist("test")
    x, y, ref = x[:100], y[:100], x[100:200]
    clf = md.load_classifier()
    near = sr.upsample(sr.downsample(x, 4), 4, "nearest")
    r = md.evaluate.score_superres(near, x, y, factor=4, reference=ref, classifier=clf, resamples=5)
    assert r["consistency"] < 1e-6 and r["n"] == 100                   # D(U(D(x))) = D(x): rounding only
    assert r["psnr"] == pytest.approx(float(md.metrics.psnr(near, x).mean()))
    same = md.evaluate.score_superres(x, x, y, factor=4, reference=ref, classifier=clf, resamples=5)
    assert same["consistency"] == 0.0 and same["class_kept"] == md.evaluate.accuracy(clf, x, y)
    assert same["fd_cls"] < r["fd_cls"]                                  # blocky images are farther from real ones
    with pytest.raises(ValueError, match="originals must have the shape of images"):
        md.evaluate.score_superres(near, x[:50], y, factor=4, reference=ref, classifier=clf)
