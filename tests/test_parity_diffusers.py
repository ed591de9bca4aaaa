"""Parity with an independent reference: diffusers 0.42.1's schedulers, built locally (no hub access).

Our ``alpha_bars[i]`` is diffusers' ``alphas_cumprod[i]`` (same 0-based indexing), ``variance="beta_tilde"`` is
``variance_type="fixed_small"`` and ``variance="beta"`` is ``"fixed_large"``.

diffusers builds its tables in float32, we build ours in float64. Schedules are therefore compared at float32
precision; to compare the *step formulas* tightly, the scheduler's ``alphas_cumprod`` is replaced by our
float64 table (``use_our_tables``), which is all the steps read.

Where we differ on purpose, the test says so and why:
* DDIM's previous timestep. diffusers' ``DDIMScheduler.step`` uses ``t - T // steps``, right only when the
  spacing is uniform ("leading", or "trailing" with steps dividing T). For "linspace" it is wrong (diffusers
  issues #12633 and #11347), and for "trailing" with other step counts too (issue #9261). We step to the next
  timestep of the sequence.
* "trailing" timesteps when ``np.arange`` overshoots: for 62 of the step counts 1..1000 with T = 1000
  (e.g. 61), diffusers returns one extra timestep, -1, which then indexes ``alphas_cumprod[-1]``.
* Exact ties (e.g. 499.5 for "linspace", T = 1000, steps = 61): we round half to even on the exact value; in
  diffusers the float rounding of ``np.linspace``/``np.arange`` decides, so a few timesteps differ by one.
* Zero terminal SNR: at alpha_bar = 0 diffusers divides by 0; we guard x0_from_eps and stay finite.
"""
import diffusers
import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, DDPMScheduler

import minidiff as md
from tolerances import F32_BETA_RTOL, F32_EPS, assert_within, cumprod_rel_error

pytestmark = pytest.mark.usefixtures("one_thread")

T = 1000
LINEAR = dict(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def test_reference_version():
    assert diffusers.__version__ == "0.42.1"


def use_our_tables(scheduler, sched: md.NoiseSchedule):
    """Make the scheduler read our float64 alpha_bar table (its steps read nothing else)."""
    scheduler.alphas_cumprod = sched.alpha_bars.clone()
    return scheduler


def ddim_scheduler(spacing: str, steps: int, **kw) -> DDIMScheduler:
    s = DDIMScheduler(**LINEAR, timestep_spacing=spacing, set_alpha_to_one=True, clip_sample=False, **kw)
    s.set_timesteps(steps)
    return s


@pytest.fixture
def oracle(linear, points2d):
    points, labels = points2d
    return md.OracleDenoiser(points, linear, labels=labels)


# ------------------------------------------------------------------------------------------ schedules
def zero_snr_beta_error(base: md.NoiseSchedule) -> torch.Tensor:
    """How far diffusers' float32 zero-SNR betas may lie from ours, per index (absolute).

    diffusers rescales in float32: s_t = sqrt(ab_t) - sqrt(ab_T) (times a constant), beta_t = 1 - (s_t / s_{t-1})^2.
    The subtraction cancels near the end: a rounding of sqrt(ab_t) or sqrt(ab_T) is magnified by
    amp_t = sqrt(ab_T) / s_t (about 50 and 100 at t = T - 3, T - 2). Allow 8 roundings (the sqrt, the subtraction
    and the square for s_t and s_{t-1}, the division, and the float32 table's own error, whose part common to t and
    t - 1 cancels down to (T - t) |amp_t - amp_{t-1}| eps32 <= 0.7 (1 + amp_t + amp_{t-1}) eps32 here), each of
    eps32 times 1 + amp_t + amp_{t-1}. The last beta is 1 exactly on both sides.
    """
    q = base.alpha_bars.sqrt()
    amp = q[-1] / (q - q[-1])
    err = 8 * F32_EPS * (1 + amp + torch.cat([amp.new_zeros(1), amp[:-1]]))
    err[-1] = 0.0
    return err


@pytest.mark.parametrize("ours,theirs", [
    (lambda: md.NoiseSchedule.linear(T=T), dict(beta_schedule="linear")),
    (lambda: md.NoiseSchedule.cosine(T=T), dict(beta_schedule="squaredcos_cap_v2")),
    (lambda: md.NoiseSchedule.sigmoid(T=T), dict(beta_schedule="sigmoid")),
    (lambda: md.NoiseSchedule.linear(T=T).rescale_zero_terminal_snr(),
     dict(beta_schedule="linear", rescale_betas_zero_snr=True)),
], ids=["linear", "squaredcos_cap_v2", "sigmoid", "zero_snr"])
def test_alpha_bar_is_alphas_cumprod(ours, theirs):
    sched = ours()
    ref = DDPMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, **theirs)
    assert ref.alphas_cumprod.dtype == torch.float32                 # their precision bounds the tolerance
    if "rescale_betas_zero_snr" in theirs:
        # diffusers rescales in float32, where beta = 1 - ab_t / ab_{t-1} cancels: a bound per index
        beta_err = zero_snr_beta_error(md.NoiseSchedule.linear(T=T))
        assert_within(ref.betas, sched.betas, beta_err, "zero-SNR betas")
    else:
        beta_err = F32_BETA_RTOL * sched.betas
        torch.testing.assert_close(sched.betas, ref.betas.double(), rtol=F32_BETA_RTOL, atol=0)
    # alphas_cumprod: float32 products of those betas' alphas, each factor off by its rounding and its beta's error
    rel = cumprod_rel_error(sched.betas, beta_err)
    assert_within(ref.alphas_cumprod, sched.alpha_bars,
                  torch.where(sched.alpha_bars > 0, rel * sched.alpha_bars, 0.0), "alphas_cumprod")


