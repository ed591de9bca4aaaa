"""The `train` and `sample` commands end to end: a few steps of training, then a PNG from the checkpoint."""
import os
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from minidiff.checkpoint import load_model
from minidiff.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")


def read_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def fashion_mnist_available():
    try:
        from minidiff.data import load_fashion_mnist
        load_fashion_mnist("test", download=False)
        return True
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files not installed")
def test_train_then_sample_a_conditional_unet_on_fashion_mnist(tmp_path, capsys):
    out = tmp_path / "fmnist"
    assert main(["train", "--dataset", "fashion-mnist", "--model", "tiny", "--conditional", "--limit", "64",
                 "--steps", "3", "--batch-size", "8", "--T", "50", "--sample-every", "3", "--sample-n", "10",
                 "--sample-steps", "2", "--out", str(out), "--quiet"]) == 0
    assert "trained tiny on fashion-mnist for 3 steps" in capsys.readouterr().out
    model, sched, config = load_model(out / "ckpt.pt", device="cpu")
    assert model.num_classes == 10 and config["train"]["limit"] == 64 and config["sample_shape"] == [1, 28, 28]
    assert read_png(out / "samples" / "step_0000003.png").ndim == 3

    grid = tmp_path / "grid.png"
    assert main(["sample", "--ckpt", str(out / "ckpt.pt"), "--steps", "3", "--n", "20", "--guidance", "2",
                 "--seed", "1", "--device", "cpu", "--out", str(grid)]) == 0
    assert "wrote" in capsys.readouterr().out
    image = read_png(grid)
    # 20 samples, one column per class: 2 rows x 10 columns of 28 px tiles with 2 px padding
    assert image.shape[:2] == (2 * 30 + 2, 10 * 30 + 2)
    assert main(["sample", "--ckpt", str(out / "ckpt.pt"), "--sampler", "ddpm", "--label", "3", "--n", "4",
                 "--device", "cpu", "--out", str(tmp_path / "ddpm.png")]) == 0
    assert read_png(tmp_path / "ddpm.png").shape[:2] == (2 * 30 + 2, 2 * 30 + 2)

    # --resume continues the run from its own config; only the step budget changes here
    assert main(["train", "--out", str(out), "--resume", "--steps", "4", "--quiet"]) == 0
    assert load_model(out / "ckpt.pt", device="cpu")[2]["step"] == 4


def test_train_and_sample_a_2d_model_writes_a_scatter_plot(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["train", "--dataset", "swiss_roll", "--steps", "5", "--batch-size", "32", "--limit", "200",
                 "--T", "50", "--sample-every", "0", "--out", str(out), "--quiet"]) == 0
    png = tmp_path / "toy.png"
    assert main(["sample", "--ckpt", str(out / "ckpt.pt"), "--n", "300", "--steps", "5", "--eta", "1.0",
                 "--device", "cpu", "--out", str(png)]) == 0
    assert read_png(png).shape[:2] == (400, 400)      # a 4 x 4 inch figure at 100 dpi


def test_the_same_seed_draws_the_same_samples(tmp_path):
    out = tmp_path / "toy"
    # a linear schedule with T = 20 keeps alpha_bar_T near 0.8, so even an untrained model's samples stay on the plot
    assert main(["train", "--dataset", "moons", "--steps", "2", "--batch-size", "32", "--limit", "64", "--T", "20",
                 "--schedule", "linear", "--sample-every", "0", "--out", str(out), "--quiet"]) == 0
    args = ["sample", "--ckpt", str(out / "ckpt.pt"), "--n", "50", "--steps", "4", "--device", "cpu"]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert main([*args, "--seed", seed, "--out", str(tmp_path / f"{name}.png")]) == 0
    assert np.array_equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "b.png"))
    assert not np.array_equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "c.png"))


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "moons", "--steps", "0"], "steps must be in [1, inf], got 0"),
    (["train", "--dataset", "moons", "--conditional"], "conditional=True needs a labelled image dataset"),
    (["train", "--dataset", "fashion-mnist", "--model", "mlp"], "model must be 'mlp' for a 2D toy dataset"),
    (["train", "--dataset", "moons", "--resume"], "does not exist"),
    (["sample", "--ckpt", "missing.pt"], "does not exist"),
])
def test_bad_arguments_give_a_one_line_error(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("minidiff ") and message in err


def test_sample_rejects_options_the_model_cannot_use(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["train", "--dataset", "moons", "--steps", "1", "--batch-size", "32", "--limit", "64", "--T", "20",
                 "--sample-every", "0", "--out", str(out), "--quiet"]) == 0
    ckpt = str(out / "ckpt.pt")
    assert main(["sample", "--ckpt", ckpt, "--label", "1", "--out", str(tmp_path / "x.png")]) == 1
    assert "need a class-conditional model" in capsys.readouterr().err
    assert main(["sample", "--ckpt", ckpt, "--sampler", "ddpm", "--steps", "5", "--out", str(tmp_path / "x.png")]) == 1
    assert "--steps and --eta apply to --sampler ddim only" in capsys.readouterr().err
    assert main(["sample", "--ckpt", ckpt, "--out", str(tmp_path / "x.jpg")]) == 1
    assert "must end in .png" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


def test_help_runs_as_a_module():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, words in (("train", ["--dataset", "--resume", "--limit", "torchrun"]),
                           ("sample", ["--ckpt", "--sampler", "--guidance", "--label"])):
        proc = subprocess.run([sys.executable, "-m", "minidiff", command, "--help"], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        for word in words:
            assert word in proc.stdout


def test_export_command_writes_a_smaller_file_that_loads(tmp_path, capsys):
    src = os.path.join(os.path.dirname(__file__), "..", "checkpoints", "toy-2d.pt")
    out = tmp_path / "toy-export.pt"
    assert main(["export", "--ckpt", src, "--out", str(out)]) == 0
    assert "no optimizer state" in capsys.readouterr().out
    assert out.stat().st_size < os.path.getsize(src)
    model, _, saved = load_model(out, device="cpu")
    assert saved["sample_shape"] == [2]
    assert main(["export", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    half = tmp_path / "toy-ema16.pt"
    assert main(["export", "--ckpt", src, "--out", str(half), "--weights", "ema", "--dtype", "float16"]) == 0
    assert "EMA weights (float16)" in capsys.readouterr().out
    assert half.stat().st_size < out.stat().st_size
