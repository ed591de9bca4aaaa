"""Checkpoints: they round-trip, and every kind of damaged or foreign file is refused with nothing overwritten."""
import pickle
import random
import re
from pathlib import Path

import pytest
import torch

from minidiff.checkpoint import CheckpointError, export_for_sampling, load_model, read_checkpoint, save_checkpoint
from minidiff.mlp import MLPDenoiser
from minidiff.samplers import ddim_sample
from minidiff.schedules import NoiseSchedule
from minidiff.train import TrainConfig, train
from minidiff.unet import UNet


pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, **kw):
    base = dict(dataset="moons", model="mlp", model_kwargs={"hidden": 32, "num_layers": 1}, T=100, batch_size=32,
                steps=4, warmup=0, sample_every=0, checkpoint_every=0, limit=256, out=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def run(tmp_path):
    """A finished 4-step run: (config, result, checkpoint path)."""
    cfg = config(tmp_path)
    result = train(cfg, progress=False)
    return cfg, result, result.checkpoint


def test_load_model_rebuilds_the_ema_model(run):
    cfg, result, path = run
    model, sched, saved = load_model(path, device="cpu")
    assert type(model) is MLPDenoiser and not model.training
    assert torch.equal(sched.betas, result.sched.betas) and sched.name == "linear"
    assert saved["train"] == cfg.to_dict() and saved["step"] == 4
    x, t = torch.randn(5, 2), torch.arange(5)
    with torch.no_grad():
        assert torch.equal(model(x, t), result.ema_model(x, t))
        raw, _, _ = load_model(path, ema=False, device="cpu")
        assert torch.equal(raw(x, t), result.model(x, t))
        assert not torch.equal(raw(x, t), model(x, t))


def test_load_model_rebuilds_a_conditional_unet(tmp_path):
    unet = UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, True), num_groups=4, num_classes=3)
    opt = torch.optim.AdamW(unet.parameters())
    path = save_checkpoint(tmp_path / "u.pt", model=unet, ema_model=unet, optimizer=opt, step=0,
                           sched=NoiseSchedule.linear(T=10), train_config={},
                           sample_shape=(1, 8, 8), rng=[], losses=[])
    model, sched, saved = load_model(path, device="cpu")
    assert type(model) is UNet and model.num_classes == 3 and model.config == unet.config
    assert sched.T == 10 and saved["sample_shape"] == [1, 8, 8]
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(model(x, t, y), unet(x, t, y))


def test_save_is_atomic_and_a_failed_save_keeps_the_old_file(run, monkeypatch):
    _, result, path = run
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=result.model, ema_model=result.ema_model,
                        optimizer=torch.optim.AdamW(result.model.parameters()), step=99, sched=result.sched,
                        train_config={}, sample_shape=(2,), rng=[], losses=[])
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]     # no temporary file left behind


# ------------------------------------------------------------------------------------------ faults
def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bit_flipped(path: Path) -> None:
    """Flip one byte inside the model weights: the zip container still reads, the digest catches it."""
    raw = bytearray(path.read_bytes())
    weights = torch.load(path, weights_only=True)["model"]["out.weight"]
    needle = weights.numpy().tobytes()
    at = bytes(raw).find(needle)
    assert at > 0, "the weights' bytes are stored verbatim in the zip archive"
    raw[at + 1] ^= 0x40
    path.write_bytes(bytes(raw))


def _garbage(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a visible side effect if arbitrary code ever ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickled_object(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    payload["losses"] = _Payload(path.parent / "pwned")
    with open(path, "wb") as f:
        torch.save(payload, f)


def _plain_pickle(path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"format": "minidiff-checkpoint", "x": _Payload(path.parent / "pwned")}, f, protocol=2)


def _missing_key(path: Path) -> None:
    payload = torch.load(path, weights_only=True)
    del payload["optimizer"]
    torch.save(payload, path)


def _not_minidiff(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(3)}}, path)


def _bad_config_json(path: Path) -> None:
    from minidiff.checkpoint import _digest
    payload = torch.load(path, weights_only=True)
    payload["config"] = payload["config"][:-5]
    payload["digest"] = _digest(payload)              # a consistent digest: only the JSON is wrong
    torch.save(payload, path)