def test_q_sample_is_add_noise(linear, gen):
    x0 = torch.randn(6, 3, 4, 4, generator=gen(0))
    noise = torch.randn(6, 3, 4, 4, generator=gen(1))
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    ref = DDPMScheduler(**LINEAR)
    # float32: the two alpha_bar tables differ by d_ab (their product's error plus our rounding of the float64
    # value), which sqrt(1 - ab) magnifies by 1 / (2 sqrt(1 - ab)) (50 at t = 0); then a few roundings of the terms.
    ab = linear.alpha_bars[t].view(-1, 1, 1, 1)
    d_ab = ab * (cumprod_rel_error(linear.betas, F32_BETA_RTOL * linear.betas)[t].view(-1, 1, 1, 1) + F32_EPS)
    bound = (d_ab / (2 * ab.sqrt()) * x0.abs() + d_ab / (2 * (1 - ab).sqrt()) * noise.abs()
             + 4 * F32_EPS * (ab.sqrt() * x0.abs() + (1 - ab).sqrt() * noise.abs()))
    assert_within(md.q_sample(x0, t, linear, noise=noise), ref.add_noise(x0, noise, t), bound, "float32 add_noise")
    x0, noise = x0.double(), noise.double()
    use_our_tables(ref, linear)
    # float64, the same formula on the same table: a few ulps of values <= 4
    torch.testing.assert_close(md.q_sample(x0, t, linear, noise=noise), ref.add_noise(x0, noise, t),
                               rtol=1e-13, atol=1e-13)


