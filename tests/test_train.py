"""The trainer: it learns, it resumes exactly, it stops on NaN, and its config rejects bad values.

Runs are tiny (an MLP on 2D data, a few-channel U-Net on 8x8 images) and single-threaded: small models are
fastest on one thread, and the CI machine's two cores are shared.
"""
import dataclasses
import importlib

import pytest
import torch

import minidiff as md
from minidiff.checkpoint import load_model
from minidiff.data import toy_2d
from minidiff.mlp import MLPDenoiser
from minidiff.train import CHECKPOINT_NAME, TrainConfig, lr_at, make_optimizer, train


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_config(tmp_path, **kw):
    base = dict(dataset="8gaussians", model="mlp", model_kwargs={"hidden": 64, "num_layers": 2}, T=200,
                batch_size=64, lr=2e-3, warmup=10, steps=40, sample_every=0, checkpoint_every=0, log_every=5,
                out=str(tmp_path / "run"), seed=3)
    return TrainConfig(**{**base, **kw})


def test_loss_falls_on_2d_data(tmp_path):
    config = toy_config(tmp_path, steps=300, batch_size=256, lr=1e-3, warmup=20,
                        model_kwargs={}, T=1000, limit=5000)
    result = train(config, progress=False)
    losses = torch.tensor(result.losses)
    assert len(losses) == 300 and bool(torch.isfinite(losses).all())
    start, end = losses[:30].mean(), losses[-50:].mean()
    assert end < 0.7 * start, f"mean loss went from {start:.3f} (steps 1-30) to {end:.3f} (steps 251-300)"


def test_ema_model_tracks_but_differs_from_training_weights(tmp_path):
    result = train(toy_config(tmp_path, steps=30, ema_decay=0.9), progress=False)
    diffs = [(p - q).abs().max() for p, q in zip(result.model.parameters(), result.ema_model.parameters())]
    assert max(diffs) > 0
    assert not any(p.requires_grad for p in result.ema_model.parameters())


