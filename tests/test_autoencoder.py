"""minidiff.autoencoder: shapes, the KL term against torch.distributions, the reparameterisation, the latent scale,
and the weights file (round trip, damaged file, bad config)."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from minidiff.autoencoder import (Autoencoder, autoencoder_loss, decode_latents, encode_images, kl_to_standard_normal,
                                  latent_scale, load_autoencoder, save_autoencoder)
from minidiff.checkpoint import CheckpointError


def tiny(**kw):
    torch.manual_seed(0)
    return Autoencoder(width=8, num_groups=4, **kw)


@pytest.mark.parametrize("c", [1, 4])
def test_shapes(c):
    model = tiny(latent_channels=c)
    x = torch.randn(3, 1, 28, 28)
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (3, c, 7, 7) == (3, *model.latent_shape)
    assert model.decode(mean).shape == (3, 1, 28, 28)
    x_hat, m2, _ = model(x)
    assert x_hat.shape == x.shape and torch.equal(m2, mean)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(5, 4, 7, 7, generator=g, dtype=torch.float64), torch.randn(5, 4, 7, 7, generator=g,
                                                                                           dtype=torch.float64)
    want = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(torch.zeros_like(mean), torch.ones_like(mean)))
    torch.testing.assert_close(kl_to_standard_normal(mean, logvar), want, rtol=1e-12, atol=1e-12)
    assert torch.equal(kl_to_standard_normal(torch.zeros(3), torch.zeros(3)), torch.zeros(3))   # KL(N(0,1)||N(0,1))
    assert bool((kl_to_standard_normal(mean, logvar) >= 0).all())


def test_loss_is_reconstruction_plus_weighted_kl_and_samples_the_posterior():
    model = tiny()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    loss, rec, kl = autoencoder_loss(model, x, kl_weight=0.1, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss, rec + 0.1 * kl)
    mean, logvar = model.encode(x)
    torch.testing.assert_close(kl, kl_to_standard_normal(mean, logvar).mean())
    # the reconstruction is of z = mean + exp(logvar / 2) noise, with the generator's noise
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    want = torch.nn.functional.mse_loss(model.decode(mean + (0.5 * logvar).exp() * noise), x)
    torch.testing.assert_close(rec, want)
    loss.backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters())


def close(got, want):
    """Float32 convolutions blocked differently per batch size: a few roundings of sums relative to the scale."""
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_encode_and_decode_in_batches_equal_one_call():
    model = tiny().eval()
    x = torch.randn(7, 1, 28, 28)
    z = encode_images(model, x, batch_size=3)
    with torch.no_grad():
        close(z, model.encode(x)[0])
        close(decode_latents(model, z, batch_size=2), model.decode(z))


def test_latent_scale_is_one_over_the_std():
    z = 3.0 * torch.randn(20000, 4, 7, 7, generator=torch.Generator().manual_seed(0))
    scale = latent_scale(z)
    assert scale == pytest.approx(1 / float(z.double().std()), rel=1e-12)
    # 980,000 draws: the sample std is within a few parts in 1e3 of 3
    assert abs(scale * 3 - 1) < 5 / math.sqrt(2 * z.numel())
    assert float((z.double() * scale).std()) == pytest.approx(1.0, rel=1e-9)


def test_weights_round_trip(tmp_path):
    model = tiny(latent_channels=2).eval()
    path = save_autoencoder(model, tmp_path / "ae.safetensors", {"latent_scale": 0.75, "test_mse": 0.01})
    loaded, scale = load_autoencoder(path)
    assert scale == 0.75 and loaded.config == model.config and not loaded.training
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])
    assert (tmp_path / "ae.json").is_file()


def test_damaged_or_missing_weights_are_refused(tmp_path):
    path = save_autoencoder(tiny(), tmp_path / "ae.safetensors", {"latent_scale": 1.0})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a usable autoencoder weights file"):
        load_autoencoder(path)
    no_scale = save_autoencoder(tiny(), tmp_path / "noscale.safetensors")
    with pytest.raises(CheckpointError, match="latent_scale"):
        load_autoencoder(no_scale)
    with pytest.raises(FileNotFoundError, match="train-autoencoder"):
        load_autoencoder(tmp_path / "absent.safetensors")


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="latent_channels"):
        Autoencoder(latent_channels=0)
    with pytest.raises(ValueError, match="num_groups must divide width"):
        Autoencoder(width=10, num_groups=4)
    with pytest.raises(TypeError, match="width"):
        Autoencoder(width=3.5)


def test_train_autoencoder_command_end_to_end(tmp_path, capsys):
    """The committed command at a tiny size: it trains, measures on the test set, and writes a loadable file
    whose record holds the command that made it; a reconstruction of a held-out image beats predicting zero."""
    import json

    from minidiff.cli import main
    from minidiff.data import load_fashion_mnist

    out = tmp_path / "ae.safetensors"
    argv = ["train-autoencoder", "--epochs", "1", "--limit", "512", "--batch-size", "64", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"].startswith("python -m minidiff train-autoencoder --epochs 1 --latent-channels 4")
    assert record["limit"] == 512 and record["config"]["latent_channels"] == 4
    model, scale = load_autoencoder(out)
    assert scale == record["latent_scale"] > 0
    x = load_fashion_mnist("test", download=False)[0][:256]
    x_hat = decode_latents(model, encode_images(model, x))
    assert float(torch.nn.functional.mse_loss(x_hat, x)) < float(x.square().mean())      # better than all zeros
    assert main(["train-autoencoder", "--out", str(tmp_path / "ae.pt")]) == 2
    assert "--out must end in .safetensors" in capsys.readouterr().err


def test_the_shipped_autoencoder_reproduces_its_record():
    """checkpoints/autoencoder.safetensors: its JSON's test MSE and PSNR are recomputed on the 10,000 test images,
    its latent scale on the first 10,000 training images (float32 convolutions: to about 1e-4 relative)."""
    import json

    from minidiff import pretrained
    from minidiff.data import load_fashion_mnist
    from minidiff.metrics import psnr

    model, scale = load_autoencoder()
    record = json.loads(pretrained("autoencoder.safetensors").with_suffix(".json").read_text())
    assert scale == record["latent_scale"] and model.config == record["config"]
    x_test = load_fashion_mnist("test", download=False)[0]
    x_hat = decode_latents(model, encode_images(model, x_test))
    assert float(torch.nn.functional.mse_loss(x_hat, x_test)) == pytest.approx(record["test_mse"], abs=1e-5)
    assert float(psnr(x_hat.clamp(-1, 1), x_test).mean()) == pytest.approx(record["test_psnr"], abs=0.01)
    x_train = load_fashion_mnist("train", download=False)[0][:10000]
    assert latent_scale(encode_images(model, x_train)) == pytest.approx(scale, abs=1e-5)
    assert record["test_mse"] < 0.02          # a 28.8 dB reconstruction: the garments keep their shapes