# ------------------------------------------------------------------------------------------ DDPM
@pytest.mark.parametrize("variance,variance_type", [("beta_tilde", "fixed_small"), ("beta", "fixed_large")])
def test_ddpm_step(linear, gen, variance, variance_type):
    """One step against DDPMScheduler.step. diffusers draws the step's noise inside step() as
    torch.randn(model_output.shape, generator=g, dtype=model_output.dtype) (randn_tensor on CPU), only for t > 0;
    a generator with the same seed hands us the identical tensor."""
    ref = use_our_tables(DDPMScheduler(**LINEAR, variance_type=variance_type, clip_sample=False), linear)
    x_t = torch.randn(4, 2, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(4, 2, 3, generator=gen(1), dtype=torch.float64)
    for t in (0, 1, 10, 500, 999):
        out = ref.step(eps, t, x_t, generator=gen(100 + t))
        noise = torch.randn(x_t.shape, generator=gen(100 + t), dtype=torch.float64) if t > 0 else None
        x_prev, x0_hat = md.ddpm_step(x_t, eps, t, linear, variance=variance, noise=noise)
        # float64, elementwise. x0_hat is the same formula: a few ulps. For x_prev diffusers recomputes
        # beta_t = 1 - ab_t / ab_{t-1}, which cancels to a relative error ~eps64 / beta_t (2e-12 at t = 0, 1) in a
        # coefficient ~0.5 of |x0_hat| <= 2.3: up to ~5e-12.
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-11, atol=1e-11)


def test_ddpm_step_native_float32(linear, gen):
    """With diffusers' own float32 tables and arithmetic. Its step recomputes beta_t = 1 - ab_t / ab_{t-1} in
    float32, which cancels at small t (beta_2 ~ 1.2e-4 gets a relative error ~5e-4), hence the looser
    tolerance at t = 1; we read beta_t from the float64 table."""
    ref = DDPMScheduler(**LINEAR, clip_sample=False)
    x_t = torch.randn(8, 5, generator=gen(0))
    eps = torch.randn(8, 5, generator=gen(1))
    # t = 1: in float32 1 - ab_1 (2.2e-4) and beta_2 = 1 - ab_1 / ab_0 (1.2e-4) cancel, each off by ~eps32/4 = 3e-8:
    # ~4e-4 relative together in the x0 coefficient (~0.5), so ~2e-4 |x0_hat|, inside 1e-3 (1 + |x_prev|).
    # t = 500, 999: beta_t >= 0.01, so the cancellation costs <= 2 eps32 / 0.01 = 2.4e-5 of the x0 term (<= 0.07);
    # their table's error (<= 1.4e-4 relative at t = 999, ~1e-6 typical) moves x0_hat (<= 500) by half that, times
    # the x0 coefficient 1.3e-4: <= 5e-6 in the worst case, inside 1e-5.
    for t, tol in ((1, 1e-3), (500, 1e-5), (999, 1e-5)):
        out = ref.step(eps, t, x_t, generator=gen(t))
        x_prev, _ = md.ddpm_step(x_t, eps, t, linear, noise=torch.randn(8, 5, generator=gen(t)))
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=tol, atol=tol)


def test_ddpm_full_loop_with_shared_seed(small, points2d, gen):
    """A whole stochastic DDPM run: x_T and every step's noise come from one generator in the same order."""
    points, _ = points2d
    oracle = md.OracleDenoiser(points, small)
    ref = use_our_tables(DDPMScheduler(num_train_timesteps=small.T, beta_start=5e-4, beta_end=0.1,
                                       clip_sample=False), small)
    g = gen(7)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    for t in ref.timesteps:
        x = ref.step(oracle(x, torch.full((16,), int(t))), int(t), x, generator=g).prev_sample
    ours = md.ddpm_sample(oracle, (16, 2), small, generator=gen(7), dtype=torch.float64)
    # float64: each of the 200 steps differs by <= ~eps64 / beta_t (beta >= 5e-4) relative, as in test_ddpm_step
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------ DDIM
@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
@pytest.mark.parametrize("steps", [1, 2, 5, 7, 10, 13, 20, 25, 50, 100, 250, 999, 1000])
def test_ddim_timesteps_are_diffusers(spacing, steps):
    assert md.ddim_timesteps(T, steps, spacing) == ddim_scheduler(spacing, steps).timesteps.tolist()