FAULTS = {
    "truncated": (_truncated, "truncated or corrupt"),
    "bit-flipped": (_bit_flipped, "corrupt: its contents do not match"),
    "garbage": (_garbage, "corrupt|truncated"),
    "empty": (_empty, "truncated or corrupt"),
    "pickled-object": (_pickled_object, "weights_only=True"),
    "plain-pickle": (_plain_pickle, "weights_only=True"),
    "missing-key": (_missing_key, r"missing entries \['optimizer'\]"),
    "not-minidiff": (_not_minidiff, "not a minidiff checkpoint"),
    "bad-config-json": (_bad_config_json, "unreadable config"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_damaged_checkpoint_is_refused_and_left_alone(run, fault):
    cfg, _, path = run
    damage, message = FAULTS[fault]
    damage(path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path, device="cpu")
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match=message):    # resuming fails the same way, before writing
        train(config(path.parent.parent, steps=8), resume=True, progress=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.pt"]  # no samples, no temp files, no 'pwned'


@pytest.mark.parametrize("change, field", [
    (dict(lr=0.5), "lr"),
    (dict(seed=7), "seed"),
    (dict(model_kwargs={"hidden": 16, "num_layers": 1}), "model_kwargs"),
    (dict(dataset="8gaussians"), "dataset"),
    (dict(batch_size=16), "batch_size"),
])
def test_resume_with_a_different_config_is_refused(run, change, field):
    cfg, _, path = run
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=rf"config differs .* in {field}: checkpoint"):
        train(config(path.parent.parent, steps=8, **change), resume=True, progress=False)
    assert path.read_bytes() == before


def test_resume_may_change_the_step_budget_and_logging(run):
    cfg, _, path = run
    result = train(config(path.parent.parent, steps=6, log_every=2, sample_every=3, sample_steps=2),
                   resume=True, progress=False)
    assert len(result.losses) == 6
    assert read_checkpoint(path)["step"] == 6


def test_resume_to_fewer_steps_than_done_is_refused(run):
    with pytest.raises(ValueError, match="steps=2 is below the checkpoint's step 4"):
        train(config(run[2].parent.parent, steps=2), resume=True, progress=False)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_every_torch_load_in_the_package_is_weights_only():
    package = Path(__file__).resolve().parent.parent / "minidiff"
    calls = []
    for source in package.glob("*.py"):
        text = source.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            depth, end = 1, match.end()
            while depth:                                  # find the call's closing parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            calls.append((source.name, text[match.start():end]))
    assert calls, "the package loads checkpoints somewhere"
    unsafe = [c for c in calls if "weights_only=True" not in c[1]]
    assert not unsafe, unsafe


def test_the_shipped_toy_checkpoint_samples_all_eight_modes():
    path = Path(__file__).resolve().parent.parent / "checkpoints" / "toy-2d.pt"
    model, sched, config = load_model(path, device="cpu")
    assert config["train"]["dataset"] == "8gaussians" and path.stat().st_size < 10 * 2**20
    x = ddim_sample(model, (2000, 2), sched, steps=50, generator=torch.Generator().manual_seed(0))   # (2000, 2)
    angle = torch.arange(8) * (torch.pi / 4)
    modes = 1.4 * torch.stack([angle.cos(), angle.sin()], dim=1)          # the data's 8 means, std 0.15
    dist, nearest = torch.cdist(x, modes).min(dim=1)
    near = dist < 3 * 0.15                                                  # 98.9% of each Gaussian's mass
    assert near.float().mean() > 0.9
    shares = torch.bincount(nearest[near], minlength=8) / near.sum()
    assert shares.min() > 0.125 - 0.03 and shares.max() < 0.125 + 0.03     # ~4 standard errors of 1/8


def test_export_for_sampling_keeps_the_weights_and_refuses_resume(run, tmp_path):
    cfg, result, path = run
    exported = tmp_path / "exported" / "ckpt.pt"
    export_for_sampling(path, exported)
    assert exported.stat().st_size < path.stat().st_size
    full, slim = read_checkpoint(path), read_checkpoint(exported)             # digest verified on read
    assert slim["optimizer"] == {} and slim["rng"] == [] and full["optimizer"]
    assert slim["config"] == full["config"] and slim["step"] == full["step"]
    assert torch.equal(slim["losses"], full["losses"])
    for key in ("model", "ema"):
        assert slim[key].keys() == full[key].keys()
        assert all(torch.equal(slim[key][k], full[key][k]) for k in full[key])
    model, _, _ = load_model(exported, device="cpu")
    x, t = torch.randn(5, 2), torch.arange(5)
    with torch.no_grad():
        assert torch.equal(model(x, t), result.ema_model(x, t))
    before = exported.read_bytes()
    with pytest.raises(CheckpointError, match="exported for sampling"):
        train(config(exported.parent.parent, out=str(exported.parent), steps=8), resume=True, progress=False)
    assert exported.read_bytes() == before


def test_export_ema_only_in_float16_is_a_quarter_the_size_and_samples_the_same(run, tmp_path):
    cfg, result, path = run
    full_copy, small = tmp_path / "full.pt", tmp_path / "small.pt"
    export_for_sampling(path, full_copy)
    export_for_sampling(path, small, weights="ema", dtype="float16")
    slim = read_checkpoint(small)
    assert slim["model"] == {}
    assert all(v.dtype == torch.float16 for v in slim["ema"].values())
    weight_bytes = lambda p: sum(v.numel() * v.element_size() for sd in (p["model"], p["ema"]) for v in sd.values())
    assert weight_bytes(slim) == weight_bytes(read_checkpoint(full_copy)) // 4
    ref = result.ema_model
    for name, p in ref.named_parameters():                  # each weight rounded to the nearest float16
        assert torch.equal(slim["ema"][name], p.detach().half())
    model, _, _ = load_model(small, device="cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    x, t = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)), torch.arange(64) * 15
    with torch.no_grad():
        expect, got = ref(x, t), model(x, t)
    assert (got - expect).abs().max() <= 2e-3 * expect.abs().max()       # float16 rounding, not a different model
    with pytest.raises(CheckpointError, match="EMA weights only"):
        load_model(small, ema=False, device="cpu")


@pytest.mark.parametrize("kwargs, match", [(dict(weights="raw"), "weights must be one of 'both', 'ema'; got 'raw'"),
                                           (dict(dtype="bfloat16"), "dtype must be one of 'float32', 'float16'")])
def test_export_rejects_unknown_options(run, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export_for_sampling(run[2], tmp_path / "x.pt", **kwargs)
    assert not (tmp_path / "x.pt").exists()


def test_the_shipped_fashion_mnist_checkpoint_loads_and_is_small():
    path = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist-cond.pt"
    assert path.stat().st_size <= 10 * 2**20
    model, sched, saved = load_model(path, device="cpu")
    assert type(model) is UNet and model.num_classes == 10 and saved["sample_shape"] == [1, 28, 28]
    with torch.no_grad():
        eps = model(torch.randn(4, 1, 28, 28), torch.tensor([0, 10, 500, 999]), torch.tensor([0, 3, 9, 10]))
    assert eps.shape == (4, 1, 28, 28) and bool(torch.isfinite(eps).all()) and float(eps.std()) > 0.1


# ------------------------------------------------------------------------------------------ crafted configs
def _resealed(tmp_path, change):
    """The shipped 2D checkpoint with ``change(payload)`` applied and a fresh digest: a well-formed file whose
    contents are wrong, as a crafted or buggy writer would make."""
    import json

    from minidiff.checkpoint import _write_atomic, read_checkpoint
    from minidiff.pretrained import pretrained

    payload = read_checkpoint(pretrained("toy-2d.pt"))
    change(payload)
    return _write_atomic({**payload, "config": json.dumps(payload["config"])}, tmp_path / "crafted.pt")


@pytest.mark.parametrize("change,message", [
    (lambda p: p["config"]["model"]["config"].update(hidden=10**6, num_layers=10**4),
     r"crafted\.pt.*asks for [\d,]+ parameters, more than the 2,000,000,000 allowed"),
    (lambda p: p["config"]["model"]["config"].update(activation="gelu"),
     r"crafted\.pt.*unknown arguments \['activation'\]; MLPDenoiser takes"),
    (lambda p: p["config"]["model"]["config"].update(hidden=-3),
     r"crafted\.pt.*config is not valid: hidden must be in \[1, inf\], got -3"),
    (lambda p: p["ema"][next(iter(p["ema"]))].fill_(float("nan")),
     r"crafted\.pt.*holds NaN or inf EMA weights"),
])
def test_a_crafted_checkpoint_is_refused_before_any_allocation(tmp_path, change, message):
    path = _resealed(tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, device="cpu")
