"""The shipped pretrained files (``checkpoints/``), found locally or downloaded with a checksum.

A reader who cloned the repository has them in ``checkpoints/``; a reader who pip-installed minidiff (Colab)
does not, so :func:`pretrained` fetches the file from the repository once, checks its SHA-256 and keeps it in
the user cache. A test keeps :data:`SHA256` equal to the committed files.

    >>> model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"))    # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path

from .colab import BRANCH, REPO_URL
from .data import _download, _sha256, cache_dir

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"

SHA256 = {
    "fashion-mnist-cond.pt": "73b97fb040c2d3136a830a89fc3a7547527d92b65d3dd3a012adc00a02dba329",
    "toy-2d.pt": "549305073adf082b2152656ee43242a1267a7c24825b78bec31081957c41bc67",
    "classifier.safetensors": "1cc51468979139f8e1493b6288e3d33e07b14771a3ebf5a544de26a38345c931",
}


def url(name: str) -> str:
    """Where a shipped file is downloaded from: the repository's raw ``checkpoints/`` folder."""
    return f"{REPO_URL}/raw/{BRANCH}/checkpoints/{name}"


def pretrained(name: str) -> Path:
    """The path of the shipped file ``name`` (one of :data:`SHA256`).

    Looks in ``$MINIDIFF_CHECKPOINTS``, the repository's ``checkpoints/`` folder, then the user cache
    (``~/.cache/minidiff/checkpoints``); otherwise downloads it there, checking its SHA-256.
    """
    if name not in SHA256:
        raise ValueError(f"name must be one of the shipped files {sorted(SHA256)}, got {name!r}")
    places = [Path(os.environ["MINIDIFF_CHECKPOINTS"])] if os.environ.get("MINIDIFF_CHECKPOINTS") else []
    places += [CHECKPOINTS]
    for folder in places:
        if (folder / name).is_file():
            return folder / name
    cached = cache_dir() / "checkpoints" / name
    if cached.is_file() and _sha256(cached) == SHA256[name]:
        return cached
    try:
        return _download(url(name), cached, SHA256[name])
    except Exception as err:
        looked = ", ".join(str(p) for p in [*places, cached.parent])
        raise FileNotFoundError(f"pretrained file {name} not found in {looked} and the download from "
                                f"{url(name)} failed ({err}). Clone {REPO_URL} and run from its root, or set "
                                "MINIDIFF_CHECKPOINTS to a folder holding the file.") from err


RESULTS = CHECKPOINTS.parent / "benchmarks" / "results"


def load_result(name: str) -> dict:
    """A committed result file ``benchmarks/results/<name>`` (JSON) as a dict: the measured sweeps that the
    chapters plot. Read from the repository when present, otherwise from the repository online (Colab)."""
    import json
    import urllib.request

    if not isinstance(name, str) or not name.endswith(".json") or "/" in name or "\\" in name:
        raise ValueError(f"name must be a .json file name in benchmarks/results, got {name!r}")
    local = RESULTS / name
    if local.is_file():
        return json.loads(local.read_text())
    address = f"{REPO_URL}/raw/{BRANCH}/benchmarks/results/{name}"
    try:
        with urllib.request.urlopen(address, timeout=30) as response:
            return json.loads(response.read().decode())
    except Exception as err:
        raise FileNotFoundError(f"result file {name} is not in {RESULTS} and could not be read from {address} "
                                f"({err})") from err