def test_trailing_overshoot_in_diffusers():
    """Deliberate difference: np.arange(1000, 0, -1000/61) has 62 entries, so diffusers' "trailing" list gets a
    62nd timestep, -1, which indexes alphas_cumprod[-1] (pure noise) at the end. Ours has 61 valid steps."""
    theirs = ddim_scheduler("trailing", 61).timesteps.tolist()
    ours = md.ddim_timesteps(T, 61, "trailing")
    assert len(theirs) == 62 and theirs[-1] == -1
    assert len(ours) == 61 and ours == theirs[:-1] and min(ours) >= 0


def test_exact_ties_round_half_to_even():
    """Deliberate difference: 999 * 30 / 60 = 499.5 exactly. We round half to even (500); in diffusers
    np.linspace yields 499.49999999999994 and rounds to 499. Every other timestep agrees."""
    theirs = ddim_scheduler("linspace", 61).timesteps.tolist()
    ours = md.ddim_timesteps(T, 61, "linspace")
    assert [(a, b) for a, b in zip(ours, theirs) if a != b] == [(500, 499)]


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("spacing", ["trailing", "leading"])
def test_ddim_steps(linear, gen, spacing, eta):
    """Every step of a 50-step schedule (steps divide T, so diffusers' t - T // steps is our next timestep)."""
    ref = use_our_tables(ddim_scheduler(spacing, 50), linear)
    ts = md.ddim_timesteps(T, 50, spacing)
    x_t = torch.randn(3, 4, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    z = torch.randn(3, 4, generator=gen(2), dtype=torch.float64)
    for t, t_prev in zip(ts, ts[1:] + [-1]):
        assert t_prev == max(t - T // 50, -1)
        out = ref.step(eps, t, x_t, eta=eta, variance_noise=z if eta > 0 else None)
        x_prev, x0_hat = md.ddim_step(x_t, eps, t, t_prev, linear, eta=eta, noise=z)
        # float64, the same formulas on the same table (x0_hat reaches 80 at t = 999): a few ulps
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spacing", ["trailing", "leading"])
@pytest.mark.parametrize("steps", [10, 50])
def test_full_deterministic_ddim_loop(linear, oracle, gen, spacing, steps):
    """diffusers' loop (scheduler.timesteps, step(eta=0)) against ddim_sample(eta=0) from the same x_T: in
    float64 on our tables they agree far below 1e-5; with diffusers' own float32 tables and arithmetic to
    float32 accuracy (rounding, amplified by 1/sqrt(alpha_bar) in x0_hat over a 10-step ODE, moves a few samples
    by ~1e-4)."""
    x_T = torch.randn(64, 2, generator=gen(3), dtype=torch.float64)
    # float32: ~eps32 |x| rounding and their table's error (<= 1.4e-4 relative at t = 999, see
    # test_alpha_bar_is_alphas_cumprod), magnified by 1 / sqrt(ab) <= 158 in x0_hat, then contracted as the oracle's
    # ODE lands on the points: ~1e-4 at most, so 1e-3. float64: the same, with eps64 and our table: ~1e-13.
    for dtype, tables, tol in ((torch.float64, True, 1e-10), (torch.float32, False, 1e-3)):
        ref = ddim_scheduler(spacing, steps)
        if tables:
            use_our_tables(ref, linear)
        x = x_T.to(dtype)
        for t in ref.timesteps:
            x = ref.step(oracle(x, torch.full((64,), int(t))), int(t), x, eta=0.0).prev_sample
        ours = md.ddim_sample(oracle, (64, 2), linear, steps=steps, spacing=spacing, eta=0.0, x_T=x_T.to(dtype))
        assert ours.dtype == x.dtype == dtype
        torch.testing.assert_close(ours, x, rtol=tol, atol=tol)


def test_ddim_inversion_is_diffusers_inverse_scheduler(linear, gen):
    points = torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    oracle = md.OracleDenoiser(points, linear)
    inv = DDIMInverseScheduler(**LINEAR, timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=False)
    inv.set_timesteps(50)
    use_our_tables(inv, linear)
    x = points[:8]
    for t in inv.timesteps:
        x = inv.step(oracle(x, torch.full((8,), int(t))), int(t), x).prev_sample
    # float64, the same update 50 times: rounding only (~1e-15), far inside 1e-10
    torch.testing.assert_close(md.ddim_invert(oracle, points[:8], linear, steps=50), x, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------ deliberate differences
def test_linspace_previous_timestep_differs_on_purpose(linear, true_eps, gen):
    """diffusers' DDIMScheduler.step takes prev = t - T // steps, which for "linspace" is not the next timestep
    of its own list (diffusers issues #12633, #11347): with T = 1000 and 10 steps the list strides by 111 but the
    step jumps by 100. We step to the next timestep of the list. Shown three ways: the two previous timesteps
    differ; diffusers' step is our step formula aimed at its (wrong) target; and with a perfect model our state
    after each step is exactly x_t at the timestep the next model call is told (the forward marginal), while
    diffusers' state sits at another noise level than the label of its next call."""
    steps = 10
    ref = use_our_tables(ddim_scheduler("linspace", steps), linear)
    ts = md.ddim_timesteps(T, steps, "linspace")
    assert ts == ref.timesteps.tolist()
    ours_prev = ts[1:] + [-1]
    theirs_prev = [max(t - T // steps, -1) for t in ts]
    assert all(a != b for a, b in zip(ours_prev[:-1], theirs_prev[:-1]))

    x0 = torch.randn(4, 3, generator=gen(0), dtype=torch.float64)
    noise = torch.randn(4, 3, generator=gen(1), dtype=torch.float64)
    model = true_eps(x0, linear)
    for t, t_ours, t_theirs in zip(ts[:-1], ours_prev, theirs_prev):
        x = md.q_sample(x0, t, linear, noise=noise)
        eps = model(x, torch.full((4,), t))
        theirs = ref.step(eps, t, x, eta=0.0).prev_sample
        same_formula, _ = md.ddim_step(x, eps, t, t_theirs, linear)
        torch.testing.assert_close(theirs, same_formula, rtol=1e-12, atol=1e-12)     # float64, one step: ulps
        ours, _ = md.ddim_step(x, eps, t, t_ours, linear)
        # float64: x0_hat divides rounding of O(1) values by sqrt(ab_t) >= 0.006; ~1e-13, inside 1e-10
        torch.testing.assert_close(ours, md.q_sample(x0, t_ours, linear, noise=noise), rtol=1e-10, atol=1e-10)
        # diffusers' state sits at another noise level: off by 4e-3 to 6e-2 here, far outside rounding
        assert not torch.allclose(theirs, md.q_sample(x0, t_ours, linear, noise=noise), atol=1e-3)


def test_trailing_previous_timestep_differs_when_steps_do_not_divide_T(linear):
    """The same stride assumption with "trailing" and 13 steps (diffusers issue #9261): 999 -> 922 in the list,
    but diffusers' step goes to 999 - 76 = 923. We follow the list."""
    ts = md.ddim_timesteps(T, 13, "trailing")
    assert ts == ddim_scheduler("trailing", 13).timesteps.tolist()
    assert ts[:2] == [999, 922] and ts[0] - T // 13 == 923


def test_zero_terminal_snr_stays_finite_where_diffusers_divides_by_zero(zero_snr, gen):
    """At alpha_bar_T = 0 an eps prediction says nothing about x_0: diffusers divides by sqrt(0); we floor
    alpha_bar at 2**-24 there (only there), so the first trailing step stays finite."""
    ref = use_our_tables(DDIMScheduler(**LINEAR, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                       set_alpha_to_one=True, clip_sample=False), zero_snr)
    ref.set_timesteps(50)
    x_t = torch.randn(2, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(2, 3, generator=gen(1), dtype=torch.float64)
    out = ref.step(eps, T - 1, x_t, eta=0.0)
    assert not bool(torch.isfinite(out.pred_original_sample).all())
    x_prev, x0_hat = md.ddim_step(x_t, eps, T - 1, T - 1 - T // 50, zero_snr)
    assert bool(torch.isfinite(x_prev).all()) and bool(torch.isfinite(x0_hat).all())
