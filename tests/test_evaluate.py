"""The offline metric: the Fréchet distance against closed forms and scipy, feature statistics, the shipped
classifier's accuracy on the real test set, and the FD_cls / class-agreement pipeline."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minidiff import evaluate
from minidiff.evaluate import (Classifier, class_agreement, evaluate_samples, fd_cls, feature_stats,
                               frechet_distance, load_classifier, save_classifier)
from tolerances import F64_EPS, sum_error

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                                         reason="the Debian package dataset-fashion-mnist is not installed")


def _random_cov(d, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d + 3, generator=gen, dtype=torch.float64)
    return scale * a @ a.T / (d + 3)                                          # (d, d), full rank, non-diagonal


# ------------------------------------------------------------------------------------------ Fréchet distance
def test_identical_gaussians_are_at_distance_zero():
    cov = _random_cov(20, 0)
    mu = torch.linspace(-1, 1, 20, dtype=torch.float64)
    # float64 eigh: eigenvalues of C^2 off by ~d eps64 lambda_max^2 = 4e-14, which the square root divides by
    # 2 lambda_min = 1e-2: FD = 0 to ~4e-12 (measured 2e-14)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-9


def test_diagonal_covariances_closed_form():
    """Commuting (diagonal) covariances: d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    a = torch.tensor([1.0, 4.0, 0.25, 9.0], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 1.0, 9.0], dtype=torch.float64)
    mu1 = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    expected = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + (0.5 - 1) ** 2 + 0.0
    # diagonal matrices: eigh and the square roots of these squares are exact up to a few ulps
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_one_dimension_and_scaled_covariances():
    # 1D: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([0.5], [[4.0]], [-1.0], [[9.0]]) == pytest.approx(1.5 ** 2 + 1.0, rel=1e-12)
    # C2 = k^2 C1 commutes with C1: d^2 = (1 - k)^2 tr(C1).
    cov = _random_cov(10, 3)
    zeros = torch.zeros(10, dtype=torch.float64)
    # float64: eigenvalue errors ~d eps64 9 lambda_max^2 = 1e-13, divided by 2 sqrt(9 lambda_min^2) = 0.03 in the
    # square root, then the cancellation 10 tr - 6 tr (x 2.5): ~1e-11 of 4 tr = 45, ~3e-13 relative
    assert frechet_distance(zeros, cov, zeros, 9 * cov) == pytest.approx(4 * float(cov.trace()), rel=1e-10)


def test_non_commuting_against_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    c1, c2 = _random_cov(16, 1).numpy(), _random_cov(16, 2, scale=3.0).numpy()
    assert not np.allclose(c1 @ c2, c2 @ c1)                                  # genuinely non-commuting
    mu1, mu2 = np.linspace(0, 1, 16), np.linspace(1, 0, 16) ** 2
    covmean = scipy_linalg.sqrtm(c1 @ c2).real                                # the usual FID formula
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    # two float64 routes (a Schur-based sqrtm of the non-normal C1 C2, eigh of C1^1/2 C2 C1^1/2): eigenvalues good
    # to ~eps64 ||C1 C2|| sqrt(cond C1) ~ 1e-13, divided by 2 sqrt(lambda_min) = 0.1 in the square root: ~1e-12 of
    # FD = 15
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_non_commuting_against_an_eigendecomposition_of_c1_c2():
    """Independent check: tr((C1 C2)^1/2) is the sum of square roots of C1 C2's (real, >= 0) eigenvalues."""
    c1, c2 = _random_cov(12, 4), _random_cov(12, 5)
    ev = torch.linalg.eigvals(c1 @ c2)                                        # complex dtype, real values
    tr_sqrt = ev.real.clamp(min=0).sqrt().sum()
    zeros = torch.zeros(12, dtype=torch.float64)
    expected = float(c1.trace() + c2.trace() - 2 * tr_sqrt)
    # as above (eigenvalues of C1 C2 in [0.013, 4.1]): ~1e-13 of FD = 5
    assert frechet_distance(zeros, c1, zeros, c2) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_are_fine():
    """Rank-deficient covariances (e.g. dead ReLU features) give tiny negative eigenvalues only: no error.

    Near a zero eigenvalue the square root turns round-off (~1e-16 relative) into ~sqrt(1e-16) = 1e-8
    relative error, so the tolerance here is looser than for full-rank matrices.
    """
    v = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = v @ v.T                                                               # rank 3 of 8
    zeros = torch.zeros(8, dtype=torch.float64)
    assert abs(frechet_distance(zeros, c, zeros, c)) < 1e-6 * float(c.trace())
    assert frechet_distance(zeros, c, zeros, torch.zeros(8, 8, dtype=torch.float64)) == \
        pytest.approx(float(c.trace()), rel=1e-10)


