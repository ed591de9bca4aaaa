"""The package as a reader installs it: the wheel carries what the chapters load, and runs without the
repository and without the network.

Builds the wheel from this checkout, installs it with pip into a folder of its own (no dependencies: torch
and the rest come from this environment), and runs the chapters' loading code in a fresh interpreter whose
working directory and home are empty temporary folders and whose sockets refuse to connect.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import minidiff as md
from minidiff import home, pretrained as pt

ROOT = Path(__file__).resolve().parents[1]

# Installed as sitecustomize in the child: any attempt to reach the network raises.
NO_NETWORK = """
import socket

def _refuse(*args, **kwargs):
    raise OSError("network is off in this test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""

# What the chapters do with the shipped files (chapters 4-8 and the solutions page).
CHAPTER_LOADING = """
import json, sys
from pathlib import Path
import torch
import minidiff as md
import minidiff.pretrained

where = Path(md.__file__).resolve().parent
assert str(where).startswith(sys.argv[1]), f"imported minidiff from {where}, not from the installed wheel"
model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"))
toy, toy_sched, _ = md.load_model(md.pretrained("toy-2d.pt"))
classifier = md.load_classifier()
ddim = md.load_result("ddim-table.json")
cfg = md.pretrained.load_result("cfg-sweep.json")
g = torch.Generator().manual_seed(0)
y = torch.tensor([8, 9])
x = md.ddim_sample(model, (2, 1, 28, 28), sched, steps=5, y=y, guidance_scale=3.0, generator=g)
labels = classifier(x).argmax(dim=1)
print(json.dumps({"finite": bool(torch.isfinite(x).all()), "shape": list(x.shape), "labels": labels.tolist(),
                  "ddim_cells": len(ddim["cells"]), "cfg_keys": sorted(cfg), "toy_T": toy_sched.T,
                  "checkpoint": str(md.pretrained("fashion-mnist-cond.pt"))}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("minidiff-*.whl")
    return path


def test_the_wheel_carries_the_shipped_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in pt.SHA256:
        assert f"minidiff/checkpoints/{name}" in names, f"{name} missing from the wheel"
    for name in pt.SHIPPED_RESULTS:
        assert f"minidiff/results/{name}" in names, f"{name} missing from the wheel"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "minidiff").rglob("*.py")}   # subpackages too
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert not [n for n in names if n.startswith("minidiff/results/cpu-")], "benchmark logs do not belong in it"


def test_the_wheel_knows_its_version_and_home(wheel):
    meta = zipfile.ZipFile(wheel).read(f"minidiff-{md.__version__}.dist-info/METADATA").decode()
    assert f"Version: {md.__version__}" in meta
    assert f"Project-URL: Source, {home.REPO_URL}" in meta


def test_chapters_load_from_the_installed_wheel_with_the_network_off(wheel, tmp_path):
    target, outside, home, hooks = (tmp_path / d for d in ("site", "outside", "home", "hooks"))
    for d in (outside, home, hooks):
        d.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(NO_NETWORK))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIDIFF_", "XDG_", "PYTHON"))}
    env.update(PYTHONPATH=os.pathsep.join([str(hooks), str(target)]), HOME=str(home), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHAPTER_LOADING, str(target.resolve())], cwd=outside, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["finite"] and got["shape"] == [2, 1, 28, 28]
    assert got["checkpoint"].startswith(str(target.resolve()))
    assert got["ddim_cells"] > 0 and got["toy_T"] == 1000 and "cells" in got["cfg_keys"]
    written = [str(f.relative_to(home)) for f in home.rglob("*") if "minidiff" in str(f.relative_to(home))]
    assert not written, f"the installed package wrote into the home folder (a cache or a download): {written}"


def test_the_network_is_really_off_in_the_child(tmp_path):
    """The guard above must bite: with it, a download attempt fails."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(NO_NETWORK))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    code = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9', timeout=5)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "network is off" in proc.stderr
