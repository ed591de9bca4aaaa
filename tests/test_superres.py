"""Super-resolution (chapter 8): the resampling operators, ILVR with the exact oracle denoiser, SR3 conditioning."""
import pytest
import torch

import minidiff as md
from minidiff import superres as sr
from minidiff.train import TrainConfig
from tolerances import F32_EPS, F64_EPS

SCHED = md.NoiseSchedule.linear(T=1000)


def _images(n=16, size=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, size, size, generator=g, dtype=dtype) * 2 - 1)


# ------------------------------------------------------------------------------------------ operators
def test_downsample_is_the_block_mean_and_nearest_upsampling_is_its_right_inverse():
    x = _images(4, 8)
    low = sr.downsample(x, 4)                                                      # (4, 1, 2, 2)
    assert low.shape == (4, 1, 2, 2)
    block = x[:, :, 4:8, 0:4].mean(dim=(2, 3))                                      # bottom-left block
    torch.testing.assert_close(low[:, :, 1, 0], block, rtol=0, atol=16 * F64_EPS)   # a 16-term mean
    z = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    back = sr.downsample(sr.upsample(z, 3, "nearest"), 3)          # the mean of 9 copies: a 9-term sum, / 9
    assert bool(((back - z).abs() <= 10 * F64_EPS * z.abs()).all())


def test_low_pass_is_a_projection_that_keeps_the_low_resolution_image():
    x = _images(4, 8)
    p = sr.low_pass(x, 2)
    torch.testing.assert_close(sr.low_pass(p, 2), p, rtol=0, atol=4 * F64_EPS)      # phi(phi(x)) = phi(x)
    torch.testing.assert_close(sr.downsample(p, 2), sr.downsample(x, 2), rtol=0, atol=4 * F64_EPS)
    # orthogonal: the residual x - phi(x) is orthogonal to every low-pass image
    r = (x - p).flatten(1)
    q = sr.low_pass(_images(4, 8, seed=1), 2).flatten(1)
    assert (r * q).sum(1).abs().max() < 64 * 4 * F64_EPS                            # 64-term dot products of |.| <= 4


@pytest.mark.parametrize("mode", sr.UPSAMPLING)
def test_every_upsampling_reproduces_a_constant_image(mode):
    c = torch.full((2, 1, 7, 7), 0.3, dtype=torch.float64)
    out = sr.upsample(c, 4, mode)
    assert out.shape == (2, 1, 28, 28)
    torch.testing.assert_close(out, torch.full_like(out, 0.3), rtol=0, atol=16 * F64_EPS)  # weights sum to 1


# ------------------------------------------------------------------------------------------ ILVR
def test_ilvr_output_downsamples_to_the_low_resolution_image_at_the_last_step():
    data = _images(16, 8, dtype=torch.float32)
    oracle = md.OracleDenoiser(data, SCHED)
    lowres = sr.downsample(_images(3, 8, seed=5, dtype=torch.float32), 4)          # not from the data set
    out = md.ilvr(oracle, lowres, SCHED, factor=4, steps=20, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 8, 8)
    # x_0 = x' - phi(x') + up(lowres) exactly; its block means are lowres up to float32 rounding of values ~ 3
    err = (sr.downsample(out, 4) - lowres).abs().max()
    assert err < 8 * 16 * F32_EPS * 4, err


