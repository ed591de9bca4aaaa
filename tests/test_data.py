"""Data loaders on small files written by the tests, the real Fashion-MNIST when installed, toy data, the loader."""
import gzip
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import data
from minidiff.data import (FASHION_MNIST_CLASSES, TensorLoader, load_cifar10, load_fashion_mnist, load_mnist,
                           read_idx, toy_2d)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x00000803 (or 0801 for vectors), big-endian sizes, raw data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_idx_set(folder: Path, n_train=6, n_test=4, seed=0, gz=True) -> dict:
    """Write the four IDX files with random content; return the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (images, labels)
        prefix = "train" if split == "train" else "t10k"
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            raw = _idx_bytes(arr)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return arrays


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No system folder, an empty cache and no $MINIDIFF_DATA: only what a test writes is found."""
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIDIFF_DATA", raising=False)
    return tmp_path


# ------------------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("loader", [load_fashion_mnist, load_mnist])
def test_idx_loaders_read_a_root_folder(tmp_path, loader, gz):
    arrays = _write_idx_set(tmp_path, gz=gz)
    for split in ("train", "test"):
        x, y = loader(split, root=tmp_path, download=False)
        images, labels = arrays[split]
        assert x.shape == (len(images), 1, 28, 28) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
        # uint8 v -> v / 127.5 - 1: 0 -> -1, 255 -> 1. float32, two roundings of values <= 1 in any association:
        # within 2 ulps, far inside the float32 defaults (1.3e-6 relative, 1e-5 absolute).
        torch.testing.assert_close(x[:, 0], torch.from_numpy(images).float() / 127.5 - 1)
        assert x.min() >= -1 and x.max() <= 1


def test_search_order_env_then_system_then_cache(isolated, monkeypatch):
    env, system, cache = isolated / "env", isolated / "system", isolated / "cache" / "minidiff"
    _write_idx_set(cache / "fashion-mnist", n_train=3)
    assert load_fashion_mnist("train", download=False)[0].shape[0] == 3
    _write_idx_set(system / "fashion-mnist", n_train=4)
    assert load_fashion_mnist("train", download=False)[0].shape[0] == 4
    _write_idx_set(env / "fashion-mnist", n_train=5)
    monkeypatch.setenv("MINIDIFF_DATA", str(env))
    assert load_fashion_mnist("train", download=False)[0].shape[0] == 5
    _write_idx_set(isolated / "mine" / "fashion-mnist", n_train=2)          # root's dataset subfolder
    assert load_fashion_mnist("train", root=isolated / "mine", download=False)[0].shape[0] == 2
    # MNIST and Fashion-MNIST share file names; each looks in its own subfolder only.
    with pytest.raises(FileNotFoundError):
        load_mnist("train", download=False)


def test_missing_data_gives_one_clear_error(isolated):
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist("test", download=False)
    message = str(err.value)
    for needle in ("Fashion-MNIST (test split) not found", "t10k-images-idx3-ubyte.gz",
                   "apt-get install dataset-fashion-mnist", "MINIDIFF_DATA", "download=True",
                   str(isolated / "cache" / "minidiff" / "fashion-mnist")):
        assert needle in message


def test_download_checks_sha256_and_writes_atomically(isolated, monkeypatch):
    """The download path, offline: file:// mirrors serve the files; checksums are verified before renaming."""
    mirror = isolated / "mirror"
    arrays = _write_idx_set(mirror)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    monkeypatch.setitem(data._MNIST, "mirrors", ["file:///nonexistent-mirror/", mirror.as_uri() + "/"])
    monkeypatch.setitem(data._MNIST, "sha256", sums)
    x, y = load_mnist("train")                                          # first mirror fails, second works
    assert torch.equal(y, torch.from_numpy(arrays["train"][1].astype(np.int64)))
    cached = isolated / "cache" / "minidiff" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]

    bad = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setitem(data._MNIST, "sha256", bad)
    with pytest.raises(FileNotFoundError, match="SHA-256 mismatch"):
        load_mnist("test")
    # The bad file was not kept, and no partial file is left behind; the good one was.
    assert not (cached / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in cached.iterdir() if p.name.endswith(".part")]
    assert (cached / "t10k-images-idx3-ubyte.gz").exists()


def test_official_checksums_are_well_formed():
    for spec in (data._FASHION_MNIST, data._MNIST):
        assert sorted(spec["sha256"]) == sorted(data._IDX_FILES.values())
    sums = [*data._FASHION_MNIST["sha256"].values(), *data._MNIST["sha256"].values(), data._CIFAR10["sha256"]]
    assert all(len(s) == 64 and int(s, 16) >= 0 for s in sums) and len(set(sums)) == len(sums)