def test_bad_covariances_are_rejected():
    mu = torch.zeros(2, dtype=torch.float64)
    eye = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValueError, match="cov2 must be positive semi-definite"):
        frechet_distance(mu, eye, mu, torch.tensor([[1.0, 0.0], [0.0, -0.5]]))
    with pytest.raises(ValueError, match="cov1 must be symmetric"):
        frechet_distance(mu, torch.tensor([[1.0, 0.5], [0.0, 1.0]]), mu, eye)
    with pytest.raises(ValueError, match="cov2 must have shape \\(2, 2\\)"):
        frechet_distance(mu, eye, mu, torch.eye(3))
    with pytest.raises(ValueError, match="mu1 must be a vector"):
        frechet_distance(eye, eye, mu, eye)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(mu, eye, torch.tensor([0.0, float("nan")]), eye)


def test_feature_stats_match_numpy():
    f = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    mu, cov = feature_stats(f)
    assert mu.dtype == torch.float64 and cov.shape == (6, 6)
    # float64 sums of n = 50 terms in torch's and numpy's orders (which depend on the SIMD width): each within
    # n eps64 of the sum of the terms' magnitudes, so compare absolutely (a relative tolerance would fail an entry
    # that happens to be near 0)
    n, top = f.shape[0], float(f.abs().max())
    np.testing.assert_allclose(mu.numpy(), f.double().numpy().mean(axis=0), rtol=0,
                               atol=2 * sum_error(n, n * top, F64_EPS) / n)
    np.testing.assert_allclose(cov.numpy(), np.cov(f.double().numpy(), rowvar=False), rtol=0,
                               atol=2 * sum_error(n, n * (2 * top) ** 2, F64_EPS) / (n - 1))
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(torch.zeros(1, 6))


def test_sampled_gaussians_approach_the_closed_form():
    """Monte Carlo: FD of two sample sets converges to the FD of their generating Gaussians."""
    gen = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    c1, c2 = _random_cov(d, 6), _random_cov(d, 7)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    x1 = mu1 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    x2 = mu2 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c2).T
    exact = frechet_distance(mu1, c1, mu2, c2)
    estimate = frechet_distance(*feature_stats(x1), *feature_stats(x2))
    # Monte Carlo: the mean term dominates the estimate's standard error, 2 sqrt(dmu^T (C1 + C2) dmu / n) = 0.0075
    # (20 seeds scatter it by 0.0065); rel 0.02 of FD = 1.96 is 0.039, over 5 SE
    assert estimate == pytest.approx(exact, rel=0.02)


