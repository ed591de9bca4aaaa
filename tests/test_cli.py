"""The command line end to end: a few steps of training, then a PNG from the checkpoint; and the behaviour of
a finished tool: version, program name, progress bars, shipped models and class names, one-line errors."""
import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

import minidiff
from minidiff.checkpoint import load_model
from minidiff.cli import build_parser, checkpoint_path, main, parse_label, prog_name, refuse_shipped, shipped_models
from minidiff.data import FASHION_MNIST_CLASSES

REPO = os.path.join(os.path.dirname(__file__), "..")
SHIPPED = importlib.import_module("minidiff.pretrained")     # the module, whatever the package re-exports


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
    assert load_model(out / "ckpt.pt", device="cpu")[2]["train"]["lr"] == 1e-3      # the 2D MLP's default
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
    (["sample", "--ckpt", "missing.pt"], "'missing.pt' does not exist as a file and is not a shipped model"),
    (["sample", "--ckpt", "toy-2d", "--label", "Bag"], "need a class-conditional model"),
    (["sample", "--ckpt", "fashion-mnist-cond", "--label", "zebra"], "a class name (T-shirt/top, Trouser"),
    (["sample", "--ckpt", "toy-2d", "--sampler", "ddpm", "--eta", "1"], "--eta applies to --sampler ddim only"),
    (["evaluate", "--ckpt", "toy-2d", "--sampler", "ddpm", "--eta", "1"], "--eta applies to --sampler ddim only"),
    (["sample", "--ckpt", "toy-2d", "--sampler", "heun", "--eta", "0"], "--eta applies to --sampler ddim only"),
    (["sample", "--ckpt", "toy-2d", "--sampler", "euler", "--clip-x0", "1"], "--clip-x0 applies to --sampler ddim"),
    (["sample", "--ckpt", "toy-2d", "--sampler", "dpmpp_2m", "--steps", "0"], "steps must be"),
    (["sample", "--ckpt", "toy-2d", "--steps", "5000"], "5000"),     # found as sampling starts: no bar yet
])
def test_bad_arguments_give_a_one_line_error(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"minidiff {argv[0]}: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["sample", "--ckpt", "toy-2d", "--sampler", "plms"], "invalid choice: 'plms'"),
    (["sample", "--ckpt", "toy-2d", "--n", "many"], "argument --n: invalid int value: 'many'"),
    (["sample", "--ckpt", "toy-2d", "--device", "gpu7"], "'gpu7' is not a device"),
    (["train-classifier", "--device", "gpu7"], "'gpu7' is not a device"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
])
def test_usage_errors_are_one_line_with_exit_status_2(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("minidiff") and message in err and err.count("\n") == 1, err


def test_sample_rejects_options_the_model_cannot_use(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["train", "--dataset", "moons", "--steps", "1", "--batch-size", "32", "--limit", "64", "--T", "20",
                 "--sample-every", "0", "--out", str(out), "--quiet"]) == 0
    ckpt = str(out / "ckpt.pt")
    assert main(["sample", "--ckpt", ckpt, "--label", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "need a class-conditional model" in capsys.readouterr().err
    assert main(["sample", "--ckpt", ckpt, "--sampler", "ddpm", "--steps", "5", "--eta", "0",
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "--steps and --eta apply to --sampler ddim only" in capsys.readouterr().err
    assert main(["sample", "--ckpt", ckpt, "--out", str(tmp_path / "x.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


def test_help_runs_as_a_module_and_names_it():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, words in (("train", ["--dataset", "--resume", "--limit", "torchrun"]),
                           ("sample", ["--ckpt", "--sampler", "--guidance", "--label"])):
        proc = subprocess.run([sys.executable, "-m", "minidiff", command, "--help"], capture_output=True, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        for word in words:
            assert word in proc.stdout
        assert proc.stdout.startswith(f"usage: python -m minidiff {command} ")
        assert f"\n  python -m minidiff {command} --" in proc.stdout           # the examples use the same name
    proc = subprocess.run([sys.executable, "-m", "minidiff", "--version"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"minidiff {minidiff.__version__}\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"minidiff {minidiff.__version__}\n"


def test_the_program_is_named_as_it_was_started(monkeypatch, capsys):
    assert prog_name("/usr/local/bin/minidiff") == "minidiff"
    assert prog_name("/site-packages/minidiff/__main__.py") == "python -m minidiff"
    assert prog_name("/site-packages/pytest/__main__.py") == "minidiff"         # another package's -m
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/minidiff"])
    for command in ("train", "sample", "evaluate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = capsys.readouterr().out
        assert help_text.startswith(f"usage: minidiff {command} ") and "python -m minidiff" not in help_text
        assert f"\n  minidiff {command} --" in help_text
    assert main(["sample", "--ckpt", "missing.pt"]) == 2
    assert capsys.readouterr().err.startswith("minidiff sample: error: ")
    monkeypatch.setattr(sys, "argv", ["/site-packages/minidiff/__main__.py"])
    assert build_parser().format_usage().startswith("usage: python -m minidiff ")


def test_export_command_writes_a_smaller_file_that_loads(tmp_path, capsys):
    src = os.path.join(os.path.dirname(__file__), "..", "checkpoints", "toy-2d.pt")
    out = tmp_path / "toy-export.pt"
    assert main(["export", "--ckpt", src, "--out", str(out)]) == 0
    assert "no optimizer state" in capsys.readouterr().out
    assert out.stat().st_size < os.path.getsize(src)
    model, _, saved = load_model(out, device="cpu")
    assert saved["sample_shape"] == [2]
    assert main(["export", "--ckpt", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    half = tmp_path / "toy-ema16.pt"
    assert main(["export", "--ckpt", src, "--out", str(half), "--weights", "ema", "--dtype", "float16"]) == 0
    assert "EMA weights (float16)" in capsys.readouterr().out
    assert half.stat().st_size < out.stat().st_size


# ------------------------------------------------------------------------------------------ progress bars
@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m"])
def test_sample_runs_the_ode_solvers_of_chapter_11(tmp_path, capsys, solver):
    """`sample --sampler` runs minidiff.solver_sample: the same image as the Python call with the same seed."""
    import minidiff as md
    from minidiff.cli import ODE_SOLVERS
    from minidiff.plot import save_scatter_2d

    out = tmp_path / f"{solver}.png"
    assert main(["sample", "--ckpt", "toy-2d", "--sampler", solver, "--steps", "6", "--n", "300",
                 "--device", "cpu", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    calls = md.solvers.nfe(solver, 6)
    assert f"-6, {calls} calls" in captured.out and "6/6" in captured.err
    model, sched, _ = md.load_model(md.pretrained("toy-2d.pt"), device="cpu")
    x = md.solver_sample(model, (300, 2), sched, solver=solver, steps=6, generator=torch.Generator().manual_seed(0))
    ref = tmp_path / "ref.png"
    save_scatter_2d(x, str(ref), title=f"300 samples, {ODE_SOLVERS[solver]}-6, {calls} calls")
    assert np.array_equal(read_png(out), read_png(ref))


def test_sample_shows_a_progress_bar_unless_quiet_and_draws_the_same_samples(tmp_path, capsys):
    args = ["sample", "--ckpt", "toy-2d", "--n", "50", "--steps", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "bar.png")]) == 0
    err = capsys.readouterr().err
    assert "sample" in err and "4/4" in err
    assert main([*args, "--out", str(tmp_path / "quiet.png"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert np.array_equal(read_png(tmp_path / "bar.png"), read_png(tmp_path / "quiet.png"))


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files not installed")
def test_evaluate_shows_a_progress_bar_over_all_batches_unless_quiet(tmp_path, capsys):
    from minidiff.checkpoint import save_checkpoint

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = minidiff.UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, True), num_groups=4)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model=model, ema_model=model, step=0,
                           optimizer=torch.optim.AdamW(model.parameters()), sched=minidiff.NoiseSchedule.linear(T=50),
                           train_config={}, sample_shape=(1, 28, 28), rng=[], losses=[])
    args = ["evaluate", "--ckpt", str(ckpt), "--n", "20", "--steps", "2", "--batch-size", "8", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "bar.json")]) == 0
    assert "6/6" in capsys.readouterr().err                       # 3 batches of 2 DDIM steps
    assert main([*args, "--out", str(tmp_path / "quiet.json"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    bar, quiet = (json.loads((tmp_path / name).read_text()) for name in ("bar.json", "quiet.json"))
    assert bar["fd_cls"] == quiet["fd_cls"] and bar["fd_cls_floor"] == quiet["fd_cls_floor"]


# ------------------------------------------------------------------------------------------ --ckpt and --label
def test_ckpt_takes_a_shipped_model_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)                     # no file of that name here: the shipped one is found
    assert checkpoint_path("toy-2d") == checkpoint_path("toy-2d.pt") == SHIPPED.pretrained("toy-2d.pt")
    local = tmp_path / "toy-2d.pt"
    local.write_bytes(b"")
    assert checkpoint_path("toy-2d.pt").resolve() == local    # an existing file wins
    assert main(["export", "--ckpt", "toy-2d", "--out", str(tmp_path / "toy.pt"), "--weights", "ema"]) == 0
    assert load_model(tmp_path / "toy.pt", device="cpu")[2]["sample_shape"] == [2]
    capsys.readouterr()
    assert main(["sample", "--ckpt", "classifier", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    models = sorted(path.name for path in (Path(__file__).parents[1] / "checkpoints").glob("*.pt"))
    assert {"fashion-mnist-cond.pt", "toy-2d.pt"} <= set(models)
    assert "'classifier'" in err and f"({', '.join(models)};" in err       # every shipped model, and only those


@pytest.mark.parametrize("value, index", [
    ("Bag", 8), ("bag", 8), ("BAG", 8), ("sneaker", 7), ("T-shirt/top", 0), ("t-shirt", 0), ("Shirt", 6),
    ("ank", 9), ("Ankle boot", 9), ("7", 7), ("0", 0),
])
def test_labels_by_index_name_or_unique_prefix(value, index):
    assert parse_label(value, FASHION_MNIST_CLASSES, 10) == index


@pytest.mark.parametrize("value, words", [
    ("s", ["ambiguous", "Sandal, Shirt, Sneaker"]),
    ("zebra", ["'zebra'", "[0, 9]", "T-shirt/top, Trouser, Pullover", "Ankle boot"]),
    ("10", ["'10'", "[0, 9]"]),
    ("-1", ["'-1'", "[0, 9]"]),
])
def test_unknown_labels_name_the_allowed_ones(value, words):
    with pytest.raises(ValueError) as info:
        parse_label(value, FASHION_MNIST_CLASSES, 10)
    for word in words:
        assert word in str(info.value)


def test_sample_draws_the_class_named_by_label(tmp_path, monkeypatch, capsys):
    import minidiff.cli as cli

    seen = []
    real = cli.ddim_sample
    monkeypatch.setattr(cli, "ddim_sample", lambda *a, y=None, **kw: seen.append(y) or real(*a, y=y, **kw))
    assert main(["sample", "--ckpt", "fashion-mnist-cond", "--label", "bag", "--n", "2", "--steps", "1",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "bags.png")]) == 0
    assert seen[0].tolist() == [FASHION_MNIST_CLASSES.index("Bag")] * 2
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = capsys.readouterr().out
    assert "--label Bag" in help_text and "--label 7" not in help_text


# ------------------------------------------------------------------------------------------ devices, shipped files
def fake_train_classifier(calls):
    """A stand-in for evaluate.train_classifier that records its arguments and trains nothing."""
    from minidiff.evaluate import Classifier

    def train_classifier(**kwargs):
        calls.append(kwargs)
        return Classifier(width=2, feature_dim=4), {"test_accuracy": 0.5}
    return train_classifier


def test_train_classifier_picks_the_device_and_writes_under_runs(tmp_path, monkeypatch, capsys):
    import minidiff.evaluate
    import minidiff.runtime

    calls = []
    monkeypatch.setattr(minidiff.evaluate, "train_classifier", fake_train_classifier(calls))
    monkeypatch.setattr(minidiff.runtime, "default_device", lambda: torch.device("cuda", 3))
    monkeypatch.chdir(tmp_path)
    assert main(["train-classifier", "--epochs", "1"]) == 0
    assert calls[0]["device"] == torch.device("cuda", 3)
    assert (tmp_path / "runs" / "classifier.safetensors").is_file()
    record = json.loads((tmp_path / "runs" / "classifier.json").read_text())
    assert "--device cuda:3 --out runs/classifier.safetensors" in record["command"]
    assert "wrote runs/classifier.safetensors" in capsys.readouterr().out


def test_no_default_writes_into_the_shipped_checkpoints_folder():
    parser = build_parser()
    defaults = {"sample": ["--ckpt", "x"], "evaluate": ["--ckpt", "x"], "train-classifier": []}
    for command, required in defaults.items():
        out = parser.parse_args([command, *required]).out
        assert out is None or not os.path.abspath(out).startswith(str(SHIPPED.CHECKPOINTS)), (command, out)
    assert parser.parse_args(["train-classifier"]).out == "runs/classifier.safetensors"
    with pytest.raises(FileExistsError, match="pass --force"):
        refuse_shipped(SHIPPED.CHECKPOINTS / "classifier.safetensors", force=False)
    refuse_shipped(SHIPPED.CHECKPOINTS / "classifier.safetensors", force=True)


def test_writing_over_a_shipped_file_needs_force(tmp_path, monkeypatch, capsys):
    import minidiff.evaluate

    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    (shipped / "classifier.safetensors").write_bytes(b"pinned")
    (shipped / "toy-2d.pt").write_bytes(b"pinned")
    monkeypatch.setattr(SHIPPED, "CHECKPOINTS", shipped)
    calls = []
    monkeypatch.setattr(minidiff.evaluate, "train_classifier", fake_train_classifier(calls))
    out = str(shipped / "classifier.safetensors")
    for argv in (["train-classifier", "--out", out, "--device", "cpu"],
                 ["export", "--ckpt", "toy-2d", "--out", str(shipped / "toy-2d.pt")]):
        assert main(argv) == 2
        assert "would overwrite a shipped file" in capsys.readouterr().err
    assert not calls and (shipped / "toy-2d.pt").read_bytes() == (shipped / "classifier.safetensors").read_bytes()
    assert main(["train-classifier", "--out", out, "--device", "cpu", "--force"]) == 0
    assert len(calls) == 1 and (shipped / "classifier.safetensors").read_bytes() != b"pinned"


# ------------------------------------------------------------------------------------------ help and defaults
def test_bf16_help_states_the_rule_the_trainer_applies(monkeypatch, capsys):
    from minidiff.train import TrainConfig, _use_bf16

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "on with a CUDA GPU of compute capability >= 8" in " ".join(capsys.readouterr().out.split())
    config, cuda = TrainConfig(), torch.device("cuda", 0)
    for capability, on in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device, c=capability: c)
        assert _use_bf16(config, cuda) is on


def test_train_help_lists_the_options_resume_may_change(capsys):
    from minidiff.train import RESUME_MAY_CHANGE

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    resume = " ".join(capsys.readouterr().out.split()).split("--resume continue")[1].split("--log-every K")[0]
    for name in RESUME_MAY_CHANGE:
        assert "--" + name.replace("_", "-") in resume.replace("- ", "-")


def test_the_default_learning_rate_depends_on_the_model(tmp_path, capsys):
    from minidiff.train import TrainConfig

    assert TrainConfig(dataset="8gaussians", model="mlp").lr == 1e-3
    assert TrainConfig().lr == 2e-4 and TrainConfig(model="small").lr == 2e-4
    assert TrainConfig(dataset="moons", model="mlp", lr=5e-4).lr == 5e-4
    config = TrainConfig(dataset="moons", model="mlp")
    assert TrainConfig(**config.to_dict()) == config
    # a run started with another lr resumes with it: the checkpoint's config holds the resolved value
    out = str(tmp_path / "toy")
    common = ["--batch-size", "32", "--limit", "64", "--T", "20", "--sample-every", "0", "--out", out, "--quiet"]
    assert main(["train", "--dataset", "moons", "--steps", "1", "--lr", "2e-4", *common]) == 0
    assert main(["train", "--resume", "--steps", "2", "--out", out, "--quiet"]) == 0
    assert load_model(os.path.join(out, "ckpt.pt"), device="cpu")[2]["train"]["lr"] == 2e-4
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: 0.001 for the 2D MLP, 0.0002 for U-Nets)" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------------------------------------------------ file-system failures
def _cli(*args, cwd=None):
    """The command in a real subprocess: exit status and stderr, as a user meets them."""
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run([sys.executable, "-m", "minidiff", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def _one_line_error(code, err, verb, *phrases):
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"python -m minidiff {verb}: error: "), err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


def test_out_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    code, out, err = _cli("sample", "--ckpt", "toy-2d", "--out", str(tmp_path / "file" / "x.png"), "--quiet")
    _one_line_error(code, err, "sample", "is a file, not a folder")
    assert "wrote" not in out
    code, _, err = _cli("train", "--dataset", "moons", "--steps", "2", "--out", str(tmp_path / "file" / "run"))
    _one_line_error(code, err, "train", "cannot write to the output folder", "is a file, not a folder")
    code, _, err = _cli("evaluate", "--ckpt", "toy-2d", "--n", "10", "--out", str(tmp_path))
    _one_line_error(code, err, "evaluate", "is a folder")


def test_evaluate_on_a_2d_checkpoint_says_what_it_needs():
    code, _, err = _cli("evaluate", "--ckpt", "toy-2d", "--n", "10")
    _one_line_error(code, err, "evaluate", "needs a model of 28x28 grey images", "shape (2,)")


def test_sample_with_a_prompt_and_no_ckpt_uses_the_shipped_prompts_model(tmp_path):
    """... at its default guidance scale, 3 (the scale chapter 13 measures it at), where class models default to 1."""
    code, out, err = _cli("sample", "--prompt", "a dark ankle boot", "--n", "2", "--steps", "2",
                          "--out", str(tmp_path / "boots.png"), "--quiet")
    assert code == 0, err
    assert "guidance 3.0" in out
    code, _, err = _cli("sample", "--ckpt", "fashion-mnist-prompts", "--prompt", "a dark ankle boot", "--n", "2",
                        "--steps", "2", "--guidance", "3", "--out", str(tmp_path / "named.png"), "--quiet")
    assert code == 0, err
    assert np.array_equal(read_png(tmp_path / "boots.png"), read_png(tmp_path / "named.png"))
    code, _, err = _cli("sample", "--n", "2", "--out", str(tmp_path / "x.png"))
    _one_line_error(code, err, "sample", "--ckpt is required", "with --prompt it defaults to fashion-mnist-prompts")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not fashion_mnist_available(), reason="Fashion-MNIST files not installed")
def test_evaluate_help_lists_exactly_the_shipped_models_it_evaluates(tmp_path):
    """Each shipped model either appears in evaluate's --ckpt help and evaluates (a latent model's samples are
    decoded to images first), or is refused with a one-line reason that says where it is measured instead."""
    evaluate = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    help_text = next(a.help for a in evaluate._actions if "--ckpt" in a.option_strings)
    listed = set(re.findall(r"fashion-mnist-[a-z0-9]+|toy-2d", help_text))
    refusals = {"toy-2d": "needs a model of 28x28 grey images", "fashion-mnist-sr3": "super-resolution",
                "fashion-mnist-prompts": "benchmarks/prompts.py"}
    assert listed | set(refusals) == set(shipped_models()) and not listed & set(refusals)
    for name in sorted(listed):
        code, out, err = _cli("evaluate", "--ckpt", name, "--n", "20", "--steps", "2", "--quiet",
                              "--out", str(tmp_path / f"{name}.json"))
        assert code == 0, f"{name}: {err}"
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert result["n"] == 20 and math.isfinite(result["fd_cls"]) and 0 <= result["class_agreement"] <= 1
    for name, reason in refusals.items():
        code, _, err = _cli("evaluate", "--ckpt", name, "--n", "10")
        _one_line_error(code, err, "evaluate", reason)


def test_a_full_disk_is_reported_as_such_and_leaves_no_file(tmp_path):
    """A real full file system: a 256 kB tmpfs (needs root; skipped elsewhere). The checkpoint does not fit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code, _, err = _cli("train", "--dataset", "moons", "--steps", "2", "--T", "20", "--sample-every", "0",
                            "--out", str(disk / "run"), "--quiet")
        _one_line_error(code, err, "train", "no space left on device", "left as it was")
        assert not list((disk / "run").iterdir())                               # no .tmp, no ckpt.pt
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _holds_a_lock(pid: int) -> bool:
    """Whether process ``pid`` holds a flock (Linux's /proc/locks, read without taking any lock ourselves)."""
    with open("/proc/locks") as f:
        return any(line.split()[1] == "FLOCK" and line.split()[4] == str(pid) for line in f if len(line.split()) > 4)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_a_second_run_into_the_same_folder_is_refused_until_the_first_one_dies(tmp_path):
    """Two real processes: while one trains into --out, another is refused with a one-line error; once the
    first is killed (SIGKILL: no clean-up code runs) the folder is free again."""
    import time

    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "minidiff", "train", "--dataset", "moons", "--steps", "100000",
                              "--T", "20", "--sample-every", "0", "--out", str(out), "--quiet"],
                             env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not _holds_a_lock(first.pid):
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run never locked its folder"
            time.sleep(0.1)
        code, _, err = _cli("train", "--dataset", "moons", "--steps", "2", "--T", "20", "--out", str(out), "--quiet")
        _one_line_error(code, err, "train", "is in use by another run")
        assert first.poll() is None                                    # the first run was not disturbed
    finally:
        first.kill()
        first.wait()
    code, out_text, err = _cli("train", "--dataset", "moons", "--steps", "2", "--T", "20", "--sample-every", "0",
                               "--out", str(out), "--quiet")
    assert code == 0, err
    assert load_model(out / "ckpt.pt", device="cpu")[2]["step"] == 2
