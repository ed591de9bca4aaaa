"""The shipped pretrained files and result tables, found inside the installed package.

The wheel (and any non-editable install, e.g. ``pip install minidiff`` in Colab) carries the repository's
``checkpoints/`` folder as ``minidiff/checkpoints`` and the chapters' result tables as ``minidiff/results``
(see ``pyproject.toml``); in a clone or an editable install they are read from the repository itself. Nothing
is downloaded. Every shipped model file is checked against :data:`SHA256` before it is handed out.

This module is itself callable, so ``md.pretrained(name)`` and ``from minidiff.pretrained import load_result``
both work:

    >>> model, sched, config = md.load_model(md.pretrained("fashion-mnist-cond.pt"))    # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import sys
import types
from importlib import resources
from pathlib import Path

from .data import file_sha256

REPOSITORY = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPOSITORY / "checkpoints"              # a clone's folder (an editable install reads it)
RESULTS = REPOSITORY / "benchmarks" / "results"

#: The shipped files and their SHA-256 digests (a test keeps them equal to the committed files).
SHA256 = {
    "fashion-mnist-cond.pt": "73b97fb040c2d3136a830a89fc3a7547527d92b65d3dd3a012adc00a02dba329",
    "fashion-mnist-sr3.pt": "0fad2d61d9ee01c2da9680b232c0ba04df64c58f01e6772fd61b602326fe69ab",
    "toy-2d.pt": "549305073adf082b2152656ee43242a1267a7c24825b78bec31081957c41bc67",
    "gan-seed0.safetensors": "4847b5ab0817d539e4461c5b32ee683162342196fdbf11db18b2267edb4e0ad7",
    "gan-seed0.json": "97ea23020b136cec76b21fd9fa0f7ed204c9fde397bc5f7f05fb06ea269a55a0",
    "gan-seed1.safetensors": "b3c1d3f0cecbaba5d06ec182673505d1bce3a299ff03a2cb2cff0678e7c15a8b",
    "gan-seed1.json": "3fbfbe5d8a529be54642d4d77d026a64e41fc154d0c79336486fb15aa65dcb74",
    "gan-seed2.safetensors": "5d106a8a4201fbda53654a2ba680ba7e4d8045b425c62630ef67efc25621f72a",
    "gan-seed2.json": "dc3ac9ee79e7d38d1a637c7b397c1aff8e684b1f7db9b20dbf6aab597606dab1",
    "fashion-mnist-cond.likelihood.json": "6314fd17a2a0bb12e3e2d3a63e66307518565d544e203e25b8fa901aba7b53b1",
    "fashion-mnist-flow.pt": "b06420389b6c85d369d1ed7be1cdb704f453be0a72e1701f9105f79d5c0a028b",
    "fashion-mnist-cond.solvers.json": "69ac5019b5c9a2b6a81719afdfae69492d3fa291d18951a7f289112285be88f6",
    "fashion-mnist-flow.eval.json": "6ffbc4b7a98c37182f9d5ceee8d1947e7bdcadcbaa011ac6db17d46083f742e3",
    "classifier.safetensors": "1cc51468979139f8e1493b6288e3d33e07b14771a3ebf5a544de26a38345c931",
    "classifier.json": "4e5af2ce897e4ad5fa1f0406d073b3c215383a3d50acc35d3ab175ad3bf7a300",
    "fashion-mnist-prompts.pt": "ac7afea7a13032bbb734f5d08680ad3139c24c0baf8395fbba8c95ffb4a2a06f",
    "fashion-mnist-prompts.eval.json": "c2355b51d81cfa4496284c55689b106d79777e3993e00f10bdf7074e9b9d2a2c",
    "fashion-mnist-latent.pt": "9eceacf7f260220b5498f10fa55ea241811835c0a5034b5985c7cadc7079c607",
    "autoencoder.safetensors": "7f5076fbee48b62bba1c2b3f2cf1f7b31110b42a4acfb9308348d32fb235659e",
    "autoencoder.json": "c34260304e35e1ba60e3e15752b8dab3daab62d1e8674c871a172ef2c9a0b2fe",
}
#: The result tables the chapters plot (``benchmarks/results/``); the wheel carries these.
SHIPPED_RESULTS = ("ddim-table.json", "cfg-sweep.json", "parameterisations.json", "latent-autoencoders.json",
                   "latent-vs-pixel.json")


def _folders(kind: str) -> list[Path]:
    """Where shipped files of ``kind`` ("checkpoints" or "results") may be: the installed package, then the
    repository (``$MINIDIFF_CHECKPOINTS`` comes first for checkpoints)."""
    packaged = Path(str(resources.files("minidiff") / kind))
    if kind == "checkpoints":
        override = [Path(os.environ["MINIDIFF_CHECKPOINTS"])] if os.environ.get("MINIDIFF_CHECKPOINTS") else []
        return override + [packaged, CHECKPOINTS]
    return [packaged, RESULTS]


def pretrained(name: str) -> Path:
    """The path of the shipped file ``name`` (one of :data:`SHA256`), checked against its SHA-256.

    Looks in ``$MINIDIFF_CHECKPOINTS`` (when set), the installed package, then the repository's
    ``checkpoints/`` folder.

    Raises:
        ValueError: ``name`` is not a shipped file.
        FileNotFoundError: the file is in none of those folders.
        minidiff.CheckpointError: the file found there does not match its recorded checksum.
    """
    if name not in SHA256:
        raise ValueError(f"name must be one of the shipped files {sorted(SHA256)}, got {name!r}")
    places = _folders("checkpoints")
    found = next((folder / name for folder in places if (folder / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"pretrained file {name} is in none of {', '.join(map(str, places))}. Reinstall "
                                "minidiff (pip install --force-reinstall minidiff) or set MINIDIFF_CHECKPOINTS to "
                                "a folder holding the file.")
    if file_sha256(found) != SHA256[name]:
        from .checkpoint import CheckpointError

        raise CheckpointError(f"{found} does not match the SHA-256 recorded for {name} (a damaged or replaced "
                              f"file): expected {SHA256[name]}")
    return found


def load_result(name: str) -> dict:
    """A committed result file ``benchmarks/results/<name>`` (JSON) as a dict: the measured sweeps that the
    chapters plot. An installed package carries :data:`SHIPPED_RESULTS`; a clone has them all."""
    if not isinstance(name, str) or not name.endswith(".json") or "/" in name or "\\" in name:
        raise ValueError(f"name must be a .json file name in benchmarks/results, got {name!r}")
    places = _folders("results")
    for folder in places:
        if (folder / name).is_file():
            return json.loads((folder / name).read_text())
    raise FileNotFoundError(f"result file {name} is in none of {', '.join(map(str, places))} (an installed "
                            f"package carries {', '.join(SHIPPED_RESULTS)})")


class _CallableModule(types.ModuleType):
    """``minidiff.pretrained`` is this module and, called, its :func:`pretrained` function."""

    def __call__(self, name: str) -> Path:
        return pretrained(name)


sys.modules[__name__].__class__ = _CallableModule
