"""The fast solvers of chapter 11 (minidiff.solvers): EDM's sigma schedule, the eps-model as a denoiser, Euler =
DDIM on DDIM's sigmas, the order of convergence of each solver measured against exact solutions, parity with
diffusers' Euler, Heun and DPM-Solver++(2M) schedulers, and clear errors."""
import json
import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

import minidiff as md
from minidiff import solvers as sv
from benchmark_scripts import benchmark_module
from tolerances import F32_EPS

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000
LINEAR = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


@pytest.fixture(scope="module")
def sched():
    return md.NoiseSchedule.linear(T=T)


# ------------------------------------------------------------------------------------------ sigmas
def test_karras_sigmas_follow_eq_5():
    s = sv.karras_sigmas(18, 0.002, 80.0, rho=7.0)
    assert s.dtype == torch.float64 and s.shape == (19,) and float(s[-1]) == 0.0
    assert math.isclose(float(s[0]), 80.0, rel_tol=1e-14) and math.isclose(float(s[-2]), 0.002, rel_tol=1e-12)
    assert bool((s[1:] < s[:-1]).all())
    inv = s[:-1] ** (1 / 7)                                        # evenly spaced in sigma^(1/rho)
    assert torch.allclose(inv.diff(), inv.diff()[0].expand(17), rtol=1e-12, atol=0)
    even = sv.karras_sigmas(5, 1.0, 5.0, rho=1.0)                # rho = 1: evenly spaced in sigma
    assert torch.allclose(even, torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0], dtype=torch.float64), atol=1e-13)
    assert torch.allclose(sv.karras_sigmas(1, 0.5, 3.0), torch.tensor([3.0, 0.0], dtype=torch.float64), rtol=1e-14)


def test_schedule_sigmas_and_sigma_to_t(sched):
    s = sv.schedule_sigmas(sched)
    a = sched.alpha_bars.double()
    assert torch.allclose(1 / (1 + s**2), a, rtol=1e-13, atol=0)           # alpha_bar = 1 / (1 + sigma^2)
    for t in (0, 1, 17, 500, 998, 999):
        assert sv.sigma_to_t(float(s[t]), sched) == float(t)                # integers exactly at the levels
    mid = math.exp((math.log(float(s[10])) + math.log(float(s[11]))) / 2)   # halfway in log sigma
    assert math.isclose(sv.sigma_to_t(mid, sched), 10.5, abs_tol=1e-9)
    ts = [sv.sigma_to_t(float(x), sched) for x in torch.logspace(math.log10(float(s[0])), math.log10(float(s[-1])), 50,
                                                                dtype=torch.float64)]
    assert all(b > a for a, b in zip(ts, ts[1:]))                           # increasing with sigma
    assert sv.sigma_to_t(float(torch.tensor(float(s[-1])).float()), sched) == 999.0   # float32 copy of the end


