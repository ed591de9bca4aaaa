"""minidiff.export: the ONNX files that the book's in-page demo runs compute what the PyTorch models compute.

ONNX Runtime runs the same float32 network with its own kernels (other blocking of the convolutions' sums), so
its outputs differ from PyTorch's by a few float32 roundings of sums of a few hundred terms, relative to the
outputs' scale: the tolerance of tests/test_fast.py for two float32 implementations of one network.
"""
import numpy as np
import pytest
import torch

import minidiff as md
from minidiff import export

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def close(got, want, what):
    want = torch.as_tensor(want)
    torch.testing.assert_close(torch.as_tensor(got), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()), msg=what)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"), device="cpu")
    classifier = md.load_classifier(device="cpu")
    unet = export.export_denoiser(model, folder / "unet.onnx", sample_shape=tuple(config["sample_shape"]))
    clf = export.export_classifier(classifier, folder / "classifier.onnx")
    return model, sched, classifier, ort.InferenceSession(str(unet)), ort.InferenceSession(str(clf))


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_exported_unet_equals_pytorch_at_any_batch(shipped, batch):
    model, _, _, unet, _ = shipped
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 1, 28, 28, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, model.num_classes + 1, (batch,), generator=g)           # "no label" (10) included
    with torch.no_grad():
        want = model(x, t, y)
    (got,) = unet.run(None, {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()})
    assert got.shape == (batch, 1, 28, 28) and got.dtype == np.float32
    close(got, want, f"eps at batch {batch}")


def test_exported_unet_gives_the_guided_eps_of_the_samplers(shipped):
    """One call on 2B rows (labels, then "no label") and cfg_lerp: what md.guided_eps computes, and what the
    page does at each step."""
    model, _, _, unet, _ = shipped
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(3, 1, 28, 28, generator=g), torch.tensor([999, 500, 20]), torch.tensor([0, 5, 9])
    with torch.no_grad():
        want = md.guidance.guided_eps(model, x, t, y, 3.0)
    (both,) = unet.run(None, {"x": torch.cat([x, x]).numpy(), "t": torch.cat([t, t]).numpy(),
                              "y": torch.cat([y, torch.full_like(y, 10)]).numpy()})
    cond, uncond = torch.from_numpy(both).chunk(2)
    close(md.guidance.cfg_lerp(uncond, cond, 3.0), want, "guided eps")
    # the guided eps is not the conditional one: the check above would catch a page that skipped the lerp
    assert float((want - cond).abs().max()) > 1e-2


def test_exported_classifier_equals_pytorch_on_real_images(shipped):
    _, _, classifier, _, clf = shipped
    images = md.data.load_fashion_mnist("test", download=False)[0][:64]               # (64, 1, 28, 28) in [-1, 1]
    with torch.no_grad():
        want = classifier(images)
    (got,) = clf.run(None, {"x": images.numpy().astype(np.float32)})
    assert got.shape == (64, 10)
    close(got, want, "logits")
    margin = want.topk(2).values.diff(dim=1).abs().squeeze(1)
    sure = margin > 1e-3 * float(want.abs().max())                                # argmax not a near-tie
    assert torch.equal(torch.from_numpy(got).argmax(1)[sure], want.argmax(1)[sure])


def test_export_rejects_bad_arguments(tmp_path):
    model = md.UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, True), num_groups=4,
                    num_classes=3)
    with pytest.raises(ValueError, match="path must be a file name ending in .onnx"):
        export.export_denoiser(model, tmp_path / "unet.pt")
    with pytest.raises(ValueError, match="sample_shape must be three positive integers"):
        export.export_denoiser(model, tmp_path / "unet.onnx", sample_shape=(28, 28))
    with pytest.raises(ValueError, match="sample_shape"):
        export.export_denoiser(model, tmp_path / "unet.onnx", sample_shape=(1, 0, 28))
    unconditional = md.UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, True),
                            num_groups=4)
    with pytest.raises(TypeError, match="class-conditional denoiser.*num_classes=None"):
        export.export_denoiser(unconditional, tmp_path / "unet.onnx")
    with pytest.raises(TypeError, match="classifier must be a torch.nn.Module, got function"):
        export.export_classifier(lambda x: x, tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir()), "a rejected export wrote a file"


def test_failed_export_keeps_the_old_file_and_the_training_mode(tmp_path, monkeypatch):
    model = md.UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, True), num_groups=4,
                    num_classes=3)
    model.train()
    path = tmp_path / "unet.onnx"
    path.write_bytes(b"the previous export")

    def broken(module, *args, **kwargs):
        assert not module.training, "the exporter must trace the model in eval mode (dropout off)"
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export.export_denoiser(model, path)
    assert model.training, "export left the model in eval mode"
    assert path.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["unet.onnx"], "a temporary file was left behind"


def test_export_without_onnxscript_says_what_to_install(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnxscript", None)                            # import onnxscript fails
    model = md.UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(False, True), num_groups=4,
                    num_classes=3)
    with pytest.raises(ImportError, match=r"pip install 'minidiff\[onnx\]'"):
        export.export_denoiser(model, tmp_path / "unet.onnx")
