"""Latent diffusion: the trainer on an autoencoder's scaled latents, the LatentModel that load_model returns, and
sampling through it (generate, the CLI) equal to sampling the latents and decoding them by hand."""
import pytest
import torch

import minidiff as md
from minidiff.autoencoder import Autoencoder, decode_latents, encode_images, latent_scale, save_autoencoder
from minidiff.cli import main
from minidiff.evaluate import generate
from minidiff.latent import LatentModel, encode_dataset
from minidiff.train import TrainConfig, train


@pytest.fixture(scope="module")
def images():
    return md.data.load_fashion_mnist("train", download=False)[0][:64]


@pytest.fixture(scope="module")
def autoencoder_file(tmp_path_factory, images):
    """An untrained autoencoder (the pipeline does not care how good it is), with its latent scale measured on the
    images the run trains on."""
    torch.manual_seed(0)
    ae = Autoencoder(width=8, num_groups=4).eval()
    scale = latent_scale(encode_images(ae, images))
    return save_autoencoder(ae, tmp_path_factory.mktemp("ae") / "ae.safetensors", {"latent_scale": scale})


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory, autoencoder_file):
    out = tmp_path_factory.mktemp("run") / "latent"
    config = TrainConfig(dataset="fashion-mnist", model="latent", latent=str(autoencoder_file), conditional=True,
                         model_kwargs={"base_channels": 16}, limit=64, steps=3, batch_size=16, sample_every=0,
                         checkpoint_every=0, out=str(out), device="cpu", fast=False)
    train(config, progress=False)
    return out / "ckpt.pt"


def test_the_training_latents_have_unit_variance(autoencoder_file, images):
    z = encode_dataset(images, str(autoencoder_file))
    assert z.shape == (64, 4, 7, 7)
    assert float(z.double().std()) == pytest.approx(1.0, rel=1e-5)        # float32 latents, float64 statistics


def test_load_model_gives_a_latent_model_that_decodes(latent_run):
    model, sched, config = md.load_model(latent_run, device="cpu")
    assert isinstance(model, LatentModel) and model.num_classes == 10
    assert config["sample_shape"] == [4, 7, 7] == list(model.sample_shape)
    assert config["train"]["latent"].endswith("ae.safetensors")
    z = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(model.decode(z), decode_latents(model.autoencoder, z / model.scale))


def test_generate_samples_latents_then_decodes(latent_run):
    model, sched, _ = md.load_model(latent_run, device="cpu")
    x, labels, settings = generate(model, sched, n=4, steps=3, guidance_scale=2.0, batch_size=4, seed=5)
    assert x.shape == (4, 1, 28, 28) and labels.tolist() == [0, 1, 2, 3]
    z = md.ddim_sample(model, (4, 4, 7, 7), sched, steps=3, y=labels, guidance_scale=2.0,
                       generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x, model.decode(z))


