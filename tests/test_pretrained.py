"""The shipped files: their recorded checksums, and finding them in the package or the repository (never online)."""
import hashlib
from pathlib import Path

import pytest

import minidiff as md
import importlib

pt = importlib.import_module("minidiff.pretrained")   # the module, which md.pretrained is too (callable)


@pytest.mark.parametrize("name", sorted(pt.SHA256))
def test_recorded_checksums_match_the_committed_files(name):
    path = pt.CHECKPOINTS / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pt.SHA256[name], (
        f"checkpoints/{name} changed: update minidiff.pretrained.SHA256")


def test_the_repository_copy_is_found_first():
    assert md.pretrained("toy-2d.pt") == pt.CHECKPOINTS / "toy-2d.pt"


def test_unknown_name_is_refused():
    with pytest.raises(ValueError, match="name must be one of"):
        md.pretrained("model.pt")


def _nowhere(monkeypatch, tmp_path):
    """No packaged copy and no repository copy."""
    monkeypatch.delenv("MINIDIFF_CHECKPOINTS", raising=False)
    monkeypatch.setattr(pt, "CHECKPOINTS", tmp_path / "empty")
    monkeypatch.setattr(pt, "RESULTS", tmp_path / "empty")


def test_a_missing_file_is_a_clear_error_and_nothing_is_downloaded(monkeypatch, tmp_path):
    _nowhere(monkeypatch, tmp_path)
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("pretrained() went to the network"))
    with pytest.raises(FileNotFoundError, match="toy-2d.pt is in none of"):
        md.pretrained("toy-2d.pt")
    with pytest.raises(FileNotFoundError, match="ddim-table.json is in none of"):
        md.load_result("ddim-table.json")


def test_a_damaged_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "toy-2d.pt").write_bytes((pt.CHECKPOINTS / "toy-2d.pt").read_bytes()[:-10])
    monkeypatch.setenv("MINIDIFF_CHECKPOINTS", str(tmp_path))
    with pytest.raises(md.CheckpointError, match="does not match the SHA-256"):
        md.pretrained("toy-2d.pt")


def test_override_folder(monkeypatch, tmp_path):
    (tmp_path / "toy-2d.pt").write_bytes((pt.CHECKPOINTS / "toy-2d.pt").read_bytes())
    monkeypatch.setenv("MINIDIFF_CHECKPOINTS", str(tmp_path))
    assert md.pretrained("toy-2d.pt") == tmp_path / "toy-2d.pt"


def test_the_packaged_copy_is_found_without_the_repository(monkeypatch, tmp_path):
    """An installed package has minidiff/checkpoints and minidiff/results beside its modules."""
    package = tmp_path / "minidiff"
    (package / "checkpoints").mkdir(parents=True)
    (package / "results").mkdir()
    (package / "checkpoints" / "toy-2d.pt").write_bytes((pt.CHECKPOINTS / "toy-2d.pt").read_bytes())
    (package / "results" / "ddim-table.json").write_text('{"sweep": "here"}')
    _nowhere(monkeypatch, tmp_path)
    monkeypatch.setattr(pt.resources, "files", lambda name: package)
    assert md.pretrained("toy-2d.pt") == package / "checkpoints" / "toy-2d.pt"
    assert md.load_result("ddim-table.json") == {"sweep": "here"}


def test_the_module_is_importable_and_callable():
    import minidiff.pretrained as module

    assert module is md.pretrained and module.load_result is md.load_result
    assert module("toy-2d.pt") == module.pretrained("toy-2d.pt")


def test_result_files_are_read_from_the_repository():
    res = md.load_result("cpu-2026-11-26.json")
    assert res["benchmark"] == "minidiff vs diffusers"


@pytest.mark.parametrize("name", ["../x.json", "x.txt", 3])
def test_result_names_are_checked(name):
    with pytest.raises(ValueError, match="name must be"):
        md.load_result(name)