def test_corrupt_idx_files_are_rejected(tmp_path):
    good = _idx_bytes(np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "truncated").write_bytes(good[:-5])
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d\x03" + good[4:])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "truncated")
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "magic")


def test_bad_split():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load_fashion_mnist("val")


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                    reason="the Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    x, y = load_fashion_mnist("test", root=DEBIAN_FASHION_MNIST, download=False)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))      # 1,000 test images per class
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    # Test image 0 is an ankle boot (class 9), image 1 a pullover (class 2), as in the dataset's documentation.
    assert y[:2].tolist() == [9, 2]
    x_train, y_train = load_fashion_mnist("train", root=DEBIAN_FASHION_MNIST, download=False)
    assert x_train.shape == (60000, 1, 28, 28)
    assert torch.equal(torch.bincount(y_train), torch.full((10,), 6000))


# ------------------------------------------------------------------------------------------ CIFAR-10
def _cifar_batch(n, seed, protocol):
    rng = np.random.default_rng(seed)
    batch = {"batch_label": "testing batch", "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "labels": rng.integers(0, 10, n).tolist(), "filenames": [f"img_{i}.png" for i in range(n)]}
    return batch, pickle.dumps(batch, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_from_pickle_batches(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name], raw = _cifar_batch(3, i, protocol)
        (folder / name).write_bytes(raw)
    x, y = load_cifar10("train", root=tmp_path, download=False)
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = batches["data_batch_1"]
    # Row-major 3072 bytes = 1024 red, 1024 green, 1024 blue values of a 32x32 image.
    # as above: the same map, to within 2 ulps
    torch.testing.assert_close(x[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)).float() / 127.5 - 1)
    assert y[:3].tolist() == first["labels"]
    x_test, y_test = load_cifar10("test", root=tmp_path, download=False)
    assert x_test.shape == (3, 3, 32, 32) and y_test.tolist() == batches["test_batch"]["labels"]


def test_cifar10_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle .*system"):
        load_cifar10("test", root=tmp_path, download=False)


def test_cifar10_from_the_tarball(isolated, monkeypatch):
    """Download (file:// mirror, checked) and extraction of only the expected members, into the cache."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch", "../escape"]:
            _, raw = _cifar_batch(2, 0, 2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    mirror = isolated / "mirror"
    mirror.mkdir()
    (mirror / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    monkeypatch.setitem(data._CIFAR10, "mirrors", [mirror.as_uri() + "/"])
    monkeypatch.setitem(data._CIFAR10, "sha256", hashlib.sha256(buf.getvalue()).hexdigest())
    x, y = load_cifar10("test")
    assert x.shape == (2, 3, 32, 32)
    extracted = isolated / "cache" / "minidiff" / "cifar-10-batches-py"
    assert sorted(p.name for p in extracted.iterdir()) == sorted(
        [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"])
    assert not (isolated / "cache" / "minidiff" / "escape").exists()


def test_cifar10_missing(isolated):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 \\(train split\\) not found"):
        load_cifar10("train", download=False)


# ------------------------------------------------------------------------------------------ toy data
@pytest.mark.parametrize("name", data.TOY_2D)
def test_toy_2d_shape_scale_determinism(name):
    x = toy_2d(name, 20000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 2) and x.dtype == torch.float32
    assert x.mean(dim=0).abs().max() < 0.1                        # roughly centred: SE std / sqrt(n) <= 0.011
    std = x.std(dim=0)
    assert (std > 0.5).all() and (std < 1.5).all()                # roughly unit scale
    assert x.abs().max() < 4
    again = toy_2d(name, 20000, generator=torch.Generator().manual_seed(0))
    other = toy_2d(name, 20000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again) and not torch.equal(x, other)


def test_toy_2d_structure():
    gen = torch.Generator().manual_seed(0)
    ring = toy_2d("8gaussians", 4000, generator=gen).double()
    angle = torch.atan2(ring[:, 1], ring[:, 0]) / (torch.pi / 4)      # near an integer: one of the 8 modes
    # the modes' angular spread 0.15 / 1.4 rad is 0.14 in these units: a mean |offset| ~0.11, SE 0.0013; uniform
    # angles would give 0.25
    assert (angle - angle.round()).abs().mean() < 0.15
    # on the ring of radius 1.4: the mean norm is 1.4 + 0.15^2 / 2.8 = 1.408, SE 0.15 / sqrt(4000) = 0.0024
    assert ring.norm(dim=1).mean() == pytest.approx(1.4, abs=0.05)
    board = toy_2d("checkerboard", 4000, generator=gen)
    cells = (torch.floor(board[:, 0]) + torch.floor(board[:, 1])) % 2
    assert torch.all(cells == 0)                                      # only the "black" squares


def test_toy_2d_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of 'swiss_roll', 'moons', '8gaussians', 'checkerboard'"):
        toy_2d("spiral", 10)
    with pytest.raises(ValueError, match="n must be in \\[1, inf\\], got 0"):
        toy_2d("moons", 0)


# ------------------------------------------------------------------------------------------ loader
@pytest.mark.parametrize("n,batch,drop_last", [(10, 3, True), (10, 3, False), (12, 4, True), (5, 5, False)])
def test_tensor_loader_covers_every_sample_once_per_epoch(n, batch, drop_last):
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 2)              # (n, 2): row i is (i, i)
    y = torch.arange(n)
    loader = TensorLoader(x, y, batch_size=batch, drop_last=drop_last, generator=torch.Generator().manual_seed(0))
    assert len(loader) == (n // batch if drop_last else -(-n // batch))
    orders = []
    for _ in range(2):
        seen = []
        for xb, yb in loader:
            assert torch.equal(xb[:, 0].long(), yb)                           # x and y stay paired
            assert len(yb) == batch or not drop_last
            seen += yb.tolist()
        assert len(set(seen)) == len(seen)                                    # no sample twice
        if drop_last:
            assert len(seen) == (n // batch) * batch                          # only the remainder is dropped
        else:
            assert sorted(seen) == list(range(n))                            # every sample once
        orders.append(seen)
    if n > batch:
        assert orders[0] != orders[1]                                         # reshuffled each epoch


def test_tensor_loader_unshuffled_and_unlabelled():
    x = torch.arange(7.0)[:, None]
    batches = list(TensorLoader(x, batch_size=3, shuffle=False, drop_last=False))
    assert [b[0][:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(b[1] is None for b in batches)


def test_tensor_loader_bad_arguments():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="batch_size=8 is larger than the data set \\(N=4\\)"):
        TensorLoader(x, batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be in"):
        TensorLoader(x, batch_size=0)
    with pytest.raises(ValueError, match="y must have one entry per sample of x \\(N=4\\)"):
        TensorLoader(x, torch.zeros(3), batch_size=2)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        TensorLoader([1, 2, 3], batch_size=1)


# ------------------------------------------------------------------------------------------ damaged data files
def _fashion_files(folder, labels=None, n: int = 5):
    """The four Fashion-MNIST IDX files (gzipped), tiny: n images and their labels."""
    import gzip as _gzip
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    labels = list(range(n)) if labels is None else labels
    for split, count in (("train", n), ("t10k", n)):
        images = struct.pack(">BBBBIII", 0, 0, 8, 3, count, 28, 28) + bytes(count * 28 * 28)
        labs = struct.pack(">BBBBI", 0, 0, 8, 1, count) + bytes(labels)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(_gzip.compress(images))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(_gzip.compress(labs))
    return folder


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b"not gzip at all"), r"train-labels-idx1-ubyte\.gz is not a readable gzip file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-6]), r"train-labels-idx1-ubyte\.gz is not a readable gzip file"),
])
def test_a_damaged_idx_file_is_named_with_how_to_get_a_good_copy(tmp_path, damage, message):
    from minidiff.data import load_fashion_mnist

    folder = _fashion_files(tmp_path / "fashion-mnist")
    damage(folder / "train-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=message + r".*good copy"):
        load_fashion_mnist("train", root=folder, download=False)


def test_labels_outside_the_ten_classes_are_refused(tmp_path):
    from minidiff.data import load_fashion_mnist

    folder = _fashion_files(tmp_path / "fashion-mnist", labels=[0, 1, 2, 3, 12])
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz holds label 12; .* 0-9"):
        load_fashion_mnist("train", root=folder, download=False)


def test_a_truncated_cifar_batch_is_named(tmp_path):
    import pickle as _pickle

    from minidiff.data import _read_cifar_batch

    path = tmp_path / "data_batch_1"
    path.write_bytes(_pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]})[:-20])
    with pytest.raises(ValueError, match=r"data_batch_1 is not a readable CIFAR-10 batch .*good copy"):
        _read_cifar_batch(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"data_batch_1 is not a readable CIFAR-10 batch"):
        _read_cifar_batch(path)
    path.write_bytes(_pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}))
    with pytest.raises(ValueError, match=r"labels in \[0, 10\]"):
        _read_cifar_batch(path)
