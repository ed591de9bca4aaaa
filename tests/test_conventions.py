"""The conventions written down once (the book's notation page): timestep indexing, the DDIM paper's alpha,
the CFG paper's w, and DDIM's sigma(eta)."""
import math

import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_t_round_trip():
    assert md.paper_t(0) == 1 and md.paper_t(999) == 1000
    assert md.index_from_paper_t(1) == 0 and md.index_from_paper_t(1000) == 999
    assert all(md.index_from_paper_t(md.paper_t(i)) == i for i in range(1000))


def test_index_0_is_the_papers_x1(linear, gen):
    """alpha_bars[0] = 1 - beta_1: index 0 is one forward step from the data (paper t = 1)."""
    assert float(linear.alpha_bars[0]) == 1 - float(linear.betas[0])
    assert float(linear.alpha_bars_prev[0]) == 1.0                     # "index -1" is x_0 itself
    x0 = torch.randn(3, 2, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(3, 2, generator=gen(1), dtype=torch.float64)
    # float64, elementwise: 1 - alpha_bar_0 = 1 - (1 - beta_0) is beta_0 up to the rounding of 1 - beta_0 (<= 2^-54),
    # i.e. <= 5.6e-13 relative to beta_0 = 1e-4; the sqrt halves that, on sqrt(beta_0) |eps| <= 0.04: <= 1e-14 in
    # the worst case, so allow 1e-13.
    torch.testing.assert_close(md.q_sample(x0, md.index_from_paper_t(1), linear, noise=eps),
                               md.q_step(x0, 0, linear, noise=eps), rtol=1e-13, atol=1e-13)


def test_index_T_minus_1_is_the_papers_xT(linear):
    """The last index is the paper's x_T = x_1000: alpha_bar_T = prod of all T alphas."""
    prod = math.prod(1 - b for b in linear.betas.tolist())
    # two float64 products of 1000 factors, each step rounding by <= eps64/2: <= 2.2e-13 apart
    assert math.isclose(float(linear.alpha_bars[md.index_from_paper_t(1000)]), prod, rel_tol=1e-12)


def test_samplers_count_down_from_T_minus_1(small, points2d, gen):
    points, _ = points2d
    seen = []
    md.ddpm_sample(md.OracleDenoiser(points, small), (1, 2), small, generator=gen(0),
                   callback=lambda i, t, x, x0: seen.append(t))
    assert seen == list(range(small.T - 1, -1, -1))


def test_ddim_paper_alpha_is_alpha_bar(cosine):
    """The DDIM paper's alpha_t is the cumulative product (our alpha_bar), not 1 - beta_t."""
    assert md.ddim_paper_alpha(cosine) is cosine.alpha_bars
    assert not torch.allclose(md.ddim_paper_alpha(cosine), cosine.alphas)    # they differ by O(1) at the end


def test_cfg_w_and_scale_are_inverse():
    for s in (0.0, 1.0, 1.5, 7.5, -2.0):                             # s - 1 and w + 1 are exact for these
        assert md.scale_from_cfg_w(md.cfg_w_from_scale(s)) == s
    assert md.cfg_w_from_scale(1.0) == 0.0                           # s = 1: no guidance, w = 0
    assert md.scale_from_cfg_w(0.0) == 1.0


def test_ddim_sigma_eq_16(cosine):
    ab, abp = cosine.alpha_bars, cosine.alpha_bars_prev
    for t in (1, 10, 500, 999):
        a, a_prev = float(ab[t]), float(abp[t])
        assert md.ddim_sigma(a, a_prev, 0.0) == 0.0
        # eta = 1 between consecutive steps is DDPM's posterior standard deviation sqrt(beta_tilde). float64:
        # 1 - a / a_prev cancels to beta_t (>= 4.6e-5 here), leaving a relative error ~2 eps64 / beta_t <= 1e-11
        assert math.isclose(md.ddim_sigma(a, a_prev, 1.0) ** 2, float(cosine.posterior_variance[t]), rel_tol=1e-10)
        # linear in eta, and written out as DDIM eq. (16): the same cancellation on both sides, then a few roundings
        expected = 0.5 * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        assert math.isclose(md.ddim_sigma(a, a_prev, 0.5), expected, rel_tol=1e-12)
    # stepping to the data (alpha_bar_prev = 1) adds no noise whatever eta
    assert md.ddim_sigma(float(ab[20]), 1.0, 1.0) == 0.0


def test_ddim_sigma_lives_beside_ddim_and_keeps_its_old_import():
    from minidiff.conventions import ddim_sigma
    assert ddim_sigma is md.ddim_sigma is md.samplers.ddim_sigma