def test_eps_denoiser_is_x_bar_minus_sigma_eps(sched):
    pts = md.toy_2d("moons", 100, generator=torch.Generator().manual_seed(0)).double()
    oracle = md.OracleDenoiser(pts, sched)
    s = sv.schedule_sigmas(sched)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t in (0, 300, 999):
        sigma = float(s[t])
        x_vp = x / math.sqrt(1 + sigma**2)
        expected = md.x0_from_eps(x_vp, oracle(x_vp, torch.full((50,), t)), float(sched.alpha_bars[t]))   # VP x0_hat
        assert torch.allclose(sv.EpsDenoiser(oracle, sched)(x, sigma), expected, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------ Euler = DDIM
@pytest.mark.parametrize("steps", [1, 4, 10, 50])
def test_euler_on_ddims_sigmas_is_ddim(sched, steps):
    """Chapter 9's identity: DDIM (eta = 0) is Euler's method in sigma, at DDIM's sigmas, exactly."""
    pts = md.toy_2d("8gaussians", 200, generator=torch.Generator().manual_seed(0)).double()
    oracle = md.OracleDenoiser(pts, sched)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ts = torch.tensor(md.ddim_timesteps(T, steps, "trailing"))
    sigmas = sv.ddim_sigmas(sched, steps)
    assert torch.equal(sigmas[:-1], sv.schedule_sigmas(sched)[ts]) and sigmas[-1] == 0 and len(sigmas) == steps + 1
    ddim = md.ddim_sample(oracle, x_T.shape, sched, steps=steps, eta=0.0, x_T=x_T)
    euler = md.solver_sample(oracle, x_T.shape, sched, solver="euler", sigmas=sigmas, x_T=x_T)
    assert float((ddim - euler).abs().max()) < 1e-10 * max(1.0, float(ddim.abs().max()))


# ------------------------------------------------------------------------------------------ order of convergence
def point_set_denoiser(points):
    """The exact x0_hat of a point set at any sigma: weights N(x; p_n, sigma^2 I), the VE form of the oracle."""
    def denoise(x, sigma):
        logits = -(x[:, None, :] - points[None]).pow(2).sum(-1) / (2 * sigma**2)      # (B, N)
        return torch.softmax(logits, dim=1) @ points
    return denoise


def observed_orders(solver, denoiser, x, exact, sigmas_for):
    errors = [float((solver(denoiser, x, sigmas_for(S)) - exact).pow(2).mean().sqrt()) for S in (8, 16, 32, 64)]
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_order_on_gaussian_data(name, order):
    """For data N(0, s^2 I), D = x s^2 / (s^2 + sigma^2) and the ODE's solution is x(sigma) ∝ sqrt(s^2 + sigma^2)."""
    s2, s_max, s_min = 0.25, 80.0, 0.002
    x = 80.0 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = x * math.sqrt(s2 / (s2 + s_max**2))
    orders = observed_orders(sv.SOLVERS[name], lambda x, sigma: x * s2 / (s2 + sigma**2), x, exact,
                             lambda S: sv.karras_sigmas(S, s_min, s_max))
    assert abs(orders[-1] - order) < 0.25, orders                 # the slope at the finest pair of grids


@pytest.mark.parametrize("name, order", [("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_order_with_the_oracle_of_a_point_set(name, order):
    """The exact denoiser of 64 points; the reference is Heun with 2048 steps. sigma runs down to 0.3, where the
    posterior is still spread over several points (the paths bend sharply at smaller sigma)."""
    pts = md.toy_2d("8gaussians", 64, generator=torch.Generator().manual_seed(4)).double()
    denoiser = point_set_denoiser(pts)
    x = 10.0 * torch.randn(500, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grid = lambda S: sv.karras_sigmas(S, 0.3, 10.0)[:-1]          # stop at sigma_min: no step to 0
    exact = sv.sample_heun(denoiser, x, grid(2048))
    orders = observed_orders(sv.SOLVERS[name], denoiser, x, exact, grid)
    assert abs(orders[-1] - order) < 0.3, orders


def test_at_equal_calls_dpm_beats_euler_and_heun_needs_small_steps():
    """Gaussian data, EDM's grid from 80 to 0.002: at every number of calls DPM-Solver++(2M) is more accurate than
    Euler; Heun (2 S - 1 calls) is behind Euler at 9 calls and ahead from 39 on (its second order pays only once
    the steps are small enough)."""
    s2 = 0.25
    x = 80.0 * torch.randn(500, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    exact = x * math.sqrt(s2 / (s2 + 80.0**2))
    D = lambda x, sigma: x * s2 / (s2 + sigma**2)                 # noqa: E731
    err = lambda name, S: float((sv.SOLVERS[name](D, x, sv.karras_sigmas(S, 0.002, 80.0)) - exact).pow(2).mean().sqrt())
    assert sv.nfe("heun", 10) == 19 and sv.nfe("euler", 19) == 19 and sv.nfe("dpmpp_2m", 19) == 19
    for calls in (5, 9, 19, 39):
        assert err("dpmpp_2m", calls) < err("euler", calls) / 1.5
    assert err("heun", 5) > err("euler", 9)
    assert err("heun", 20) < err("euler", 39) / 1.5 and err("heun", 40) < err("euler", 79) / 3


# ------------------------------------------------------------------------------------------ parity with diffusers
def smooth_eps(sched):
    """A smooth eps-model defined at every fractional timestep: Gaussian data's exact eps plus a nonlinear term,
    alpha_bar interpolated linearly between the schedule's levels."""
    ab = sched.alpha_bars.double()

    def model(x, t, y=None):
        t = t.double()
        lo = t.floor().long().clamp(max=T - 2)
        a = ((1 - (t - lo)) * ab[lo] + (t - lo) * ab[lo + 1]).to(x.dtype).view(-1, 1)
        return (1 - a).sqrt() * x / (0.25 * a + 1 - a) + 0.1 * (1 - a).sqrt() * torch.sin(3 * x)
    return model


def diffusers_scheduler(cls, sched, steps, **kw):
    s = cls(**LINEAR, use_karras_sigmas=True, **kw)
    s.alphas_cumprod = sched.alpha_bars.clone()        # our float64 table, as tests/test_parity_diffusers.py does
    s.set_timesteps(steps)
    return s


@pytest.mark.parametrize("steps", [5, 10, 25])
def test_karras_sigmas_and_times_match_diffusers(sched, steps):
    theirs = diffusers_scheduler(EulerDiscreteScheduler, sched, steps)
    s = sv.schedule_sigmas(sched)
    ours = sv.karras_sigmas(steps, float(s[0]), float(s[-1]))
    assert torch.allclose(ours, theirs.sigmas.double(), rtol=2 * F32_EPS, atol=0)     # theirs: float32 at the end
    ours_t = torch.tensor([sv.sigma_to_t(float(x), sched) for x in ours[:-1]], dtype=torch.float64)
    assert torch.allclose(ours_t, theirs.timesteps.double(), rtol=2 * F32_EPS, atol=1e-4)


@pytest.mark.parametrize("name, cls", [("euler", EulerDiscreteScheduler), ("heun", HeunDiscreteScheduler)])
@pytest.mark.parametrize("steps", [5, 10, 25])
def test_euler_and_heun_steps_match_diffusers(sched, name, cls, steps):
    """Step by step from diffusers' own state: our step (float64) equals theirs (float32) to a few float32
    roundings of the values involved (the state and sigma times eps, both of the state's size)."""
    model = smooth_eps(sched)
    s = diffusers_scheduler(cls, sched, steps)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(7)) * s.init_noise_sigma
    sigmas = sv.karras_sigmas(steps, float(sv.schedule_sigmas(sched)[0]), float(sv.schedule_sigmas(sched)[-1]))
    calls = iter(s.timesteps)
    for i in range(steps):
        ours = sv.SOLVERS[name](sv.EpsDenoiser(model, sched), x.double(), sigmas[i:i + 2])
        theirs = x
        for _ in range(2 if name == "heun" and i < steps - 1 else 1):         # Heun: two calls, the last step one
            t = next(calls)
            eps = model(s.scale_model_input(theirs, t), t.expand(64))
            theirs = s.step(eps, t, theirs).prev_sample
        tol = 16 * F32_EPS * (float(x.abs().max()) + float(theirs.abs().max()))
        assert float((ours - theirs.double()).abs().max()) < tol, (i, float((ours - theirs.double()).abs().max()), tol)
        x = theirs


@pytest.mark.parametrize("steps", [5, 10, 25])
def test_dpmpp_2m_matches_diffusers(sched, steps):
    """diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, Karras sigmas) rounds its timesteps to
    integers and keeps the exact sigmas: EpsDenoiser(quantize=True). Its state is the VP x, of size ~3; allow 32
    float32 roundings of it per step."""
    model = smooth_eps(sched)
    s = diffusers_scheduler(DPMSolverMultistepScheduler, sched, steps, algorithm_type="dpmsolver++", solver_order=2)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(8))
    x = x_T.clone()
    for t in s.timesteps:
        x = s.step(model(s.scale_model_input(x, t), t.expand(64)), t, x).prev_sample
    sigmas = s.sigmas.double()
    ours = sv.sample_dpmpp_2m(sv.EpsDenoiser(model, sched, quantize=True),
                              x_T.double() * math.sqrt(1 + float(sigmas[0]) ** 2), sigmas)
    tol = steps * 32 * F32_EPS * float(x_T.abs().max() + 1)
    assert float((ours - x.double()).abs().max()) < tol


def test_solver_sample_runs_the_shipped_model_and_guides():
    model, sched, _ = md.load_model(md.pretrained("fashion-mnist-cond.pt"), device="cpu")
    y = torch.arange(4)
    x_T = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    calls = []
    x = md.solver_sample(model, x_T.shape, sched, solver="heun", steps=3, y=y, guidance_scale=3.0, x_T=x_T,
                         callback=lambda i, sigma, x, x0: calls.append(sigma))
    assert x.shape == (4, 1, 28, 28) and bool(torch.isfinite(x).all()) and len(calls) == 3
    classes = md.load_classifier()(md.solver_sample(model, (10, 1, 28, 28), sched, steps=10, y=torch.arange(10),
                                                    guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
                                   .clamp(-1, 1)).argmax(1)
    assert int((classes == torch.arange(10)).sum()) >= 8                 # DPM-Solver++ at 10 calls follows the label


# ------------------------------------------------------------------------------------------ the NFE benchmark
def test_benchmark_cells_are_the_solvers_they_name_and_resume(tmp_path):
    bench = benchmark_module("solvers")
    out = tmp_path / "solvers.json"
    args = ["--n", "20", "--nfe", "3", "--batch-size", "10", "--out", str(out)]
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert res["command"] == "python benchmarks/solvers.py " + " ".join(args)
    assert sorted(res["cells"]) == ["DDIM, 3", "DPM-Solver++(2M), 3", "DPM-Solver++(2M), DDIM's levels, 3", "Euler, 3",
                                    "Heun, 3"]
    assert res["cells"]["Heun, 3"]["steps"] == 2 and res["cells"]["Heun, 3"]["nfe"] == 3
    assert all(c["nfe"] <= c["nfe_budget"] and c["fd_cls"] > 0 and c["fd_cls_sd"] > 0 for c in res["cells"].values())
    # Recompute one cell in one batch instead of two: DPM-Solver++(2M) with 3 steps from the benchmark's noise.
    model, sched, _ = md.load_model(md.pretrained("fashion-mnist-cond.pt"), device="cpu")
    labels = torch.arange(20) % 10
    x = md.solver_sample(model, (20, 1, 28, 28), sched, solver="dpmpp_2m", steps=3, y=labels, guidance_scale=3.0,
                         x_T=torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    # batching changes the float32 summation order only (~1e-6 relative): the classifier's verdicts stay
    agreement = md.metrics.class_agreement(x.clamp(-1, 1), labels, md.load_classifier())
    assert agreement == res["cells"]["DPM-Solver++(2M), 3"]["class_agreement"]
    assert bench.main(args) == 0 and json.loads(out.read_text())["cells"] == res["cells"]    # resumes: no new work


def test_the_shipped_nfe_table_is_complete_and_names_its_model():
    """The table chapter 11 quotes: every sampler at NFE 5, 10, 20, 50 on the shipped model, within its budget."""
    res = json.loads(md.pretrained("fashion-mnist-cond.solvers.json").read_text())
    assert res["checkpoint"]["sha256"] == md.pretrained.SHA256["fashion-mnist-cond.pt"]
    bench = benchmark_module("solvers")
    assert sorted(res["cells"]) == sorted(f"{name}, {n}" for name in bench.SAMPLERS for n in (5, 10, 20, 50))
    for key, c in res["cells"].items():
        assert c["steps"] == bench.steps_for(c["sampler"], c["nfe_budget"]) and c["nfe"] <= c["nfe_budget"], key
        assert c["fd_cls"] > res["floor"] and c["fd_cls_sd"] > 0 and 0 <= c["class_agreement"] <= 1, key
    assert res["n"] == 500 and res["guidance"] == 3.0


# ------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="rk4"), "solver must be one of"),
    (dict(steps=0), "steps must be"),
    (dict(rho=0.0), "rho must be"),
    (dict(sigmas=[1.0, 2.0, 0.0]), "sigmas must decrease"),
    (dict(sigmas=[1.0, 0.0, -1.0]), "sigmas must decrease|sigmas must be positive"),
    (dict(sigmas=[500.0, 1.0, 0.0]), "sigmas\\[0\\] must be at most"),
    (dict(sigmas=[1.0]), "at least 2"),
])
def test_bad_arguments_name_themselves(sched, kwargs, match):
    oracle = md.OracleDenoiser(torch.zeros(3, 2, dtype=torch.float64), sched)
    with pytest.raises(ValueError, match=match):
        md.solver_sample(oracle, (4, 2), sched, x_T=torch.zeros(4, 2, dtype=torch.float64), **kwargs)


def test_sigma_outside_the_levels_is_an_error(sched):
    with pytest.raises(ValueError, match="sigma must lie in"):
        sv.sigma_to_t(0.001, sched)
    with pytest.raises(ValueError, match="sigma must lie in"):
        sv.sigma_to_t(200.0, sched)
    with pytest.raises(TypeError, match="denoiser must be callable"):
        sv.sample_euler(None, torch.zeros(2, 2), sv.karras_sigmas(2, 0.1, 1.0))
    with pytest.raises(TypeError, match="quantize must be a bool"):
        sv.EpsDenoiser(lambda x, t, y=None: x, sched, quantize=1)
    assert sv.nfe("heun", 1) == 1 and sv.nfe("dpmpp_2m", 7) == 7


# ------------------------------------------------------------------------------------------ chapter 11's identities
def test_heun_is_euler_plus_its_correction_weight_times_the_change_of_d(sched):
    """eq-heun-correction: x_next = x_euler + (e^h - 1) / 2 (D(x_euler; sigma') - D(x; sigma)), h = log(sigma/sigma')."""
    pts = md.toy_2d("moons", 80, generator=torch.Generator().manual_seed(7)).double()
    D = point_set_denoiser(pts)
    x = 3.0 * torch.randn(100, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for sigma, sigma_next in ((10.0, 4.0), (5.911, 0.491), (0.8, 0.7)):
        x_euler = x + (sigma_next - sigma) * (x - D(x, sigma)) / sigma
        heun = sv.sample_heun(D, x, torch.tensor([sigma, sigma_next], dtype=torch.float64))
        h = math.log(sigma / sigma_next)
        expected = x_euler + math.expm1(h) / 2 * (D(x_euler, sigma_next) - D(x, sigma))
        assert torch.allclose(heun, expected, rtol=1e-12, atol=1e-12)


def test_the_point_set_denoiser_is_the_oracle_in_sigma(sched):
    """eq-point-set-denoiser (the softmax-weighted mean at noise sigma) is chapter 3's oracle read through
    EpsDenoiser at the schedule's levels."""
    pts = md.toy_2d("8gaussians", 64, generator=torch.Generator().manual_seed(4)).double()
    oracle = sv.EpsDenoiser(md.OracleDenoiser(pts, sched), sched)
    x = 2.0 * torch.randn(50, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for t in (0, 100, 500, 999):
        sigma = float(sv.schedule_sigmas(sched)[t])
        assert torch.allclose(point_set_denoiser(pts)(x * max(1.0, sigma), sigma), oracle(x * max(1.0, sigma), sigma),
                              rtol=1e-9, atol=1e-9)


def test_dpm_solver_first_order_step_is_eulers(sched):
    """Exercise 3 of chapter 11: with D_hat = D(x; sigma), eq-dpm-exact is Euler's step, for any denoiser."""
    D = lambda x, sigma: torch.tanh(x) * sigma / (1 + sigma)                             # noqa: E731
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    sigmas = torch.tensor([20.0, 3.0, 0.0], dtype=torch.float64)            # 2 steps: no extrapolation is used
    assert torch.allclose(sv.sample_dpmpp_2m(D, x, sigmas), sv.sample_euler(D, x, sigmas), rtol=1e-12, atol=1e-12)
