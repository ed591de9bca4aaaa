"""Editing (chapters 6 and 8): RePaint inpainting, SDEdit and slerp, checked with the exact oracle denoiser."""
import pytest
import torch

import minidiff as md
from tolerances import F32_EPS, sum_error

SCHED = md.NoiseSchedule.linear(T=1000)


def _data(n=8, seed=0):
    """n points (n, 1, 2, 2): the first row tells them apart (known), the second is what inpainting must find."""
    g = torch.Generator().manual_seed(seed)
    known = torch.stack([torch.linspace(-1, 1, n), torch.linspace(1, -1, n).roll(3)], dim=1)     # (n, 2)
    hidden = torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1                        # (n, 2)
    return torch.cat([known, hidden], dim=1).reshape(n, 1, 2, 2).double()


MASK = torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64).reshape(1, 1, 2, 2)     # keep the first row


class Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t, y=None):
        self.calls += 1
        return self.model(x, t, y)


def test_inpaint_keeps_the_known_pixels_exactly_and_finds_the_matching_data_point():
    data = _data()
    oracle = md.OracleDenoiser(data, SCHED)
    x0 = data.clone()
    x0[:, :, 1] = 0.0                                          # hide the second row
    out = md.inpaint(oracle, x0, MASK, SCHED, steps=50, resample=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, 0], data[:, :, 0])
    assert (out[:, :, 1] - data[:, :, 1]).abs().max() < 0.02     # RePaint's approximation with 50 steps, not rounding


def test_inpaint_with_nothing_known_is_plain_ddim():
    oracle = md.OracleDenoiser(_data(), SCHED)
    x0 = torch.zeros(5, 1, 2, 2, dtype=torch.float64)
    mask = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    a = md.inpaint(oracle, x0, mask, SCHED, steps=20, resample=1, eta=0.0, generator=torch.Generator().manual_seed(3))
    b = md.ddim_sample(oracle, (5, 1, 2, 2), SCHED, steps=20, eta=0.0, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(3))
    # float64, the same DDIM updates (the blend with mask 0 is exact): a few ulps of values <= 3. (rtol=0: the
    # default rtol of 1e-5 would have allowed 1e-5 |b|.)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps, resample", [(10, 1), (10, 4), (7, 3)])
def test_inpaint_model_calls(steps, resample):
    model = Counting(md.OracleDenoiser(_data(), SCHED))
    md.inpaint(model, torch.zeros(2, 1, 2, 2, dtype=torch.float64), MASK, SCHED, steps=steps, resample=resample,
               generator=torch.Generator().manual_seed(0))
    assert model.calls == steps * resample - (resample - 1)


