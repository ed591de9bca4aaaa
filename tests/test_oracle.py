"""The exact denoiser of a finite data set: correctness against brute force, sampling, guidance and stability.

For p(x_0) = (1/N) sum_n delta(x_0 - p_n) and x_t = sqrt(a) x_0 + sqrt(1 - a) eps:
w_n(x_t) ∝ exp(-||x_t - sqrt(a) p_n||^2 / (2 (1 - a))),  E[eps | x_t] = (x_t - sqrt(a) sum_n w_n p_n) / sqrt(1 - a).
"""
import math

import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force_eps(points: torch.Tensor, x_t: torch.Tensor, alpha_bar: float, keep=None) -> torch.Tensor:
    """E[eps | x_t] by the definition: explicit squared distances and a log-sum-exp, one sample at a time."""
    P = points.reshape(points.shape[0], -1).double()
    out = []
    for row, x in enumerate(x_t.reshape(x_t.shape[0], -1).double()):
        log_w = torch.stack([-(x - math.sqrt(alpha_bar) * p).pow(2).sum() / (2 * (1 - alpha_bar)) for p in P])
        if keep is not None:
            log_w = torch.where(keep[row], log_w, torch.tensor(-math.inf, dtype=torch.float64))
        w = torch.exp(log_w - torch.logsumexp(log_w, dim=0))
        x0 = (w[:, None] * P).sum(dim=0)
        out.append((x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar))
    return torch.stack(out).reshape(x_t.shape)


def unique_points(points2d):
    """The five distinct points, their probabilities under the data set (point 0 appears twice) and labels."""
    points, labels = points2d
    return points[1:], torch.tensor([2, 1, 1, 1, 1], dtype=torch.float64) / 6, labels[1:]


# ------------------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("t", [0, 3, 40, 120, 199])
def test_oracle_matches_brute_force(small, oracle, points2d, gen, t):
    points, labels = points2d
    x_t = torch.randn(7, 2, generator=gen(t), dtype=torch.float64) * 2
    expected = brute_force_eps(points, x_t, float(small.alpha_bars[t]))
    # float64: the oracle expands ||x - sqrt(a) p||^2, whose terms reach |x| |p| / (1 - a) ~ 3e4 at t = 0, so the
    # logits carry ~1e-11 and the weights as much relative error; dividing by sqrt(1 - a) >= 0.02 gives ~1e-9 on
    # eps ~ 1e2 there: well inside 1e-9 + 1e-9 |eps|
    torch.testing.assert_close(oracle(x_t, t), expected, rtol=1e-9, atol=1e-9)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2])                          # 3 = num_classes = no label
    keep = (labels[None, :] == y[:, None]) | (y == 3)[:, None]         # (B, N)
    torch.testing.assert_close(oracle(x_t, t, y), brute_force_eps(points, x_t, float(small.alpha_bars[t]), keep),
                               rtol=1e-9, atol=1e-9)


def test_oracle_images_match_brute_force(linear, gen):
    points = torch.rand(12, 1, 4, 4, generator=gen(0), dtype=torch.float64) * 2 - 1    # (N, C, H, W)
    oracle = md.OracleDenoiser(points, linear)
    x_t = md.q_sample(points[:5], torch.tensor([10, 100, 300, 600, 999]), linear, generator=gen(1))
    for row, t in enumerate([10, 100, 300, 600, 999]):
        got = oracle(x_t[row:row + 1], t)
        assert got.shape == (1, 1, 4, 4)
        # as above, with 16-term squared distances and 1 - a >= 1e-3
        torch.testing.assert_close(got, brute_force_eps(points, x_t[row:row + 1], float(linear.alpha_bars[t])),
                                   rtol=1e-8, atol=1e-8)


def test_posterior_weights(oracle, points2d, gen):
    _, labels = points2d
    x_t = torch.randn(9, 2, generator=gen(0), dtype=torch.float64) * 3
    for t in (0, 50, 199):
        w = oracle.posterior_weights(x_t, t)
        assert w.shape == (9, 6) and bool((w >= 0).all())
        # a softmax over 6 points sums to 1 within ~6 eps64; 1e-12 is generous
        torch.testing.assert_close(w.sum(dim=1), torch.ones(9, dtype=torch.float64), rtol=0, atol=1e-12)
        # the duplicated point 0 has exactly its copy's weight
        torch.testing.assert_close(w[:, 0], w[:, 1], rtol=0, atol=0)
        y = torch.tensor([0, 1, 2] * 3)
        wy = oracle.posterior_weights(x_t, t, y)
        torch.testing.assert_close(wy.sum(dim=1), torch.ones(9, dtype=torch.float64), rtol=0, atol=1e-12)
        assert bool((wy[labels[None, :] != y[:, None]] == 0).all())   # nothing outside the class
        assert torch.equal(oracle.posterior_weights(x_t, t, torch.full((9,), 3)), w)   # 3 = no label


def test_eps_and_posterior_mean_are_consistent(small, oracle, gen):
    x_t = torch.randn(5, 2, generator=gen(0), dtype=torch.float64)
    t = torch.tensor([0, 10, 50, 150, 199])
    ab = small.alpha_bars[t].view(5, 1)
    x0 = oracle.posterior_mean(x_t, t)
    # float64, the same formula from the same posterior mean: a few ulps
    torch.testing.assert_close(oracle(x_t, t), (x_t - ab.sqrt() * x0) / (1 - ab).sqrt(), rtol=1e-12, atol=1e-12)
    assert oracle(x_t.float(), t).dtype == torch.float32


