"""Classifier-free guidance (chapter 7): eps = eps_uncond + s (eps_cond - eps_uncond), and its cost in model calls."""
import pytest
import torch

import minidiff as md
from minidiff.guidance import guided_eps

pytestmark = pytest.mark.usefixtures("one_thread")


class Counting:
    """Wraps a model and records, per call, how many rows were conditional and how many had no label.

    A row has no label when ``y`` is None or equals ``num_classes``. With ``hide_classes`` the wrapper has no
    ``num_classes``, like a model that cannot take the "no label" index.
    """

    def __init__(self, model, hide_classes=False):
        self.model, self.calls = model, []
        self.null = getattr(model, "num_classes", None)
        self.num_classes = None if hide_classes else self.null

    def __call__(self, x_t, t, y=None):
        uncond = x_t.shape[0] if y is None else int((y == self.null).sum())
        self.calls.append((x_t.shape[0] - uncond, uncond))          # (conditional rows, unconditional rows)
        return self.model(x_t, t, y)


# The identities below are float64 and elementwise: torch.lerp and the written-out line round differently, by a few
# ulps of |s| |c - u| <= 7.5 * 6 = 45, i.e. ~1e-14, inside 1e-12.
@pytest.fixture
def pair(gen):
    u = torch.randn(4, 3, 5, generator=gen(0), dtype=torch.float64)
    c = torch.randn(4, 3, 5, generator=gen(1), dtype=torch.float64)
    return u, c


def test_scale_1_is_cond_and_scale_0_is_uncond_exactly(pair):
    u, c = pair
    assert torch.equal(md.cfg_combine(u, c, 1.0), c)
    assert torch.equal(md.cfg_combine(u, c, 0.0), u)
    assert torch.equal(md.cfg_combine(u, c, 1), c)                  # an int scale works too


def test_the_scale_is_called_guidance_scale_as_in_the_samplers(pair):
    u, c = pair
    assert torch.equal(md.cfg_combine(u, c, guidance_scale=2.5), md.cfg_combine(u, c, 2.5))
    assert md.cfg_w_from_scale(guidance_scale=2.5) == 1.5


@pytest.mark.parametrize("s", [-1.0, 0.25, 0.5, 2.0, 7.5])
def test_combination_is_the_formula(pair, s):
    u, c = pair
    torch.testing.assert_close(md.cfg_combine(u, c, s), u + s * (c - u), rtol=1e-12, atol=1e-12)


def test_linear_in_the_scale(pair):
    u, c = pair
    f = lambda s: md.cfg_combine(u, c, s)                             # noqa: E731
    for s1, s2, lam in [(0.0, 3.0, 0.3), (1.0, 5.0, 0.5), (-2.0, 2.0, 0.9)]:
        torch.testing.assert_close(f(lam * s1 + (1 - lam) * s2), lam * f(s1) + (1 - lam) * f(s2),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f(3.0) - f(2.0), c - u, rtol=1e-12, atol=1e-12)   # slope = eps_cond - eps_uncond


def test_cfg_weight_convention(pair):
    """The CFG paper's eq. (6), (1 + w) eps_cond - w eps_uncond, is our scale s = 1 + w."""
    u, c = pair
    for w in (0.0, 0.5, 3.0):
        torch.testing.assert_close(md.cfg_combine(u, c, md.scale_from_cfg_w(w)), (1 + w) * c - w * u,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_model_calls_per_step(small, oracle, gen, sampler):
    y = torch.tensor([0, 1, 2, 0])
    steps = small.T if sampler == "ddpm" else 10

    def run(model, **kw):
        if sampler == "ddpm":
            return md.ddpm_sample(model, (4, 2), small, generator=gen(0), **kw)
        return md.ddim_sample(model, (4, 2), small, steps=10, generator=gen(0), **kw)

    plain = Counting(oracle)
    run(plain, y=y, guidance_scale=1.0)
    assert plain.calls == [(4, 0)] * steps                          # s = 1: one call of B conditional rows
    uncond = Counting(oracle)
    run(uncond)
    assert uncond.calls == [(0, 4)] * steps
    guided = Counting(oracle)
    out = run(guided, y=y, guidance_scale=3.0)
    assert guided.calls == [(4, 4)] * steps                         # s != 1: one call of 2B rows per step
    two_calls = Counting(oracle, hide_classes=True)                 # no num_classes: two calls of B rows
    assert torch.equal(run(two_calls, y=y, guidance_scale=3.0), out)
    assert two_calls.calls == [(4, 0), (0, 4)] * steps


def test_batched_guidance_equals_two_calls(small, oracle, gen):
    """One call on 2B rows gives the prediction of the conditional and the unconditional call (the oracle is
    exact per row, so bit for bit); a model without num_classes takes the two-call path."""
    x_t = torch.randn(5, 2, generator=gen(0), dtype=torch.float64)
    t = torch.tensor([3, 50, 100, 150, 199])
    y = torch.tensor([0, 1, 2, 1, 0])
    for s in (0.0, 2.5, -1.0):
        expected = md.cfg_combine(oracle(x_t, t, None), oracle(x_t, t, y), s)
        assert torch.equal(guided_eps(oracle, x_t, t, y, s), expected)
        assert torch.equal(guided_eps(Counting(oracle, hide_classes=True), x_t, t, y, s), expected)
    shared_t = torch.tensor(40)                                        # a 0-d timestep is shared by all rows
    torch.testing.assert_close(guided_eps(oracle, x_t, shared_t, y, 2.0),
                               md.cfg_combine(oracle(x_t, 40, None), oracle(x_t, 40, y), 2.0), rtol=0, atol=0)


def test_scale_endpoints_inside_the_sampler(small, oracle, gen):
    """Guided sampling at s = 1 is conditional sampling and at s = 0 unconditional sampling, bit for bit."""
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    x_T = torch.randn(6, 2, generator=gen(0), dtype=torch.float64)
    run = lambda **kw: md.ddim_sample(oracle, (6, 2), small, steps=10, x_T=x_T, **kw)   # noqa: E731
    assert torch.equal(run(y=y, guidance_scale=0.0), run())
    cond = run(y=y)
    assert torch.equal(run(y=y, guidance_scale=1.0), cond)
    assert not torch.allclose(cond, run(), atol=1e-3)                   # the labels matter: O(1) apart


def test_guided_sampler_equals_a_manual_loop(small, oracle, gen):
    y = torch.tensor([2, 1, 0])
    s, steps = 2.5, 8
    x_T = torch.randn(3, 2, generator=gen(0), dtype=torch.float64)
    out = md.ddim_sample(oracle, (3, 2), small, steps=steps, y=y, guidance_scale=s, x_T=x_T)
    ts = md.ddim_timesteps(small.T, steps)
    x = x_T
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        tb = torch.full((3,), t)
        eps = md.cfg_combine(oracle(x, tb, None), oracle(x, tb, y), s)
        x, _ = md.ddim_step(x, eps, t, t_prev, small)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
