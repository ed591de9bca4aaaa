"""Data: Fashion-MNIST, MNIST and CIFAR-10 from their standard files, 2D toy data, and an in-memory loader.

Image loaders return ``(images, labels)``: images float32 ``(N, C, H, W)`` scaled to ``[-1, 1]``, labels
int64 ``(N,)``. They look for the files, in order, in

1. ``root``, when given (the folder holding the files, or its ``fashion-mnist`` / ``mnist`` /
   ``cifar-10-batches-py`` subfolder) — and nowhere else;
2. ``$MINIDIFF_DATA/<dataset>`` (``fashion-mnist``, ``mnist``, ``cifar-10-batches-py``);
3. ``/usr/share/datasets/<dataset>``, where the Debian package ``dataset-fashion-mnist`` installs
   Fashion-MNIST;
4. the user cache, ``~/.cache/minidiff/<dataset>`` (``$XDG_CACHE_HOME/minidiff/<dataset>``);

and otherwise, with ``download=True``, download the official files into ``root`` (when given) or the user
cache, checking each file's SHA-256 before it is moved into place. Local files are not checksummed (the
Debian package recompresses the archives, so its .gz files differ byte-wise from the official ones); their
IDX headers and sizes are checked instead.

Introduced in chapter 3 (toy data) and chapter 4 (images).
"""
from __future__ import annotations