def test_oracle_minimises_the_eps_loss(small, points2d, gen):
    """E[eps | x_t] is the minimum-MSE prediction: shrinking or stretching it costs loss (on 50k draws)."""
    points, _ = points2d
    oracle = md.OracleDenoiser(points, small)
    x0 = points[torch.randint(0, 6, (50_000,), generator=gen(0))]
    t = torch.randint(0, small.T, (50_000,), generator=gen(1))
    noise = torch.randn(50_000, 2, generator=gen(2), dtype=torch.float64)
    best = md.eps_loss(oracle, x0, small, t=t, noise=noise)
    for scale in (0.9, 1.1):
        worse = md.eps_loss(lambda x, t_, y=None: scale * oracle(x, t_), x0, small, t=t, noise=noise)
        # the excess is (1 - scale)^2 E[eps_hat^2] ~ 0.01 * 0.85 = 8e-3 (the cross term vanishes for the posterior
        # mean, up to its Monte Carlo error ~1e-3 with these shared draws): far above 1e-4
        assert float(worse) > float(best) + 1e-4


# ------------------------------------------------------------------------------------------ sampling
@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_lands_on_the_points_in_proportion(small, oracle, points2d, gen, sampler):
    """Samples hit the data points (distance ~0) with the empirical probabilities, each count within 5
    binomial standard errors (point 0 is duplicated in the data set, so it must be hit twice as often)."""
    n = 4000
    if sampler == "ddpm":
        x = md.ddpm_sample(oracle, (n, 2), small, generator=gen(0), dtype=torch.float64)
    else:
        x = md.ddim_sample(oracle, (n, 2), small, steps=50, generator=gen(0), dtype=torch.float64)
    uniq, probs, _ = unique_points(points2d)
    dist, nearest = torch.cdist(x, uniq).min(dim=1)
    # the collapsed posterior puts samples on the points to rounding; cdist of > 25 rows goes through
    # ||x||^2 + ||p||^2 - 2 x.p, whose cancellation leaves sqrt(~eps64 * 4 ||p||^2) ~ 1e-7 for ||p|| <= 2.9
    assert float(dist.max()) < 1e-6
    counts = torch.bincount(nearest, minlength=5).double()
    se = (n * probs * (1 - probs)).sqrt()
    assert bool(((counts - n * probs).abs() < 5 * se).all()), counts.tolist()


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_conditional_and_guided_sampling_lands_in_the_class(small, oracle, points2d, gen, scale):
    uniq, _, labels = unique_points(points2d)
    n = 600
    y = torch.arange(n) % 3
    x = md.ddim_sample(oracle, (n, 2), small, steps=50, y=y, guidance_scale=scale, generator=gen(1),
                       dtype=torch.float64)
    dist, nearest = torch.cdist(x, uniq).min(dim=1)
    assert float(dist.max()) < 1e-6                                     # as above
    assert torch.equal(labels[nearest], y)
    # within class 1 (two points, equally likely) both points are reached
    hits = torch.bincount(nearest[y == 1], minlength=5)
    # each of 200 samples is a fair coin: 100 +- 7.1 (one SE), so 50 is 7 SE away
    assert int(hits[1]) > 50 and int(hits[2]) > 50


# ------------------------------------------------------------------------------------------ numerics
def test_stable_at_tiny_t_in_784_dimensions(linear, gen):
    points = torch.rand(20, 1, 28, 28, generator=gen(0)) * 2 - 1    # float32 images in [-1, 1]
    oracle = md.OracleDenoiser(points, linear)
    noise = torch.randn(4, 1, 28, 28, generator=gen(1))
    for t in (0, 1, 5):
        x_t = md.q_sample(points[:4], t, linear, noise=noise)
        eps = oracle(x_t, t)
        assert bool(torch.isfinite(eps).all())
        # the posterior has collapsed on the right image: the predicted noise is the true one. x_t is float32:
        # alpha_bar_0 = 1 - 1e-4 rounded to float32 (<= eps32/4 = 3e-8) puts sqrt(1 - alpha_bar) off by up to
        # 3e-8 / (2e-4) = 1.5e-4 relative, which the float64 inversion hands on to eps: <= 1.5e-4 |eps| (less at
        # t = 1, 5), plus x_t's own ulps over sqrt(1 - alpha_bar) = 0.01: ~1e-5
        torch.testing.assert_close(eps, noise, rtol=1e-3, atol=1e-3)
        far = torch.randn(4, 1, 28, 28, generator=gen(2)) * 10     # far from every point
        w = oracle.posterior_weights(far, t)
        assert bool(torch.isfinite(w).all()) and bool(torch.isfinite(oracle(far, t)).all())
        torch.testing.assert_close(w.sum(dim=1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)


def test_zero_snr_end_is_finite(zero_snr, points2d, gen):
    """At alpha_bar = 0 the weights are uniform and E[eps | x_T] = x_T."""
    points, _ = points2d
    oracle = md.OracleDenoiser(points, zero_snr)
    x_t = torch.randn(3, 2, generator=gen(0), dtype=torch.float64)
    w = oracle.posterior_weights(x_t, zero_snr.T - 1)
    # the logits are 0 exactly, so the softmax is 1/6 to an ulp (2.8e-17)
    torch.testing.assert_close(w, torch.full((3, 6), 1 / 6, dtype=torch.float64), rtol=0, atol=1e-15)
    # eps = (x_t - sqrt(0) x0) / sqrt(1 - 0): every operation exact
    torch.testing.assert_close(oracle(x_t, zero_snr.T - 1), x_t, rtol=0, atol=0)
