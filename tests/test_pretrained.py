"""The shipped files: their recorded checksums, and finding or downloading them (file:// URLs, no network)."""
import hashlib
from pathlib import Path

import pytest

import minidiff as md
import importlib

pt = importlib.import_module("minidiff.pretrained")   # the module (md.pretrained is its function)


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


def _no_local_copy(monkeypatch, tmp_path, source: Path):
    monkeypatch.delenv("MINIDIFF_CHECKPOINTS", raising=False)
    monkeypatch.setattr(pt, "CHECKPOINTS", tmp_path / "empty")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(pt, "url", lambda name: source.as_uri())


def test_download_checks_the_digest_and_caches(monkeypatch, tmp_path):
    original = pt.CHECKPOINTS / "toy-2d.pt"
    _no_local_copy(monkeypatch, tmp_path, original)
    path = md.pretrained("toy-2d.pt")
    assert path == tmp_path / "cache" / "minidiff" / "checkpoints" / "toy-2d.pt"
    assert path.read_bytes() == original.read_bytes()
    model, sched, _ = md.load_model(path)
    assert sched.T == 1000


def test_a_corrupted_download_is_refused_and_not_kept(monkeypatch, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes((pt.CHECKPOINTS / "toy-2d.pt").read_bytes()[:-10])
    _no_local_copy(monkeypatch, tmp_path, bad)
    with pytest.raises(FileNotFoundError, match="SHA-256 mismatch"):
        md.pretrained("toy-2d.pt")
    assert not (tmp_path / "cache" / "minidiff" / "checkpoints" / "toy-2d.pt").exists()


def test_override_folder(monkeypatch, tmp_path):
    (tmp_path / "toy-2d.pt").write_bytes(b"x")
    monkeypatch.setenv("MINIDIFF_CHECKPOINTS", str(tmp_path))
    assert md.pretrained("toy-2d.pt") == tmp_path / "toy-2d.pt"


def test_result_files_are_read_from_the_repository():
    res = md.load_result("cpu-2026-11-26.json")
    assert res["benchmark"] == "minidiff vs diffusers"


@pytest.mark.parametrize("name", ["../x.json", "x.txt", 3])
def test_result_names_are_checked(name):
    with pytest.raises(ValueError, match="name must be"):
        md.load_result(name)