def test_inpaint_one_step_teaching_version():
    """The last RePaint step (t -> data) is a DDIM step on the unknown part and x0 on the known part."""
    data = _data()
    oracle = md.OracleDenoiser(data, SCHED)
    x0 = data.clone()
    x_T = torch.randn(8, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = md.inpaint(oracle, x0, MASK, SCHED, steps=1, eta=0.0, generator=torch.Generator().manual_seed(1))
    t = torch.full((8,), 999)
    unknown, _ = md.ddim_step(x_T, oracle(x_T, t), 999, -1, SCHED)
    torch.testing.assert_close(out, MASK * x0 + (1 - MASK) * unknown, rtol=0, atol=1e-12)    # float64, as above


def test_sdedit_equals_its_teaching_loop():
    data = _data()
    oracle = md.OracleDenoiser(data, SCHED)
    x0 = data + 0.3 * torch.randn(data.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(data.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    out = md.sdedit(oracle, x0, SCHED, strength=0.4, steps=8, noise=noise)
    t0 = md.editing.sdedit_start(0.4, SCHED.T)
    assert t0 == 399
    x = md.q_sample(x0, t0, SCHED, noise=noise)
    ts = md.ddim_timesteps(t0 + 1, 8, "trailing")
    assert ts[0] == t0
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        x, _ = md.ddim_step(x, oracle(x, torch.full((8,), t)), t, t_prev, SCHED)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)                                 # float64, as above


def test_sdedit_strength_trades_faithfulness_for_realism():
    data = _data(n=16)
    oracle = md.OracleDenoiser(data, SCHED)
    g = torch.Generator().manual_seed(6)
    x0 = data + 0.05 * torch.randn(data.shape, dtype=torch.float64, generator=g)         # near the data
    low = md.sdedit(oracle, x0, SCHED, strength=0.001, steps=1, generator=torch.Generator().manual_seed(7))
    assert (low - x0).abs().max() < 0.1                          # one tiny step: the input survives (not rounding)
    full = md.sdedit(oracle, x0, SCHED, strength=1.0, steps=50, generator=torch.Generator().manual_seed(7))
    dist = torch.cdist(full.flatten(1), data.flatten(1)).min(dim=1).values
    assert (dist < 1e-2).double().mean() >= 0.8                  # the oracle lands on training points (50 steps)


def test_slerp_endpoints_norm_and_parallel_case():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    assert torch.equal(md.slerp(z0, z1, 0.0), z0) and torch.equal(md.slerp(z0, z1, 1.0), z1)
    e0 = torch.tensor([[1.0, 0.0]]); e1 = torch.tensor([[0.0, 1.0]])
    mid = md.slerp(e0, e1, 0.5)
    # stays on the circle: float32 acos, sin and a division, each within an ulp or two (vectorised per CPU)
    torch.testing.assert_close(mid, torch.tensor([[2**-0.5, 2**-0.5]]), rtol=8 * F32_EPS, atol=0)
    # parallel: cos is exactly 1, so slerp takes the line 0.75 e0 + 0.25 (3 e0) = 1.5 e0, exact in float32
    assert torch.equal(md.slerp(e0, 3 * e0, 0.25), e0 + 0.25 * 2 * e0)
    alphas = torch.tensor([0.0, 0.3, 0.7, 1.0])
    out = md.slerp(z0, z1, alphas)
    assert torch.equal(out[0], z0[0]) and torch.equal(out[3], z1[3])
    # one row alone: its 75-term dot product and two norms may be summed in another order, moving cos by
    # <= 3 * 75 eps32; with sin(theta) ~ 1 here the weights move as much, times |z0| + |z1|
    scale = float(z0[1].abs().max() + z1[1].abs().max())
    torch.testing.assert_close(out[1], md.slerp(z0[1:2], z1[1:2], 0.3)[0], rtol=0, atol=sum_error(3 * 75, scale))


@pytest.mark.parametrize("call, name", [
    (lambda o, x: md.inpaint(o, x, torch.full((1, 1, 2, 2), 0.5), SCHED), "mask"),
    (lambda o, x: md.inpaint(o, x, torch.ones(3, 3), SCHED), "mask"),
    (lambda o, x: md.inpaint(o, x, MASK, SCHED, resample=0), "resample"),
    (lambda o, x: md.inpaint(o, x, MASK, SCHED, steps=0), "steps"),
    (lambda o, x: md.inpaint(o, x, MASK, SCHED, eta=-1.0), "eta"),
    (lambda o, x: md.sdedit(o, x, SCHED, strength=0.0), "strength"),
    (lambda o, x: md.sdedit(o, x, SCHED, strength=1.5), "strength"),
    (lambda o, x: md.sdedit(o, x, SCHED, strength=0.0004), "strength"),
    (lambda o, x: md.sdedit(o, x, SCHED, strength=0.01, steps=20), "steps"),
    (lambda o, x: md.sdedit(o, x, SCHED, noise=torch.zeros(3)), "noise"),
    (lambda o, x: md.slerp(x, x, 1.5), "alpha"),
    (lambda o, x: md.slerp(x, x, torch.zeros(3)), "alpha"),
    (lambda o, x: md.slerp(x, x[:1], 0.5), "z1"),
])
def test_bad_input_names_the_argument(call, name):
    oracle = md.OracleDenoiser(_data(), SCHED)
    with pytest.raises(ValueError, match=name):
        call(oracle, torch.zeros(2, 1, 2, 2, dtype=torch.float64))