import gzip
import hashlib
import importlib
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ._io import atomic_write
from ._validate import check_int

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MNIST_CLASSES = [str(d) for d in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TOY_2D = ("swiss_roll", "moons", "8gaussians", "checkerboard")
SYSTEM_DATA_DIR = Path("/usr/share/datasets")

# The four standard IDX archives, keyed by (split, kind).
_IDX_FILES = {("train", "images"): "train-images-idx3-ubyte.gz", ("train", "labels"): "train-labels-idx1-ubyte.gz",
              ("test", "images"): "t10k-images-idx3-ubyte.gz", ("test", "labels"): "t10k-labels-idx1-ubyte.gz"}

# Official SHA-256 sums of the archives as the mirrors serve them (zalandoresearch/fashion-mnist's
# files, also used by TensorFlow Datasets; Yann LeCun's MNIST files; the Toronto CIFAR-10 tarball).
_FASHION_MNIST = dict(
    mirrors=["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
    sha256={"train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"},
)
_MNIST = dict(
    mirrors=["https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    sha256={"train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"},
)
_CIFAR10 = dict(
    mirrors=["https://www.cs.toronto.edu/~kriz/"],
    archive="cifar-10-python.tar.gz",
    sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    folder="cifar-10-batches-py",
    files={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
)


# ------------------------------------------------------------------------------------------ locations
def cache_dir() -> Path:
    """The user cache for downloaded data: ``$XDG_CACHE_HOME/minidiff`` or ``~/.cache/minidiff``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minidiff"


def _candidates(sub: str, root) -> list[Path]:
    """The folders searched for data set ``sub``, in order."""
    if root is not None:
        root = Path(root).expanduser()
        return [root / sub, root]
    places = []
    env = os.environ.get("MINIDIFF_DATA")
    if env:
        places.append(Path(env).expanduser() / sub)
    return places + [SYSTEM_DATA_DIR / sub, cache_dir() / sub]


def _check_split(split) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _existing(folder: Path, name: str) -> Path | None:
    """``folder/name`` or, for a .gz name, its uncompressed twin; None if neither exists."""
    for path in (folder / name, folder / name.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


def _not_found(title: str, places: list[Path], names: list[str], how: str, reasons: list[str]) -> FileNotFoundError:
    looked = "\n".join(f"  - {p}" for p in places)
    why = ("\nDownload failed:\n" + "\n".join(f"  - {r}" for r in reasons)) if reasons else ""
    return FileNotFoundError(
        f"{title} not found. Looked for {', '.join(names)} in:\n{looked}{why}\nTo get it: {how}")


# ------------------------------------------------------------------------------------------ downloads
def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, dest: Path, sha256: str, *, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically (temporary file, SHA-256 check, rename)."""
    def fetch(f) -> None:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                f.write(chunk)
                digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise ValueError(f"SHA-256 mismatch for {url}: got {digest.hexdigest()}, expected {sha256}")

    atomic_write(dest, fetch)
    return dest


def _download_from_mirrors(name: str, mirrors: list[str], dest_dir: Path, sha256: str,
                           reasons: list[str], unreachable: set[str]) -> Path | None:
    """Try each mirror in turn; return the file's path, or None (with the failures added to ``reasons``).

    A mirror that cannot be reached at all is added to ``unreachable`` and not tried again for the next files.
    """
    for mirror in mirrors:
        if mirror in unreachable:
            continue
        try:
            return _download(mirror + name, dest_dir / name, sha256)
        except Exception as err:   # network errors, HTTP errors, checksum mismatches: try the next mirror
            reasons.append(f"{mirror + name}: {err}")
            if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
                unreachable.add(mirror)
    return None


# ------------------------------------------------------------------------------------------ IDX files
def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array of its stated shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip file ({e}): it is damaged or truncated; delete it and "
                         f"install a good copy (see the data module: Debian package, MINIDIFF_DATA or a download)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()!r}, "
                         "expected 000008 followed by the number of dimensions)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(shape):
        raise ValueError(f"{path} is truncated or corrupt: header says shape {shape} "
                         f"({math.prod(shape)} bytes), the file holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape)


def _load_idx_dataset(title: str, sub: str, spec: dict, split: str, root, download: bool, how: str):
    names = [_IDX_FILES[(split, "images")], _IDX_FILES[(split, "labels")]]
    places = _candidates(sub, root)
    found = None
    for folder in places:
        paths = [_existing(folder, n) for n in names]
        if all(paths):
            found = paths
            break
    reasons: list[str] = []
    if found is None and download:
        dest = places[-1] if root is None else Path(root).expanduser()
        unreachable: set[str] = set()
        found = [_existing(dest, n) or _download_from_mirrors(n, spec["mirrors"], dest, spec["sha256"][n], reasons,
                                                              unreachable)
                 for n in names]
    if found is None or not all(found):
        if not download:
            reasons = ["download=False"]
        raise _not_found(f"{title} ({split} split)", places, names, how, reasons)
    images, labels = (read_idx(p) for p in found)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
        raise ValueError(f"{found[0]} and {found[1]} must hold (N, 28, 28) images and (N,) labels, "
                         f"got {images.shape} and {labels.shape}")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{found[1]} holds label {int(labels.max())}; {title} has the 10 classes 0-9, so the file "
                         "is damaged or of another data set")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(127.5).sub_(1.0)     # (N, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))                                 # (N,)


def load_fashion_mnist(split: str = "train", root=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28x28 grey images of 10 clothing classes.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder holding the IDX files (searched alone); see :mod:`minidiff.data` for the search order.
        download: download the official files when they are not found.

    Returns:
        images (N, 1, 28, 28) float32 in [-1, 1], labels (N,) int64 (names in ``FASHION_MNIST_CLASSES``).

    Introduced in chapter 4.
    """
    split = _check_split(split)
    how = ("install the Debian package (`apt-get install dataset-fashion-mnist`, files in "
           f"{SYSTEM_DATA_DIR / 'fashion-mnist'}); or put the four IDX .gz files in a folder `fashion-mnist` "
           "under $MINIDIFF_DATA (or pass root=); or run with download=True on a machine with internet "
           f"({_FASHION_MNIST['mirrors'][0]}).")
    return _load_idx_dataset("Fashion-MNIST", "fashion-mnist", _FASHION_MNIST, split, root, download, how)


def load_mnist(split: str = "train", root=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits (LeCun et al. 1998), same format and search order as :func:`load_fashion_mnist`."""
    split = _check_split(split)
    how = ("put the four IDX .gz files in a folder `mnist` under $MINIDIFF_DATA (or pass root=); or run with "
           f"download=True on a machine with internet ({_MNIST['mirrors'][0]}).")
    return _load_idx_dataset("MNIST", "mnist", _MNIST, split, root, download, how)


# ------------------------------------------------------------------------------------------ CIFAR-10
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 batches (dicts of lists, strings and numpy arrays) and nothing else.

    Only the callables numpy uses to rebuild an array (and ``_codecs.encode``, which Python 3 protocol-2
    pickles use for bytes) may be referenced; anything else raises ``pickle.UnpicklingError``.
    """

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a CIFAR-10 batch file may only "
                                         "contain numpy arrays, lists, dicts and strings")
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            return importlib.import_module("_codecs").encode
        try:    # numpy >= 2 keeps these in numpy._core, numpy 1.x in numpy.core
            return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
        except ImportError:
            return getattr(importlib.import_module(module.replace("numpy._core", "numpy.core")), name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (EOFError, ValueError, pickle.UnpicklingError) as e:
        if isinstance(e, pickle.UnpicklingError) and str(e).startswith("refusing"):
            raise
        raise ValueError(f"{path} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}): it is damaged or "
                         "truncated; delete it and install a good copy") from None
    if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (a dict with 'data' and 'labels')")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072) with N labels, got {data.dtype} {data.shape} "
                         f"and labels {labels.shape}")
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) > 9):
        raise ValueError(f"{path} holds labels in [{int(labels.min())}, {int(labels.max())}]; CIFAR-10 has the 10 "
                         "classes 0-9, so the file is damaged")
    return data, labels


def _extract_cifar(archive: Path, dest: Path) -> None:
    """Copy the batch files out of the official tarball into ``dest`` (names fixed by us, not the archive)."""
    wanted = {f"{_CIFAR10['folder']}/{n}" for n in _CIFAR10["files"]["train"] + _CIFAR10["files"]["test"]}
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                with tar.extractfile(member) as src:
                    atomic_write(dest / Path(member.name).name, lambda out: out.write(src.read()))


def load_cifar10(split: str = "train", root=None, download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (Krizhevsky 2009) from the official python batches: 50,000 train / 10,000 test 32x32 RGB images.

    The batches are pickles; they are read with an unpickler that only rebuilds numpy arrays.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder holding ``cifar-10-batches-py`` or its files (searched alone); see :mod:`minidiff.data`.
        download: download and unpack the official archive when the files are not found.

    Returns:
        images (N, 3, 32, 32) float32 in [-1, 1], labels (N,) int64 (names in ``CIFAR10_CLASSES``).
    """
    split = _check_split(split)
    names = _CIFAR10["files"][split]
    places = _candidates(_CIFAR10["folder"], root)
    found = next((folder for folder in places if all((folder / n).is_file() for n in names)), None)
    reasons: list[str] = []
    if found is None:
        dest = places[-1] if root is None else places[0]
        archive = next((f / _CIFAR10["archive"] for f in [dest.parent, *places] if (f / _CIFAR10["archive"]).is_file()),
                       None)
        if archive is None and download:
            archive = _download_from_mirrors(_CIFAR10["archive"], _CIFAR10["mirrors"], dest.parent,
                                             _CIFAR10["sha256"], reasons, set())
        if archive is not None:
            _extract_cifar(archive, dest)
            found = dest if all((dest / n).is_file() for n in names) else None
    if found is None:
        how = ("run with download=True on a machine with internet "
               f"({_CIFAR10['mirrors'][0]}{_CIFAR10['archive']}); or unpack that archive and put its folder "
               f"`{_CIFAR10['folder']}` under $MINIDIFF_DATA (or pass root=).")
        raise _not_found(f"CIFAR-10 ({split} split)", places, names, how, reasons if download else ["download=False"])
    parts = [_read_cifar_batch(found / n) for n in names]
    data = np.concatenate([p[0] for p in parts])                                      # (N, 3072) uint8
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)                   # (N,)
    x = torch.from_numpy(data).reshape(-1, 3, 32, 32).float().div_(127.5).sub_(1.0)   # (N, 3, 32, 32)
    return x, torch.from_numpy(labels)


# ------------------------------------------------------------------------------------------ 2D toy data
def toy_2d(name: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of a 2D toy distribution, roughly zero-mean and unit scale, shape (n, 2) float32.

    Args:
        name: ``"swiss_roll"``, ``"moons"``, ``"8gaussians"`` (a ring of 8 modes) or ``"checkerboard"``
            (uniform on 8 squares of a 4x4 board).
        n: number of points.
        generator: the only source of randomness.

    Introduced in chapter 3.
    """
    if name not in TOY_2D:
        raise ValueError(f"name must be one of {', '.join(repr(t) for t in TOY_2D)}; got {name!r}")
    n = check_int(n, "n", low=1)
    kw = dict(generator=generator, device=generator.device if generator is not None else "cpu",
              dtype=torch.float64)
    if name == "swiss_roll":             # sklearn's make_swiss_roll (x, z) plane, noise 0.5, centred, / 7
        theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, **kw))                             # (n,)
        x = torch.stack([theta * theta.cos() - 2.0,                      # E[theta cos theta] = 2
                         theta * theta.sin() - 2 / (3 * math.pi)], dim=1)                 # (n, 2)
        x = (x + 0.5 * torch.randn(n, 2, **kw)) / 7.0
    elif name == "moons":                # two interleaved half circles, noise 0.1, centred, scaled by 1/0.7
        upper = torch.rand(n, **kw) < 0.5                                                 # (n,)
        angle = math.pi * torch.rand(n, **kw)                                             # (n,)
        x = torch.stack([angle.cos(), angle.sin()], dim=1)                                # (n, 2)
        x = torch.where(upper[:, None], x, torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], dim=1))
        x = (x + 0.1 * torch.randn(n, 2, **kw) - torch.tensor([0.5, 0.25], dtype=torch.float64,
                                                               device=x.device)) / 0.7
    elif name == "8gaussians":           # 8 modes on a circle of radius 1.4, std 0.15
        k = torch.randint(0, 8, (n,), generator=generator, device=kw["device"])           # (n,)
        angle = k.to(torch.float64) * (math.pi / 4)
        x = 1.4 * torch.stack([angle.cos(), angle.sin()], dim=1) + 0.15 * torch.randn(n, 2, **kw)
    else:                                # checkerboard on [-2, 2]^2 (FFJORD's, at half scale)
        x1 = 4 * torch.rand(n, **kw) - 2                                                  # (n,)
        row = torch.randint(0, 2, (n,), generator=generator, device=kw["device"]).to(torch.float64)
        x2 = torch.rand(n, **kw) - 2 * row + torch.floor(x1) % 2                          # (n,)
        x = torch.stack([x1, x2], dim=1)
    return x.to(torch.float32)


# ------------------------------------------------------------------------------------------ loader
class TensorLoader:
    """Mini-batches of in-memory tensors: one ``randperm`` per epoch and index slicing, no per-item Python.

    Args:
        x: (N, ...) data.
        y: optional (N,) labels (batches then yield ``y_batch``, else ``None``).
        batch_size: samples per batch.
        shuffle: a fresh permutation each epoch (from ``generator``).
        drop_last: drop the last incomplete batch (then ``N >= batch_size`` is required).
        generator: the source of the permutations.
        device: move the data there once, up front (e.g. the GPU), so batches need no copies.

    Iterating yields ``(x_batch, y_batch_or_None)``; ``len(loader)`` is the number of batches per epoch.
    Introduced in chapter 3.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int, shuffle: bool = True,
                 drop_last: bool = True, generator: torch.Generator | None = None, device=None):
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise TypeError(f"x must be a torch.Tensor with a batch dimension, got {type(x).__name__}")
        if y is not None:
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"y must be a torch.Tensor or None, got {type(y).__name__}")
            if y.shape[:1] != x.shape[:1]:
                raise ValueError(f"y must have one entry per sample of x (N={x.shape[0]}), got shape {tuple(y.shape)}")
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        for name, flag in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if drop_last and x.shape[0] < self.batch_size:
            raise ValueError(f"batch_size={batch_size} is larger than the data set (N={x.shape[0]}): with "
                             "drop_last=True there would be no batch; use a smaller batch_size or drop_last=False")
        self.x = x.to(device) if device is not None else x
        self.y = (y.to(device) if device is not None else y) if y is not None else None
        self.shuffle, self.drop_last, self.generator = shuffle, drop_last, generator

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        n, B = self.x.shape[0], self.batch_size
        if self.shuffle:
            gen_device = self.generator.device if self.generator is not None else "cpu"
            order = torch.randperm(n, generator=self.generator, device=gen_device).to(self.x.device)   # (N,)
        for i in range(len(self)):
            if self.shuffle:
                idx = order[i * B:(i + 1) * B]                                                      # (B,)
                yield self.x[idx], (self.y[idx] if self.y is not None else None)
            else:
                sl = slice(i * B, (i + 1) * B)
                yield self.x[sl], (self.y[sl] if self.y is not None else None)
