"""The U-Net's contract: shapes, zero output at init, batch independence, labels, config, errors, size."""
import json
import math

import pytest
import torch

import minidiff as md
from minidiff.unet import UNet, n_params, timestep_embedding


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised ones included) small random values, so outputs are non-trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _tiny(**kw):
    """A narrow model so the tests stay fast; the architecture is the same as the presets'."""
    return UNet(**{**dict(base_channels=16, channel_mults=(1, 2, 2), attention_levels=(False, False, True)), **kw})


@pytest.mark.parametrize("size,channels,mults,batch", [
    (28, 1, (1, 2, 2), 1), (28, 1, (1, 2, 2), 5), (32, 3, (1, 2, 2, 2), 2), (64, 3, (1, 2, 2, 2), 3)])
@pytest.mark.parametrize("num_classes", [None, 10])
def test_output_shape(size, channels, mults, batch, num_classes):
    model = _tiny(in_channels=channels, channel_mults=mults, attention_levels=(False,) * (len(mults) - 1) + (True,),
                  num_classes=num_classes)
    x = torch.randn(batch, channels, size, size)
    t = torch.randint(0, 1000, (batch,))
    y = torch.randint(0, 10, (batch,)) if num_classes else None
    with torch.no_grad():
        out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_output_is_exactly_zero_at_init():
    model = _tiny(num_classes=10)
    x = torch.randn(4, 1, 28, 28)
    out = model(x, torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 9, 10]))
    assert torch.equal(out, torch.zeros_like(out))
    # ...and the gradient still reaches the output layer, so training can start.
    (out - x).pow(2).mean().backward()
    assert model.conv_out.weight.grad.abs().sum() > 0


def test_batch_independence_in_eval_mode():
    """In eval mode each sample's output depends only on that sample (GroupNorm normalises per sample)."""
    model = _randomise(_tiny(num_classes=10, dropout=0.1))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 28, 28, generator=gen)
    t = torch.randint(0, 1000, (6,), generator=gen)
    y = torch.randint(0, 11, (6,), generator=gen)
    with torch.no_grad():
        full = model(x, t, y)
        single = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(6)])
        shuffled = model(x.flip(0), t.flip(0), y.flip(0)).flip(0)
    assert full.abs().mean() > 1e-3                       # a non-trivial output
    # float32: batches of 6 and 1 (or reordered) may block the convolutions' sums of up to 9 * 64 = 576 terms
    # differently (it depends on the CPU), typically ~sqrt(576) eps32 = 3e-6 of the terms' scale per layer; the
    # outputs are ~0.4, so 1e-5 + 1e-4 |out| is ~200-1000 ulps of the output scale
    torch.testing.assert_close(single, full, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shuffled, full, rtol=1e-4, atol=1e-5)


def test_y_none_equals_null_label_and_labels_matter():
    model = _randomise(_tiny(num_classes=10))
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([5, 400, 900])
    with torch.no_grad():
        uncond = model(x, t, None)
        null = model(x, t, torch.full((3,), 10))
        cond = model(x, t, torch.tensor([1, 2, 3]))
    assert torch.equal(uncond, null)
    assert (cond - uncond).abs().max() > 1e-3


def test_timestep_changes_output_and_int_t_broadcasts():
    model = _randomise(_tiny())
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a = model(x, torch.tensor([7, 7]))
        b = model(x, 7)
        c = model(x, torch.tensor(7))
        d = model(x, torch.tensor([8, 8]))
    assert torch.equal(a, b) and torch.equal(a, c)
    assert (a - d).abs().max() > 1e-4