def _images(n=48, size=8, classes=3, seed=0):
    """Class-dependent 8x8 'images' in [-1, 1]: a bright square at a class-specific corner, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = -torch.ones(n, 1, size, size) + 0.1 * torch.randn(n, 1, size, size, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, 0, r * 4:r * 4 + 4, col * 4:col * 4 + 4] += 1.5
    return x.clamp(-1, 1), y


UNET_KW = dict(base_channels=8, channel_mults=[1, 2], attention_levels=[False, True], num_groups=4)


def test_unet_trains_with_minidiff_fast_and_computes_what_the_plain_modules_do(tmp_path, monkeypatch):
    """train() applies minidiff.fast (fast blocks; channels-last kernels on the CPU) while it trains: the same losses
    as the plain modules (``fast=False``) to float32 rounding, plain NCHW models handed back, and a checkpoint that
    loads."""
    fast_module = importlib.import_module("minidiff.fast")
    kw = dict(dataset="fashion-mnist", model="tiny", model_kwargs=UNET_KW, batch_size=16, steps=5, warmup=0,
              checkpoint_every=5)
    original, seen = fast_module.apply, []

    def recording(model):                                   # the kernels' layouts and blocks as training starts
        model = original(model)
        seen.extend(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters()
                    if p.ndim == 4 and p.shape[1] > 1 and p.shape[-1] > 1)   # (kernels where the layouts differ)
        seen.append(any(isinstance(m, fast_module.FastResBlock) for m in model.modules()))
        return model

    monkeypatch.setattr(fast_module, "apply", recording)
    fast = train(toy_config(tmp_path / "cl", **kw), data=_images(), progress=False)
    assert seen and all(seen)
    seen.clear()
    plain = train(toy_config(tmp_path / "nchw", fast=False, **kw), data=_images(), progress=False)
    assert not seen                                         # fast=False: the plain modules, untouched
    torch.testing.assert_close(torch.tensor(fast.losses), torch.tensor(plain.losses), rtol=1e-4, atol=1e-5)
    for model in (fast.model, fast.ema_model):
        assert all(p.is_contiguous() for p in model.parameters())
        assert not any(type(m).__name__.startswith("Fast") for m in model.modules())
    loaded = load_model(tmp_path / "cl" / "run" / CHECKPOINT_NAME, device="cpu")[0]
    for a, b in zip(loaded.state_dict().values(), fast.ema_model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["mlp", "conditional-unet"])
def test_resume_reproduces_an_uninterrupted_run_bitwise(tmp_path, kind):
    if kind == "mlp":    # 200 points / batch 64 = 3 batches per epoch: the break at step 10 is mid-epoch
        kw, data = dict(limit=200), None
    else:                # dropout, label dropout and DDIM sample grids all draw random numbers
        kw = dict(dataset="fashion-mnist", model="tiny", conditional=True, model_kwargs={**UNET_KW, "dropout": 0.1},
                  batch_size=16, sample_every=5, sample_n=6, sample_steps=2)
        data = _images()
    full = train(toy_config(tmp_path / "full", steps=20, **kw), data=data, progress=False)
    train(toy_config(tmp_path / "split", steps=10, checkpoint_every=5, **kw), data=data, progress=False)
    resumed = train(toy_config(tmp_path / "split", steps=20, checkpoint_every=5, **kw), data=data, resume=True,
                    progress=False)
    assert len(full.losses) == 20
    assert resumed.losses == full.losses            # every float equal, not close
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    if kind != "mlp":
        assert sorted(p.name for p in (tmp_path / "split" / "run" / "samples").iterdir()) == \
            ["step_0000005.png", "step_0000010.png", "step_0000015.png", "step_0000020.png"]


def test_a_different_seed_gives_a_different_run(tmp_path):
    a = train(toy_config(tmp_path / "a", steps=5), progress=False)
    b = train(toy_config(tmp_path / "b", steps=5, seed=4), progress=False)
    assert a.losses != b.losses


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    x = toy_2d("moons", 256, generator=torch.Generator().manual_seed(0))
    config = toy_config(tmp_path, steps=10, checkpoint_every=10, limit=None)
    train(config, data=(x, None), progress=False)
    ckpt = tmp_path / "run" / "ckpt.pt"
    before = ckpt.read_bytes()
    bad = x.clone()
    bad[::2] *= 1e30            # finite; the trained MLP predicts ~1e29 there, whose square overflows float32
    with pytest.raises(FloatingPointError, match=r"the loss became (nan|inf) at step 11\b.*left as it was"):
        train(dataclasses.replace(config, steps=20), data=(bad, None), resume=True, progress=False)
    assert ckpt.read_bytes() == before
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_names_its_step(tmp_path):
    """lr = 1e6 with no clipping: the weights blow up within a few steps, and the first non-finite loss stops
    the run with its step number and the advice; nothing was checkpointed yet."""
    config = toy_config(tmp_path, steps=50, lr=1e6, warmup=0, grad_clip=None, log_every=1)
    with pytest.raises(FloatingPointError, match=r"the loss became (nan|inf) at step \d+; training stopped and no "
                                                 r"checkpoint was written. Try a lower lr"):
        train(config, progress=False)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_non_finite_training_data_is_refused_before_the_first_step(tmp_path):
    x = toy_2d("moons", 256, generator=torch.Generator().manual_seed(0))
    x[[5, 9]] = float("nan")
    with pytest.raises(ValueError, match=r"data x contains NaN or inf values in 2 of its 256 examples \(the first "
                                         r"at index 5\)"):
        train(toy_config(tmp_path, steps=3), data=(x, None), progress=False)
    with pytest.raises(ValueError, match=r"data x is empty"):
        train(toy_config(tmp_path, steps=3), data=(x[:0], None), progress=False)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_a_blown_up_update_never_reaches_a_checkpoint(tmp_path, weight_decay):
    """lr = 1e6: an update blows the weights up while the loss computed before it was finite. The checkpoint is
    refused then, so what is kept (if anything) samples finite points, from the EMA and from the raw weights."""
    config = toy_config(tmp_path, steps=20, lr=1e6, warmup=0, weight_decay=weight_decay, checkpoint_every=1,
                        log_every=1, grad_clip=None)
    with pytest.raises(FloatingPointError, match=r"step \d+ give NaN or inf .*(left as it was|no checkpoint)"):
        train(config, progress=False)
    ckpt = tmp_path / "run" / "ckpt.pt"
    if ckpt.exists():
        for ema in (True, False):
            model, sched, _ = load_model(ckpt, ema=ema, device="cpu")
            x = md.ddim_sample(model, (500, 2), sched, steps=50, generator=torch.Generator().manual_seed(0))
            assert torch.isfinite(x).all()


def test_the_weight_check_leaves_training_as_it_was(tmp_path):
    """The check before each checkpoint (eval mode, its own noise) changes nothing: checkpoints every step give
    bitwise the run that writes one at the end, dropout included."""
    kw = dict(dataset="fashion-mnist", model="tiny", model_kwargs={**UNET_KW, "dropout": 0.1}, batch_size=8,
              steps=4, warmup=0)
    every = train(toy_config(tmp_path / "every", checkpoint_every=1, **kw), data=_images(), progress=False)
    end = train(toy_config(tmp_path / "end", checkpoint_every=0, **kw), data=_images(), progress=False)
    assert every.losses == end.losses
    for a, b in zip(every.model.state_dict().values(), end.model.state_dict().values()):
        assert torch.equal(a, b)


def test_out_must_be_a_writable_folder_that_no_other_run_uses(tmp_path):
    from minidiff._io import claim_folder

    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot write to the output folder .*file/run.*file' is a file, not a folder"):
        train(toy_config(tmp_path / "file"), progress=False)
    with claim_folder(tmp_path / "busy" / "run"):            # another run holds the folder
        with pytest.raises(OSError, match="in use by another run"):
            train(toy_config(tmp_path / "busy", steps=2), progress=False)
    stale = tmp_path / "busy" / "run" / ".ckpt.pt.abc123.tmp"  # what a kill during a checkpoint write leaves
    stale.write_bytes(b"half a checkpoint")
    train(toy_config(tmp_path / "busy", steps=2), progress=False)
    assert not stale.exists() and (tmp_path / "busy" / "run" / "ckpt.pt").exists()


def test_an_existing_run_is_never_overwritten(tmp_path):
    config = toy_config(tmp_path, steps=2)
    train(config, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(config, progress=False)


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(toy_config(tmp_path, steps=2), resume=True, progress=False)


def test_sample_grid_and_checkpoint_cadence(tmp_path):
    config = toy_config(tmp_path, steps=6, sample_every=3, sample_n=50, sample_steps=2, checkpoint_every=4)
    result = train(config, progress=False)
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert samples == ["step_0000003.png", "step_0000006.png"]
    model, sched, saved = load_model(result.checkpoint, device="cpu")
    assert saved["step"] == 6 and sched.T == 200 and saved["sample_shape"] == [2]


def test_training_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(toy_config(tmp_path, steps=2), progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_weight_decay_skips_biases():
    model = MLPDenoiser(hidden=8)
    opt = make_optimizer(model, TrainConfig(dataset="moons", model="mlp", weight_decay=0.1),
                                  torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim == 2}


def test_warmup_is_linear_then_constant():
    config = TrainConfig(dataset="moons", model="mlp", lr=1e-3, warmup=4)
    assert [lr_at(config, s) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


@pytest.mark.parametrize("kw, error, words", [
    (dict(dataset="imagenet"), ValueError, ["dataset", "imagenet", "fashion-mnist"]),
    (dict(model="huge"), ValueError, ["model", "huge", "tiny"]),
    (dict(dataset="moons"), ValueError, ["mlp", "moons"]),
    (dict(dataset="moons", model="mlp", conditional=True), ValueError, ["conditional", "labels"]),
    (dict(p_uncond=0.2), ValueError, ["p_uncond", "unconditional"]),
    (dict(conditional=True, p_uncond=1.5), ValueError, ["p_uncond", "1.5"]),
    (dict(steps=0), ValueError, ["steps", "0"]),
    (dict(batch_size=2.5), TypeError, ["batch_size", "2.5"]),
    (dict(lr=-1.0), ValueError, ["lr", "-1.0"]),
    (dict(lr=0.0), ValueError, ["lr", "0.0"]),
    (dict(ema_decay=1.0), ValueError, ["ema_decay", "1.0"]),
    (dict(grad_clip=0.0), ValueError, ["grad_clip"]),
    (dict(limit=0), ValueError, ["limit", "0"]),
    (dict(schedule="quadratic"), ValueError, ["schedule", "quadratic", "cosine"]),
    (dict(sample_steps=2000), ValueError, ["sample_steps", "2000"]),
    (dict(device="gpu7"), ValueError, ["device", "gpu7", "auto"]),
    (dict(bf16="yes"), TypeError, ["bf16", "yes"]),
    (dict(model_kwargs={"num_classes": 3}), ValueError, ["model_kwargs", "num_classes"]),
    (dict(model_kwargs={"act": object()}), TypeError, ["model_kwargs", "JSON"]),
    (dict(conditional=1), TypeError, ["conditional"]),
])
def test_config_rejects_bad_values(kw, error, words):
    with pytest.raises(error) as info:
        TrainConfig(**kw)
    for word in words:
        assert word in str(info.value)


def test_config_defaults_and_round_trip():
    config = TrainConfig(conditional=True)
    assert config.p_uncond == 0.1 and config.sample_n == 64
    assert TrainConfig(dataset="moons", model="mlp").sample_n == 2000
    assert TrainConfig(**config.to_dict()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


def test_bf16_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="bf16=True needs a CUDA device"):
        train(toy_config(tmp_path, bf16=True, device="cpu"), progress=False)


def test_batch_larger_than_the_data_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size=64"):
        train(toy_config(tmp_path, limit=10), progress=False)
