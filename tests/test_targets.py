"""eps, x_0 and v targets and min-SNR-gamma weights (minidiff.targets): every (target, weighting) is the eps loss
with the weight eps_weight, exactly; min-SNR-gamma is eps's L_simple where SNR <= gamma; a network of any target
samples as an eps-model."""
import json
import math

import pytest
import torch

import minidiff as md
from minidiff import solvers, targets
from benchmark_scripts import benchmark_module

T = 1000


@pytest.fixture(scope="module")
def sched():
    return md.NoiseSchedule.linear(T=T)


def exact_prediction(oracle, sched, target):
    """The oracle of a point set as a network that predicts ``target``."""
    def model(x_t, t, y=None):
        eps = oracle(x_t, t)
        a = targets.alpha_bar_at(sched, t, x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[target]
    return model


@pytest.mark.parametrize("target", targets.TARGETS)
@pytest.mark.parametrize("weighting", targets.WEIGHTINGS)
def test_every_loss_is_the_eps_loss_with_its_effective_weight(sched, target, weighting):
    """w(t) ||f - target||^2 = eps_weight(t) ||eps_implied - eps||^2, sample by sample, for any network f."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, T, (64,), generator=g)
    noise = torch.randn(64, 3, generator=g, dtype=torch.float64)
    net = lambda x, t, y=None: torch.sin(x) + 0.001 * t.double().view(-1, 1)           # noqa: E731
    loss = targets.target_loss(net, x0, sched, target=target, weighting=weighting, gamma=5.0, t=t, noise=noise,
                               reduction="none")
    a = sched.alpha_bars[t].view(-1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    eps_err = (targets.eps_from_prediction(x_t, net(x_t, t), a, target) - noise).pow(2).mean(1)
    expected = targets.eps_weight(sched.snr[t], target, weighting, 5.0) * eps_err
    assert torch.allclose(loss, expected, rtol=1e-9, atol=1e-12)


def test_eps_uniform_is_l_simple_with_the_same_draws(sched):
    model = md.MLPDenoiser(dim=2, hidden=16, num_layers=2, num_classes=3)
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    y = torch.arange(32) % 3
    a = md.eps_loss(model, x0, sched, y, p_uncond=0.3, generator=torch.Generator().manual_seed(2))
    b = targets.target_loss(model, x0, sched, y, p_uncond=0.3, generator=torch.Generator().manual_seed(2))
    assert float(a.detach()) == float(b.detach())


def test_min_snr_weights(sched):
    """Hang et al.: weight min(SNR, gamma) on the x_0 error. In eps units: 1 where SNR <= gamma, gamma / SNR
    above; the same effective weight whichever target the network predicts."""
    snr = sched.snr
    for target in targets.TARGETS:
        w = targets.eps_weight(snr, target, "min_snr", 5.0)
        assert torch.allclose(w, (5.0 / snr).clamp(max=1.0), rtol=1e-12)
    assert torch.allclose(targets.loss_weight(snr, "x0", "min_snr", 5.0), snr.clamp(max=5.0))
    assert torch.allclose(targets.eps_weight(snr, "x0", "uniform"), 1 / snr)                 # x0 MSE = eps MSE / SNR
    assert torch.allclose(targets.eps_weight(snr, "v", "uniform"), 1 + 1 / snr)              # v MSE, (SNR+1)/SNR
    high_noise = snr < 5.0
    assert 0 < int(high_noise.sum()) < T and bool((targets.eps_weight(snr, "eps", "min_snr")[high_noise] == 1).all())


@pytest.mark.parametrize("target", targets.TARGETS)
def test_a_network_of_any_target_samples_as_the_same_eps_model(sched, target):
    pts = md.toy_2d("8gaussians", 100, generator=torch.Generator().manual_seed(3)).double()
    oracle = md.OracleDenoiser(pts, sched)
    as_eps = targets.PredictionAsEps(exact_prediction(oracle, sched, target), sched, target)
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a = md.ddim_sample(oracle, x_T.shape, sched, steps=20, x_T=x_T)
    b = md.ddim_sample(as_eps, x_T.shape, sched, steps=20, x_T=x_T)
    assert float((a - b).abs().max()) < 1e-8


def test_fractional_timesteps_invert_sigma_to_t(sched):
    """Chapter 11's solvers call the model between the levels: alpha_bar there is the level of sigma_to_t."""
    for sigma in (0.02, 0.5, 3.3, 80.0):
        t = solvers.sigma_to_t(sigma, sched)
        a = targets.alpha_bar_at(sched, torch.tensor([t], dtype=torch.float64), torch.zeros(1, 2))
        assert math.isclose(float(a), 1 / (1 + sigma**2), rel_tol=1e-6)
    ints = torch.tensor([0, 1, 500, 999])
    assert torch.equal(targets.alpha_bar_at(sched, ints, torch.zeros(4, dtype=torch.float64)).flatten(),
                       sched.alpha_bars[ints])


@pytest.mark.parametrize("kwargs, match", [
    (dict(target="score"), "target must be one of 'eps', 'x0', 'v'"),
    (dict(weighting="p2"), "weighting must be one of 'uniform', 'min_snr'"),
    (dict(gamma=0.0), "gamma must be"),
])
def test_bad_arguments_name_themselves(sched, kwargs, match):
    model = md.MLPDenoiser(dim=2, hidden=8, num_layers=1)
    with pytest.raises(ValueError, match=match):
        targets.target_loss(model, torch.zeros(4, 2), sched, **kwargs)
    with pytest.raises(ValueError, match="target must be"):
        targets.PredictionAsEps(model, sched, "score")


def test_the_parameterisation_benchmark_trains_every_configuration_and_resumes(tmp_path):
    bench = benchmark_module("parameterisations")
    out = tmp_path / "p.json"
    args = ["--steps", "2", "--seeds", "0", "--out", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert sorted(res["runs"]) == sorted(f"{t}, {w}" for t in targets.TARGETS for w in targets.WEIGHTINGS)
    assert all(set(r) == {"0"} for r in res["runs"].values()) and res["summary"]["x0, min_snr"]["seeds"] == 1
    values = res["runs"]["eps, uniform"]["0"]
    assert 0 <= values["precision"] <= 1 and values["eps_error, t < 100"] > 0
    # the same seed trains the same network: its eps error is recomputed (up to the float32 summation order of
    # another thread count)
    model = bench.train("eps", "uniform", 0, 2, md.toy_2d("8gaussians", 4000, generator=torch.Generator().manual_seed(3)),
                        md.NoiseSchedule.linear(T=1000))
    again = bench.measure(model, md.toy_2d("8gaussians", 4000, generator=torch.Generator().manual_seed(3)),
                          md.NoiseSchedule.linear(T=1000))
    assert math.isclose(again["eps_error, t < 100"], values["eps_error, t < 100"], rel_tol=1e-4)
    assert bench.main(args) == 0 and json.loads(out.read_text())["runs"] == res["runs"]        # resumes: no new work
