"""The forward process (chapters 1-2), the eps/x0/v conversions and the L_simple objective (chapter 3).

The closed form q(x_t | x_0) (DDPM eq. 4) must be what iterating q(x_t | x_{t-1}) (DDPM eq. 2) gives: checked
exactly through the mean/variance recursion and statistically by running the chain.
"""
import math

import pytest
import torch

import minidiff as md

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULES = {
    "linear": lambda: md.NoiseSchedule.linear(T=1000),
    "cosine": lambda: md.NoiseSchedule.cosine(T=1000),
    "sigmoid": lambda: md.NoiseSchedule.sigmoid(T=1000),
    "zero_snr": lambda: md.NoiseSchedule.linear(T=1000).rescale_zero_terminal_snr(),
}


# ------------------------------------------------------------------------------------------ closed form
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_closed_form_equals_the_iterated_mean_and_variance(name):
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t with x_{t-1} ~ N(m x_0, v) gives
    m_t = sqrt(1 - beta_t) m_{t-1} and v_t = (1 - beta_t) v_{t-1} + beta_t, from m_0 = 1, v_0 = 0."""
    sched = SCHEDULES[name]()
    m, v = 1.0, 0.0
    # float64, values <= 1: the recursions and the schedule's cumulative product each round ~2 eps64 per step,
    # so after 1000 steps they agree to <= ~5e-13
    for i, beta in enumerate(sched.betas.tolist()):
        m, v = math.sqrt(1 - beta) * m, (1 - beta) * v + beta
        assert abs(m - float(sched.alpha_bars[i].sqrt())) < 1e-12
        assert abs(v - float(1 - sched.alpha_bars[i])) < 1e-12


def test_monte_carlo_chain_matches_q_sample(linear, gen):
    """Run 1e5 chains of q_step from a fixed x_0 and compare with q(x_t | x_0) within 5 standard errors.

    SE of the mean: sqrt(var / n); SE of the sample variance: var * sqrt(2 / (n - 1)).
    """
    n, x0_value = 100_000, 1.5
    x0 = torch.full((n,), x0_value, dtype=torch.float64)            # (B,): n scalar chains
    checkpoints = {0, 9, 99, 499, 999}
    g = gen(1)
    x = x0
    for t in range(linear.T):
        x = md.q_step(x, t, linear, generator=g)
        if t in checkpoints:
            ab = float(linear.alpha_bars[t])
            mean, var = math.sqrt(ab) * x0_value, 1 - ab
            # the closed-form sampler draws from the same law; check both against the formulas
            direct = md.q_sample(x0, t, linear, generator=g)
            for sample in (x, direct):
                assert abs(float(sample.mean()) - mean) < 5 * math.sqrt(var / n)
                assert abs(float(sample.var()) - var) < 5 * var * math.sqrt(2 / (n - 1))


def test_q_sample_is_the_formula_and_q_step_at_index_0(cosine, gen):
    x0 = torch.randn(8, 3, 4, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(8, 3, 4, generator=gen(1), dtype=torch.float64)
    t = torch.tensor([0, 1, 5, 100, 500, 900, 998, 999])
    ab = cosine.alpha_bars[t].view(8, 1, 1)                            # (B, 1, 1)
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    # float64, the same elementwise operations: a few ulps of values <= 4 at most
    torch.testing.assert_close(md.q_sample(x0, t, cosine, noise=eps), expected, rtol=1e-14, atol=1e-14)
    # index 0 is the paper's x_1: one forward step from x_0 is the closed form at t = 1. 1 - (1 - beta_0) is beta_0
    # up to the rounding of 1 - beta_0 (<= 2^-54), 1.3e-12 relative to beta_0 = 4.1e-5; the sqrt halves it, on
    # sqrt(beta_0) |eps| <= 0.03: up to ~2e-14
    torch.testing.assert_close(md.q_step(x0, 0, cosine, noise=eps), md.q_sample(x0, 0, cosine, noise=eps),
                               rtol=1e-13, atol=1e-13)


def test_q_step_is_the_formula(linear, gen):
    x = torch.randn(4, 5, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 5, generator=gen(1), dtype=torch.float64)
    t = torch.tensor([3, 30, 300, 999])
    beta = linear.betas[t].view(4, 1)
    # float64, the same elementwise operations: a few ulps
    torch.testing.assert_close(md.q_step(x, t, linear, noise=eps), (1 - beta).sqrt() * x + beta.sqrt() * eps,
                               rtol=1e-14, atol=1e-14)


def test_timestep_forms_agree(linear, gen):
    x0 = torch.randn(3, 2, generator=gen(0))
    eps = torch.randn(3, 2, generator=gen(1))
    a = md.q_sample(x0, 17, linear, noise=eps)
    b = md.q_sample(x0, torch.tensor(17), linear, noise=eps)
    c = md.q_sample(x0, torch.full((3,), 17, dtype=torch.int32), linear, noise=eps)
    assert torch.equal(a, b) and torch.equal(a, c) and a.dtype == torch.float32


def test_q_sample_seeded_determinism(linear, gen):
    x0 = torch.zeros(4, 3)
    assert torch.equal(md.q_sample(x0, 5, linear, generator=gen(7)), md.q_sample(x0, 5, linear, generator=gen(7)))
    assert not torch.equal(md.q_sample(x0, 5, linear, generator=gen(7)),
                           md.q_sample(x0, 5, linear, generator=gen(8)))


# ------------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("as_tensor", [False, True])
def test_eps_x0_v_round_trips(as_tensor, gen):
    x0 = torch.randn(6, 5, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(6, 5, generator=gen(1), dtype=torch.float64)
    if as_tensor:
        ab = torch.tensor([0.9999, 0.9, 0.5, 0.1, 1e-3, 1e-5], dtype=torch.float64).view(6, 1)
    else:
        ab = 0.37
    ab_t = torch.as_tensor(ab, dtype=torch.float64)
    x_t = ab_t.sqrt() * x0 + (1 - ab_t).sqrt() * eps
    # float64: inverting divides rounding of O(1) values by sqrt(ab) or sqrt(1 - ab) >= 3e-3 (ab = 1e-5, 0.9999):
    # ~1e-13, and 1 - ab cancels near ab = 1 (~1e-12 relative); 1e-9 leaves room
    close = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(md.x0_from_eps(x_t, eps, ab), x0, **close)
    torch.testing.assert_close(md.eps_from_x0(x_t, x0, ab), eps, **close)
    v = md.v_from_eps(x0, eps, ab)
    torch.testing.assert_close(v, ab_t.sqrt() * eps - (1 - ab_t).sqrt() * x0, **close)
    torch.testing.assert_close(md.x0_from_v(x_t, v, ab), x0, **close)
    torch.testing.assert_close(md.eps_from_v(x_t, v, ab), eps, **close)
    # eps -> x0 -> eps and x0 -> v -> eps close the loop through all three parameterisations
    torch.testing.assert_close(md.eps_from_x0(x_t, md.x0_from_eps(x_t, eps, ab), ab), eps, **close)


def test_zero_snr_guard_keeps_x0_from_eps_finite(zero_snr, gen):
    x_t = torch.randn(4, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 3, generator=gen(1), dtype=torch.float64)
    last = zero_snr.alpha_bars[-1]
    assert float(last) == 0.0
    for ab in (0.0, last, torch.zeros(4, 1, dtype=torch.float64)):
        x0 = md.x0_from_eps(x_t, eps, ab)
        assert bool(torch.isfinite(x0).all())
        # the floor alpha_bar_min = 2**-24 replaces the zero, nothing else changes (x_t - eps, then an exact division
        # by a power of two: equal to within an ulp)
        torch.testing.assert_close(x0, (x_t - eps) / 2.0**-12, rtol=1e-12, atol=0)
    # above the floor the guard does nothing: the inverse is exact
    x0 = torch.randn(4, 3, generator=gen(2), dtype=torch.float64)
    tiny = 1e-6
    x_t = math.sqrt(tiny) * x0 + math.sqrt(1 - tiny) * eps
    # float64: dividing by sqrt(1e-6) magnifies the ulps of x_t and eps (~4e-16) a thousandfold: ~1e-12
    torch.testing.assert_close(md.x0_from_eps(x_t, eps, tiny), x0, rtol=1e-7, atol=1e-7)


# ------------------------------------------------------------------------------------------ eps_loss
class Conditional:
    """A conditional stand-in model that records the labels it sees and returns a fixed prediction."""

    def __init__(self, num_classes, out=None):
        self.num_classes, self.out, self.seen = num_classes, out, []

    def __call__(self, x_t, t, y=None):
        self.seen.append(y)
        return torch.zeros_like(x_t) if self.out is None else self.out(x_t, t)


def test_eps_loss_is_zero_for_the_true_noise(linear, true_eps, gen):
    x0 = torch.randn(32, 2, 3, generator=gen(0), dtype=torch.float64)
    loss = md.eps_loss(true_eps(x0, linear), x0, linear, generator=gen(1))
    assert loss.dtype == torch.float64 and loss.ndim == 0
    # float64: the true eps comes back to within x_t's ulps over sqrt(1 - ab) >= 0.01, ~1e-13; squared ~1e-26
    assert float(loss) < 1e-18
    # and it is the mean squared error: predicting 0 costs E||eps||^2 / D = 1 on average
    zero = md.eps_loss(lambda x, t, y=None: torch.zeros_like(x), x0, linear, generator=gen(1))
    # a mean of 192 eps^2 (each of variance 2): within 5 standard errors sqrt(2 / 192) of 1
    assert abs(float(zero) - 1) < 5 * math.sqrt(2 / 192)


def test_eps_loss_reduction_none_and_explicit_t_noise(linear, gen):
    x0 = torch.randn(5, 4, generator=gen(0), dtype=torch.float64)
    noise = torch.randn(5, 4, generator=gen(1), dtype=torch.float64)
    t = torch.tensor([0, 10, 100, 500, 999])

    def model(x_t, t_, y=None):
        return 0.5 * x_t

    per = md.eps_loss(model, x0, linear, t=t, noise=noise, reduction="none")
    assert per.shape == (5,)
    x_t = md.q_sample(x0, t, linear, noise=noise)
    # float64, means of 4 terms in either order: a few ulps
    torch.testing.assert_close(per, (0.5 * x_t - noise).pow(2).mean(dim=1), rtol=1e-12, atol=0)
    mean = md.eps_loss(model, x0, linear, t=t, noise=noise)
    torch.testing.assert_close(mean, per.mean(), rtol=1e-12, atol=0)


def test_eps_loss_seeded_determinism(linear, gen):
    x0 = torch.randn(16, 3, generator=gen(0))
    model = Conditional(4, out=lambda x, t: x * 0.3 + t.view(-1, 1) * 1e-3)
    y = torch.arange(16) % 4
    a = md.eps_loss(model, x0, linear, y=y, p_uncond=0.5, generator=gen(3), reduction="none")
    b = md.eps_loss(model, x0, linear, y=y, p_uncond=0.5, generator=gen(3), reduction="none")
    c = md.eps_loss(model, x0, linear, y=y, p_uncond=0.5, generator=gen(4), reduction="none")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(model.seen[0], model.seen[1])


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_eps_loss_label_dropout_is_binomial(linear, gen, p):
    """Each label is replaced by the "no label" index num_classes independently with probability p_uncond."""
    num_classes, n = 10, 20_000
    model = Conditional(num_classes)
    y = torch.arange(n) % num_classes
    md.eps_loss(model, torch.zeros(n, 1), linear, y=y, p_uncond=p, generator=gen(5))
    seen = model.seen[-1]
    dropped = seen == num_classes
    assert torch.equal(seen[~dropped], y[~dropped])                   # kept labels are untouched
    k = int(dropped.sum())
    if p == 1.0:
        assert k == n
    else:
        assert abs(k - n * p) < 5 * math.sqrt(n * p * (1 - p))


def test_eps_loss_without_dropout_passes_labels_through(linear, gen):
    model = Conditional(3)
    y = torch.tensor([0, 1, 2, 1])
    md.eps_loss(model, torch.zeros(4, 2), linear, y=y, generator=gen(0))
    assert torch.equal(model.seen[-1], y)
    md.eps_loss(model, torch.zeros(4, 2), linear, generator=gen(0))
    assert model.seen[-1] is None


def test_eps_loss_draws_uniform_timesteps(linear, gen):
    seen = []

    def model(x_t, t, y=None):
        seen.append(t)
        return torch.zeros_like(x_t)

    md.eps_loss(model, torch.zeros(50_000, 1), linear, generator=gen(2))
    t = seen[0]
    assert int(t.min()) == 0 and int(t.max()) == linear.T - 1
    n, k = t.numel(), int((t < linear.T // 2).sum())                   # half the range: p = 1/2
    assert abs(k - n / 2) < 5 * math.sqrt(n / 4)