# ------------------------------------------------------------------------------------------ classifier plumbing
def test_classifier_shapes_and_roundtrip(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Classifier(width=8, feature_dim=16).eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert model(x).shape == (5, 10) and model.features(x).shape == (5, 16)
    path = save_classifier(model, tmp_path / "c.safetensors", {"test_accuracy": 0.5})
    assert json.loads((tmp_path / "c.json").read_text()) == {"test_accuracy": 0.5}
    loaded = load_classifier(path)
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        load_classifier(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a minidiff classifier"):
        load_classifier(tmp_path / "other.safetensors")


def test_fd_cls_and_agreement_with_a_small_classifier():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Classifier(width=8, feature_dim=16).eval()
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(64, 1, 28, 28, generator=gen) * 2 - 1
    b = torch.rand(64, 1, 28, 28, generator=gen) * 2 - 1
    # identical float64 statistics: 0 up to the square roots of round-off-sized eigenvalues (a dead feature gives
    # one), ~sqrt(d eps64) lambda_max ~ 1e-11 each, with lambda_max = 3e-4 here
    assert abs(fd_cls(a, a, model)) < 1e-8
    assert fd_cls(a, -torch.ones_like(a), model) > fd_cls(a, b, model) >= 0
    # Images outside [-1, 1] are clamped to the data range before the classifier sees them.
    assert fd_cls(a, 5 * a, model) == pytest.approx(fd_cls(a, (5 * a).clamp(-1, 1), model))   # the same computation
    with torch.no_grad():
        predicted = model(a).argmax(dim=1)
    assert class_agreement(a, predicted, model) == 1.0
    assert class_agreement(a, (predicted + 1) % 10, model) == 0.0
    with pytest.raises(ValueError, match="labels must lie in \\[0, 9\\]"):
        class_agreement(a, torch.full((64,), 10), model)
    with pytest.raises(ValueError, match="must have shape \\(N, 1, 28, 28\\)"):
        fd_cls(a[:, :, :27], b, model)


# ------------------------------------------------------------------------------------------ the shipped classifier
@needs_fashion_mnist
def test_shipped_classifier_reaches_90_percent_on_the_test_set():
    from minidiff.data import load_fashion_mnist

    classifier = load_classifier()
    x, y = load_fashion_mnist("test", root=DEBIAN_FASHION_MNIST, download=False)
    accuracy = evaluate.accuracy(classifier, x, y)
    assert accuracy >= 0.90
    record = json.loads(evaluate.CLASSIFIER_PATH.with_suffix(".json").read_text())
    # the recorded number is this one: accuracy is a multiple of 1e-4 (10,000 images); allow one image whose two top
    # float32 logits are within rounding of each other to go the other way on another CPU
    assert record["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert evaluate.CLASSIFIER_PATH.stat().st_size < 1_000_000


@needs_fashion_mnist
def test_evaluate_samples_on_real_images(monkeypatch):
    """Real test images score near the floor and agree with their labels; noise scores far worse."""
    from minidiff.data import load_fashion_mnist

    monkeypatch.setenv("MINIDIFF_DATA", str(DEBIAN_FASHION_MNIST.parent))
    classifier = load_classifier()
    x, y = load_fashion_mnist("train", root=DEBIAN_FASHION_MNIST, download=False)
    real = evaluate_samples(x[-500:], y[-500:], classifier=classifier)
    noise = evaluate_samples(torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                             classifier=classifier)
    assert set(real) == {"fd_cls", "fd_cls_floor", "class_agreement", "n"} and real["n"] == 500
    assert set(noise) == {"fd_cls", "fd_cls_floor", "n"}
    assert real["fd_cls_floor"] == noise["fd_cls_floor"]                         # same real subsets
    assert real["fd_cls"] < 2 * real["fd_cls_floor"]
    assert noise["fd_cls"] > 10 * real["fd_cls"]
    assert real["class_agreement"] > 0.9
    assert evaluate.fd_cls_floor(500, classifier=classifier) == real["fd_cls_floor"]     # train_seed=1, as here
    with pytest.raises(ValueError, match="n must be in \\[2, 500\\]"):
        evaluate_samples(x[:500], classifier=classifier, n=600)


@needs_fashion_mnist
def test_evaluate_model_end_to_end_with_the_exact_denoiser(monkeypatch):
    """Sampling + scoring: the exact denoiser of 1,000 training images (a perfect memoriser) samples those
    images back, so its samples land at the real-data floor and carry their class."""
    import minidiff as md
    from minidiff.data import load_fashion_mnist

    monkeypatch.setenv("MINIDIFF_DATA", str(DEBIAN_FASHION_MNIST.parent))
    x, y = load_fashion_mnist("train", root=DEBIAN_FASHION_MNIST, download=False)
    sched = md.NoiseSchedule.linear(T=1000)
    oracle = md.OracleDenoiser(x[:1000], sched, labels=y[:1000], num_classes=10)
    classifier = load_classifier()
    result = evaluate.evaluate_model(oracle, sched, n=200, sampler="ddim", steps=20, guidance_scale=1.0,
                                     batch_size=100, seed=0, classifier=classifier)
    assert result["n"] == 200 and result["steps"] == 20 and result["sampler"] == "ddim"
    assert result["class_agreement"] > 0.9
    assert result["fd_cls"] < 2 * result["fd_cls_floor"] + 1.0
    with pytest.raises(ValueError, match=r"steps must be in \[1, 1000\], got 1001"):
        evaluate.evaluate_model(oracle, sched, n=10, sampler="ddpm", steps=1001, classifier=classifier)
    with pytest.raises(ValueError, match="variance must be one of"):
        evaluate.generate(oracle, sched, n=10, sampler="ddpm", steps=10, variance="large")
    _, _, settings = evaluate.generate(oracle, sched, n=10, sampler="ddpm", steps=10, variance="beta")
    assert settings["steps"] == 10 and settings["variance"] == "beta" and settings["eta"] is None
    with pytest.raises(ValueError, match="sampler must be one of 'ddim', 'ddpm'"):
        evaluate.evaluate_model(oracle, sched, n=10, sampler="euler", classifier=classifier)
    with pytest.raises(ValueError, match="guidance_scale=2.0 needs a class-conditional model"):
        evaluate.evaluate_model(md.OracleDenoiser(x[:10], sched), sched, n=10, guidance_scale=2.0,
                                classifier=classifier)


@needs_fashion_mnist
def test_evaluate_command(tmp_path, monkeypatch, capsys):
    """`python -m minidiff evaluate` on a (barely initialised) checkpoint writes the metrics as JSON."""
    import minidiff as md
    from minidiff.checkpoint import save_checkpoint
    from minidiff.cli import main

    monkeypatch.setenv("MINIDIFF_DATA", str(DEBIAN_FASHION_MNIST.parent))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = md.UNet(base_channels=8, channel_mults=(1, 2), attention_levels=(False, True), num_groups=4,
                        num_classes=10)
    sched = md.NoiseSchedule.linear(T=100)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model=model, ema_model=model,
                           optimizer=torch.optim.AdamW(model.parameters()), step=0, sched=sched, train_config={},
                           sample_shape=(1, 28, 28), rng=[], losses=[])
    out = tmp_path / "result.json"
    rc = main(["evaluate", "--ckpt", str(ckpt), "--n", "20", "--steps", "2", "--guidance", "2", "--batch-size", "8",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["n"] == 20 and result["steps"] == 2 and result["guidance"] == 2.0
    assert {"fd_cls", "fd_cls_floor", "class_agreement"} <= set(result)
    assert "FD_cls" in capsys.readouterr().out
    rc = main(["evaluate", "--ckpt", str(ckpt), "--sampler", "ddpm", "--steps", "5", "--device", "cpu"])
    assert rc == 2 and "--steps applies to --sampler ddim only" in capsys.readouterr().err
    rc = main(["train-classifier", "--out", str(tmp_path / "c.pt")])
    assert rc == 2 and "--out must end in .safetensors" in capsys.readouterr().err


def test_result_files_name_the_machine():
    from minidiff import runtime

    assert isinstance(runtime.cpu_model(), str) and runtime.cpu_model().strip()
    assert runtime.machine_description(torch.device("cpu")).endswith(f"{torch.get_num_threads()} threads")


def test_moved_names_keep_their_old_imports():
    """The classifier, the metrics and the result-file helpers left minidiff.evaluate; its old names still work."""
    import minidiff as md
    from minidiff import _io, classifier, metrics, runtime

    homes = {classifier: ["CLASSIFIER_PATH", "IMAGE_SHAPE", "Classifier", "accuracy", "train_classifier",
                          "save_classifier", "load_classifier"],
             metrics: ["frechet_distance", "feature_stats", "fd_cls", "class_agreement", "class_diversity"],
             runtime: ["cpu_model", "machine_description"], _io: ["write_json"]}
    for module, names in homes.items():
        for name in names:
            assert getattr(evaluate, name) is getattr(module, name), name
            assert name in evaluate.__all__, name
    assert md.fd_cls is metrics.fd_cls and md.Classifier is classifier.Classifier
    assert md.evaluate_samples is evaluate.evaluate_samples


def test_a_damaged_or_mismatched_classifier_file_is_a_clear_error(tmp_path):
    """A flipped byte in the header, or weights of another width than the stored config: a CheckpointError that
    names the file, never a safetensors or torch traceback."""
    import json as _json

    from safetensors.torch import save_file

    from minidiff.checkpoint import CheckpointError
    from minidiff.classifier import Classifier, load_classifier, save_classifier

    good = save_classifier(Classifier(), tmp_path / "good.safetensors")
    damaged = bytearray(good.read_bytes())
    damaged[10] ^= 0xFF
    (tmp_path / "damaged.safetensors").write_bytes(bytes(damaged))
    save_file(Classifier(width=16).state_dict(), str(tmp_path / "shape.safetensors"),
              metadata={"config": _json.dumps({"width": 32})})
    for name, cause in (("damaged", "header"), ("shape", "size mismatch")):
        with pytest.raises(CheckpointError, match=rf"{name}\.safetensors is not a usable classifier .*{cause}"):
            load_classifier(tmp_path / f"{name}.safetensors")
    assert isinstance(load_classifier(good), Classifier)


@needs_fashion_mnist
def test_the_floor_is_a_finite_sample_bias_that_shrinks_like_1_over_n(monkeypatch):
    """Two real samples of one distribution: FD_cls is positive only through sampling noise, whose expected value
    falls as 1/n (the mean term exactly: E|mu_a - mu_b|^2 = 2 tr(Sigma) / n). From n = 250 to 4000 (16x) it must
    fall by well over 4x, and another training subset gives another value."""
    monkeypatch.setenv("MINIDIFF_DATA", str(DEBIAN_FASHION_MNIST.parent))
    classifier = load_classifier()
    small, large = (evaluate.fd_cls_floor(n, classifier=classifier) for n in (250, 4000))
    assert 0 < large < small / 4
    assert evaluate.fd_cls_floor(250, train_seed=2, classifier=classifier) != small
    with pytest.raises(ValueError, match=r"n must be in \[2, 10000\], got 10001"):
        evaluate.fd_cls_floor(10001)