def test_sample_command_writes_decoded_images(latent_run, tmp_path, capsys):
    out = tmp_path / "latent.png"
    assert main(["sample", "--ckpt", str(latent_run), "--n", "10", "--steps", "2", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    from PIL import Image

    assert Image.open(out).size[0] >= 10 * 28                     # one column per class, 28 px images


def test_latent_config_is_checked():
    with pytest.raises(ValueError, match="needs an image dataset"):
        TrainConfig(dataset="moons", model="mlp", latent="autoencoder")
    with pytest.raises(ValueError, match="no superres"):
        TrainConfig(latent="autoencoder", superres=2)
    with pytest.raises(TypeError, match="latent must be"):
        TrainConfig(latent=3)
    assert TrainConfig().latent is None and "latent" in TrainConfig().to_dict()


# ------------------------------------------------------------------------------------------ text prompts
@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory, autoencoder_file):
    out = tmp_path_factory.mktemp("run") / "prompts"
    config = TrainConfig(dataset="fashion-mnist", model="latent", latent=str(autoencoder_file), conditional=True,
                         prompts=True, model_kwargs={"base_channels": 32}, limit=64, steps=3, batch_size=16,
                         sample_every=0, checkpoint_every=0, out=str(out), device="cpu", fast=False)
    train(config, progress=False)
    return out / "ckpt.pt"


def test_a_prompt_run_learns_a_table_of_its_captions(prompt_run, images):
    from minidiff.captions import caption_labels
    from minidiff.text import TextConditionedUNet

    model, sched, config = md.load_model(prompt_run, device="cpu")
    assert isinstance(model, LatentModel) and isinstance(model.model, TextConditionedUNet)
    labels = md.data.load_fashion_mnist("train", download=False)[1][:64]
    _, table = caption_labels(images, labels, generator=torch.Generator().manual_seed(0))
    assert model.model.prompts == table and model.num_classes == len(table)


def test_evaluate_prompts_measures_class_and_attributes(prompt_run):
    from minidiff.evaluate import evaluate_prompts

    model, sched, _ = md.load_model(prompt_run, device="cpu")
    out = evaluate_prompts(model, sched, ["a dark coat", "a light wide sandal"], n_per_prompt=2, guidance_scale=2.0,
                           steps=2)
    assert out["n"] == 4 and 0 <= out["class_agreement"] <= 1
    assert out["attributes"]["brightness"]["asked"] == 4 and out["attributes"]["width"]["asked"] == 2
    assert out["attributes"]["texture"]["asked"] == 0 and out["attributes"]["texture"]["agreement"] is None
    assert out["attributes"]["brightness"]["words"]["dark"]["asked"] == 2          # "a dark coat", twice
    shares = out["word_shares"]                                  # over all four samples: fractions that add up
    assert all(0 <= v <= 1 for pair in shares.values() for v in pair.values())
    assert all(sum(pair.values()) <= 1 for pair in shares.values())


def test_sample_command_takes_a_prompt(prompt_run, latent_run, tmp_path, capsys):
    out = tmp_path / "boots.png"
    argv = ["sample", "--ckpt", str(prompt_run), "--n", "4", "--steps", "2", "--device", "cpu", "--quiet"]
    assert main([*argv, "--prompt", "a dark ankle boot", "--negative-prompt", "a light ankle boot",
                 "--guidance", "3", "--out", str(out)]) == 0
    assert out.is_file()
    assert main([*argv, "--prompt", "a dark hat", "--out", str(out)]) == 2
    assert "is not a caption of the form" in capsys.readouterr().err
    assert main([*argv, "--label", "Bag", "--out", str(out)]) == 2
    assert "give this text-conditional one a --prompt" in capsys.readouterr().err
    assert main(["sample", "--ckpt", str(latent_run), "--n", "2", "--steps", "2", "--device", "cpu", "--quiet",
                 "--prompt", "a coat", "--out", str(out)]) == 2
    assert "need a text-conditional model" in capsys.readouterr().err


def test_prompts_config_is_checked():
    with pytest.raises(ValueError, match="prompts=True needs dataset='fashion-mnist'"):
        TrainConfig(prompts=True)                                         # not conditional
    with pytest.raises(ValueError, match="prompts=True needs"):
        TrainConfig(dataset="mnist", prompts=True, conditional=True)
    with pytest.raises(TypeError, match="prompts must be a bool"):
        TrainConfig(prompts="yes", conditional=True)


def test_the_shipped_latent_model_samples_its_classes():
    """checkpoints/fashion-mnist-latent.pt: 40 class-balanced DDIM-20 samples at guidance 3 show their class.
    Its record says 0.987 at n = 1000 with DDIM-50; 40 samples at that rate have at most 4 misses with
    probability 0.9998 (binomial), so fewer than 36 of 40 means a much worse model."""
    from minidiff.classifier import load_classifier, predicted_labels

    model, sched, config = md.load_model(md.pretrained("fashion-mnist-latent.pt"), device="cpu")
    assert isinstance(model, LatentModel) and config["train"]["latent"] == "autoencoder"
    x, labels, _ = generate(model, sched, n=40, steps=20, guidance_scale=3.0, seed=0)
    assert x.shape == (40, 1, 28, 28)
    assert int((predicted_labels(load_classifier(), x) == labels).sum()) >= 36


def test_the_shipped_prompt_model_follows_prompts():
    """checkpoints/fashion-mnist-prompts.pt at guidance 3: the class of "a dark ankle boot" and "a light sandal",
    and dark below light. Its record: class agreement 0.935 and brightness agreement 0.978 at n = 540; here 24
    samples, of which at most 6 may miss their class (a rate of 0.065 misses more than 6 of 24 with probability
    0.0006); dark images below light ones by more than 0.1 in mean brightness (the class's terciles are
    about 0.1 apart)."""
    from minidiff.captions import brightness
    from minidiff.classifier import load_classifier, predicted_labels
    from minidiff.text import prompted

    model, sched, config = md.load_model(md.pretrained("fashion-mnist-prompts.pt"), device="cpu")
    prompts = ["a dark ankle boot", "a light ankle boot", "a dark sandal", "a light sandal"]
    x, idx, _ = generate(prompted(model, prompts), sched, n=24, steps=20, guidance_scale=3.0, seed=0)
    classes = torch.tensor([9, 9, 5, 5])[idx]
    assert int((predicted_labels(load_classifier(), x) != classes).sum()) <= 6
    b = brightness(x.clamp(-1, 1))
    for dark, light in ((0, 1), (2, 3)):
        assert float(b[idx == dark].mean()) + 0.1 < float(b[idx == light].mean())
