"""The MLP denoiser follows the same model contract as the U-Net, and learns a 2D data set."""
import json

import pytest
import torch

import minidiff as md
from minidiff.mlp import MLPDenoiser
from tolerances import F32_EPS


def _randomise(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize("num_classes", [None, 4])
def test_shape_and_zero_init(batch, num_classes):
    model = MLPDenoiser(num_classes=num_classes)
    x = torch.randn(batch, 2)
    y = torch.randint(0, 4, (batch,)) if num_classes else None
    out = model(x, torch.randint(0, 1000, (batch,)), y)
    assert out.shape == (batch, 2)
    assert torch.equal(out, torch.zeros_like(out))


def test_other_dimensions_and_config():
    model = MLPDenoiser(dim=5, hidden=32, num_layers=2, time_dim=16, num_classes=3)
    assert model(torch.randn(4, 5), 3).shape == (4, 5)
    rebuilt = MLPDenoiser(**json.loads(json.dumps(model.config)))
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == \
           [(k, v.shape) for k, v in model.state_dict().items()]
    assert model.num_classes == 3 and MLPDenoiser().num_classes is None


def test_batch_independence_y_none_and_t():
    model = _randomise(MLPDenoiser(num_classes=4))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, generator=gen)
    t = torch.randint(0, 1000, (5,), generator=gen)
    y = torch.randint(0, 5, (5,), generator=gen)
    with torch.no_grad():
        full = model(x, t, y)
        single = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(5)])
        assert full.abs().mean() > 1e-3
        # A batch of 5 and a batch of 1 may take differently blocked matrix products (AMD and Intel CPUs differ),
        # so the sums run in another order: allow float32 rounding over a few hundred terms, relative to the
        # outputs' scale (the randomised weights make them ~1e2): seven Linear layers of up to 128-term dot products,
        # typically ~sqrt(128) eps32 each, so 64 eps32 of the scale (an AMD CPU measured 11).
        scale = float(full.abs().max())
        atol = 64 * F32_EPS * scale
        torch.testing.assert_close(single, full, rtol=0, atol=atol)
        assert torch.equal(model(x, t, None), model(x, t, torch.full((5,), 4)))
        # a label and a timestep change the output by far more than rounding (by ~50 here)
        assert (model(x, t, torch.zeros(5, dtype=torch.long)) - model(x, t, None)).abs().max() > atol
        assert (model(x, t) - model(x, t + 1)).abs().max() > atol


@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m(torch.randn(3, 3), 1), ValueError, "x must have shape \\(B, 2\\)"),
    (lambda m: m(torch.randn(3, 2), torch.tensor([1, 2])), ValueError, "t must have shape \\(3,\\)"),
    (lambda m: m(torch.randn(3, 2), 1, torch.tensor([0, 1, 5])), ValueError, "labels in \\[0, 4\\]"),
    (lambda m: m(torch.randn(3, 2), 1, torch.tensor([0.0, 1.0, 2.0])), TypeError, "integer tensor"),
    (lambda m: m([[0.0, 0.0]], 1), TypeError, "x must be a floating-point torch.Tensor"),
])
def test_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call(MLPDenoiser(num_classes=4))


def test_bad_constructor_and_unconditional_y():
    with pytest.raises(ValueError, match="hidden must be in"):
        MLPDenoiser(hidden=0)
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser()(torch.randn(2, 2), 1, torch.tensor([0, 1]))


def test_learns_8gaussians_quickly():
    """A short training run on 2D data brings the eps loss from 1 at init close to the exact denoiser's."""
    sched = md.NoiseSchedule.linear(T=200, beta_start=1e-3, beta_end=0.05)
    gen = torch.Generator().manual_seed(0)
    data = md.data.toy_2d("8gaussians", 2048, generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = MLPDenoiser()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = md.data.TensorLoader(data, batch_size=256, generator=gen)
    losses = []
    for _ in range(12):
        for x, _ in loader:
            loss = md.eps_loss(model, x, sched, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    # The zero-initialised model starts at E[eps^2] = 1: its first loss is a mean of 256 * 2 eps^2 (variance 2),
    # within 5 standard errors sqrt(2 / 512) of 1. The exact denoiser of these 2048 points reaches ~0.30.
    assert losses[0] == pytest.approx(1.0, abs=5 * (2 / 512) ** 0.5)
    assert sum(losses[-24:]) / 24 < 0.5