def test_ilvr_with_the_oracle_finds_the_training_image_the_low_resolution_image_came_from():
    # Images whose energy lies mostly in the low frequencies, as natural images' does: block means in [-1, 1]
    # plus a zero-mean detail of amplitude 0.3. The only data point whose block means equal lowres is image k,
    # so the conditional distribution is a point mass on it, and ILVR's samples must land on it: the oracle's
    # x0_hat snaps to one data point once the noise is small, so "on it" means up to float64 rounding.
    # (With detail as strong as the block means, ILVR's early steps can commit to another image's detail:
    # the low frequencies then carry too little of the evidence.)
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(16, 1, 2, 2, generator=g, dtype=torch.float64) * 2 - 1               # (16, 1, 2, 2)
    detail = torch.rand(16, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    data = sr.upsample(blocks, 2) + 0.3 * (detail - sr.low_pass(detail, 2))                  # (16, 1, 4, 4)
    oracle = md.OracleDenoiser(data, SCHED)
    out = md.ilvr(oracle, sr.downsample(data, 2), SCHED, factor=2, steps=50,
                  generator=torch.Generator().manual_seed(0))
    d = torch.cdist(out.flatten(1), data.flatten(1))                                         # (16, 16)
    assert torch.equal(d.argmin(1), torch.arange(16))
    assert d.min(1).values.max() < 1e-9                        # vs a typical distance between images of ~3


def test_ilvr_at_factor_one_returns_the_image_itself():
    x = _images(2, 4, dtype=torch.float32)
    oracle = md.OracleDenoiser(_images(8, 4, dtype=torch.float32), SCHED)
    out = md.ilvr(oracle, x, SCHED, factor=1, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x)                                      # phi is the identity: x_0 = x' - x' + x


def test_ilvr_is_reproducible_with_a_generator():
    oracle = md.OracleDenoiser(_images(8, 4, dtype=torch.float32), SCHED)
    lowres = sr.downsample(_images(2, 4, seed=3, dtype=torch.float32), 2)
    a, b = (md.ilvr(oracle, lowres, SCHED, factor=2, steps=10, generator=torch.Generator().manual_seed(1))
            for _ in range(2))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ SR3
class EchoCondition(torch.nn.Module):
    """A 'network' that returns its second input channel: what LowResConditioned concatenated."""

    def forward(self, x, t, y=None):
        return x[:, 1:2]


def test_low_res_conditioned_concatenates_the_bicubic_upsampled_image():
    lowres = _images(3, 4, dtype=torch.float32)
    model = md.LowResConditioned(EchoCondition(), lowres, 2)
    x_t = torch.randn(3, 1, 8, 8)
    out = model(x_t, torch.zeros(3, dtype=torch.long))
    assert torch.equal(out, sr.upsample(lowres, 2, "bicubic"))
    with pytest.raises(ValueError, match="batch size and image size"):
        model(torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))


def test_sr3_training_run_gives_a_checkpoint_that_super_resolves(tmp_path):
    x = _images(64, 8, dtype=torch.float32)
    config = TrainConfig(dataset="fashion-mnist", model="tiny", superres=4, steps=3, batch_size=16, log_every=1,
                         sample_every=3, sample_n=4, checkpoint_every=0, out=str(tmp_path / "run"),
                         model_kwargs=dict(base_channels=8, channel_mults=(1, 2), attention_levels=(False, False),
                                           num_groups=4))
    result = md.train(config, data=(x, None), progress=False)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert (tmp_path / "run" / "samples" / "step_0000003.png").exists()
    net, sched, cfg = md.load_model(result.checkpoint)
    assert cfg["train"]["superres"] == 4 and net.config["in_channels"] == 2 and net.config["out_channels"] == 1
    out = md.sr3_sample(net, sr.downsample(x[:2], 4), sched, factor=4, steps=4,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 8, 8) and bool(torch.isfinite(out).all())


# ------------------------------------------------------------------------------------------ bad input
def test_bad_arguments_get_clear_errors():
    x = _images(2, 8, dtype=torch.float32)
    oracle = md.OracleDenoiser(x, SCHED)
    with pytest.raises(ValueError, match="factor=3 must divide the image size"):
        sr.downsample(x, 3)
    with pytest.raises(ValueError, match=r"batch of images \(B, C, H, W\)"):
        sr.downsample(x[:, 0], 2)
    with pytest.raises(ValueError, match=r"factor must be in \[1, inf\], got 0"):
        sr.upsample(x, 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        sr.upsample(x, 2, "lanczos")
    with pytest.raises(ValueError, match="contains NaN"):
        md.ilvr(oracle, torch.full((2, 1, 4, 4), float("nan")), SCHED, factor=2)
    with pytest.raises(ValueError, match="steps must be"):
        md.ilvr(oracle, sr.downsample(x, 2), SCHED, factor=2, steps=0)
    with pytest.raises(ValueError, match=r"superres must be in \[2, inf\], got 1"):
        TrainConfig(superres=1)
    with pytest.raises(ValueError, match="unconditional model"):
        TrainConfig(superres=4, conditional=True)
    with pytest.raises(ValueError, match="superres=3 must divide the image size"):
        md.train(TrainConfig(superres=3, steps=1, batch_size=2, out="unused"), data=(x, None), progress=False)


def test_the_cli_refuses_to_sample_an_sr3_checkpoint_plainly(tmp_path, capsys):
    from minidiff.cli import main
    x = _images(16, 8, dtype=torch.float32)
    config = TrainConfig(dataset="fashion-mnist", model="tiny", superres=2, steps=1, batch_size=8, sample_every=0,
                         checkpoint_every=0, out=str(tmp_path / "run"),
                         model_kwargs=dict(base_channels=8, channel_mults=(1,), attention_levels=(False,),
                                           num_groups=4))
    md.train(config, data=(x, None), progress=False)
    code = main(["sample", "--ckpt", str(tmp_path / "run" / "ckpt.pt"), "--out", str(tmp_path / "g.png")])
    assert code != 0
    assert "SR3 super-resolution model" in capsys.readouterr().err