def test_scale_shift_false_runs_and_differs_in_size():
    a, b = _tiny(scale_shift=True), _tiny(scale_shift=False)
    assert n_params(a) > n_params(b)        # scale-shift projects the embedding to twice the channels
    out = b(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
    assert torch.equal(out, torch.zeros_like(out))


def test_config_rebuilds_the_same_architecture():
    model = UNet.from_preset("tiny", num_classes=10, dropout=0.1)
    config = json.loads(json.dumps(model.config))            # JSON-able
    rebuilt = UNet(**config)
    assert rebuilt.config == model.config
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == \
           [(k, v.shape) for k, v in model.state_dict().items()]
    assert model.num_classes == 10 and UNet.from_preset("tiny").num_classes is None


def test_preset_sizes():
    """Parameter counts: tiny is well under 1M; the DDPM CIFAR-10 model matches diffusers' count exactly."""
    assert n_params(UNet.from_preset("tiny")) < 1_000_000
    assert 2_000_000 < n_params(UNet.from_preset("small")) < 10_000_000
    ddpm = UNet.from_preset("ddpm-cifar10")
    assert ddpm.config["in_channels"] == 3
    # diffusers 0.42.1 UNet2DModel with the same configuration (block_out_channels (128, 256, 256, 256),
    # layers_per_block 2, attention in the second down and third up block) has 35,746,307 parameters;
    # test_matches_diffusers_parameter_count recomputes that number when diffusers is installed.
    assert n_params(ddpm) == 35_746_307


def test_matches_diffusers_parameter_count():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    assert n_params(UNet.from_preset("ddpm-cifar10")) == n_params(ref)


def test_n_params_counts_only_trainable():
    model = _tiny()
    total = n_params(model)
    model.conv_in.weight.requires_grad_(False)
    assert n_params(model) == total - model.conv_in.weight.numel()


def test_timestep_embedding_formula():
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, 8)                                 # half = 4: frequencies 1, 10^-4/3, ..., 1e-4
    freqs = torch.tensor([10000.0 ** (-i / 3) for i in range(4)], dtype=torch.float64)
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], dim=1)
    # float32 arguments t f_i up to 999 * 0.046 = 46 (f_0 = 1 is exact) carry f_i's error, ~3 ln(1e4) eps32/2
    # relative from the exp of a rounded exponent, and their own rounding: 46 * 30 * 6e-8 ~ 8e-5 absolute at most
    torch.testing.assert_close(emb.double(), expected, rtol=0, atol=2e-4)
    assert emb.shape == (4, 8) and emb.dtype == torch.float32
    odd = timestep_embedding(t, 9)
    assert odd.shape == (4, 9) and torch.equal(odd[:, -1], torch.zeros(4))
    # Distinct timesteps get distinct embeddings, and t = 0 is (0, ..., 0, 1, ..., 1).
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.cdist(emb, emb).fill_diagonal_(math.inf).min() > 0.1


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.randn(2, 1, 30, 30), torch.tensor([1, 2])), "divisible by 2 \\*\\* \\(levels - 1\\) = 4"),
    (lambda m: m(torch.randn(2, 3, 28, 28), torch.tensor([1, 2])), "x must have shape \\(B, 1, H, W\\)"),
    (lambda m: m(torch.randn(2, 1, 28), torch.tensor([1, 2])), "x must have shape"),
    (lambda m: m(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3])), "t must have shape \\(2,\\)"),
    (lambda m: m(torch.randn(2, 1, 28, 28), 1, torch.tensor([0, 11])), "y must contain labels in \\[0, 10\\]"),
    (lambda m: m(torch.randn(2, 1, 28, 28), 1, torch.tensor([-1, 0])), "y must contain labels"),
    (lambda m: m(torch.randn(2, 1, 28, 28), 1, torch.tensor([0])), "y must have shape \\(2,\\)"),
])
def test_bad_forward_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call(_tiny(num_classes=10))


def test_bad_forward_types():
    model = _tiny(num_classes=10)
    with pytest.raises(TypeError, match="y must be an integer tensor"):
        model(torch.randn(2, 1, 28, 28), 1, torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="unconditional"):
        _tiny()(torch.randn(2, 1, 28, 28), 1, torch.tensor([0, 1]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(base_channels=12, num_groups=8), "num_groups=8 must divide"),
    (dict(attention_levels=(False, True)), "attention_levels must be a tuple of 3 bools"),
    (dict(channel_mults=()), "channel_mults must be a non-empty tuple"),
    (dict(num_res_blocks=0), "num_res_blocks must be in"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(num_classes=0), "num_classes must be in"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="'tiny', 'small', 'ddpm-cifar10', 'latent'; got 'huge'"):
        UNet.from_preset("huge")


def test_trains_on_one_batch():
    """A few optimiser steps on eps_loss lower the loss on a fixed batch (the gradient flows everywhere)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)          # this test's own initialisation, without touching the global state
        model = _tiny(num_classes=3)
    sched = md.NoiseSchedule.linear(T=100)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, 1, 28, 28, generator=gen).clamp(-1, 1)
    y = torch.randint(0, 3, (8,), generator=gen)
    t = torch.randint(0, 100, (8,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss = md.eps_loss(model, x0, sched, y=y, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # zero prediction: the loss is a mean of 8 * 784 eps^2 (variance 2), 1 within 5.6 standard errors sqrt(2 / 6272)
    assert losses[0] == pytest.approx(1.0, abs=0.1)
    assert losses[-1] < 0.8 * losses[0]
