"""Chapter 5's checker: right DDPM steps pass, and each typical mistake gets its own hint."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex

pytestmark = pytest.mark.usefixtures("one_thread")


def step(x_t, eps, t, sched, noise, *, at=lambda t: t, var="beta_tilde", sqrt_var=True, noise_at_0=False,
         alpha=None, eps_coef=None):
    """A DDPM step by eq. (11) with switches that introduce the typical mistakes."""
    i = at(t)
    b, al, ab = float(sched.betas[i]), float(sched.alphas[i]), float(sched.alpha_bars[i])
    v = float(sched.posterior_variance[i]) if var == "beta_tilde" else b
    a = al if alpha is None else alpha(al, ab)
    c = b / (1 - ab) ** 0.5 if eps_coef is None else eps_coef(b, ab)
    mean = (x_t - c * eps) / a**0.5
    if t == 0 and not noise_at_0:
        return mean
    return mean + (v**0.5 if sqrt_var else v) * noise


def step_via_x0(x_t, eps, t, sched, noise):
    """The same step via x0_hat and the posterior coefficients (DDPM eq. 7 and 15)."""
    x0_hat = md.x0_from_eps(x_t, eps, float(sched.alpha_bars[t]))
    mean = float(sched.posterior_mean_coef_x0[t]) * x0_hat + float(sched.posterior_mean_coef_xt[t]) * x_t
    return mean + float(sched.posterior_variance[t]) ** 0.5 * noise      # beta_tilde = 0 at t = 0: no noise there


def test_right_answers_pass():
    assert ex.check_ddpm_step(step)
    assert ex.check_ddpm_step(step_via_x0)
    assert ex.check_ddpm_step(lambda x_t, eps, t, s, n: md.ddpm_step(x_t, eps, t, s, noise=n)[0])
    assert "t = 0 included" in ex.check_ddpm_step(step).message


def test_the_checker_covers_t0_and_several_schedules():
    seen = []

    def spy(x_t, eps, t, s, n):
        seen.append((s.T, t))
        return step(x_t, eps, t, s, n)

    assert ex.check_ddpm_step(spy)
    assert {t for _, t in seen} >= {0, 1} and len({T for T, _ in seen}) >= 3 and (1000, 999) in seen


def wrapped_beta_tilde(x_t, eps, t, s, n):
    """beta_tilde from alpha_bars[t-1], which wraps around at t = 0."""
    b, al, ab = float(s.betas[t]), float(s.alphas[t]), float(s.alpha_bars[t])
    v = (1 - float(s.alpha_bars[t - 1])) / (1 - ab) * b
    return (x_t - b / (1 - ab) ** 0.5 * eps) / al**0.5 + v**0.5 * n


@pytest.mark.parametrize("wrong, hints", [
    (lambda *a: step(*a, var="beta"), ["sigma^2 = beta_t", "posterior_variance"]),
    (lambda *a: step(*a, var="beta", noise_at_0=True), ["sigma^2 = beta_t"]),
    (lambda *a: step(*a, sqrt_var=False), ["not by the variance"]),
    (lambda *a: step(*a, alpha=lambda al, ab: ab), ["1/sqrt(alpha_t) you used alpha_bar_t"]),
    (lambda *a: step(*a, eps_coef=lambda b, ab: b / (1 - ab)), ["without the square root"]),
    (lambda *a: step(*a, eps_coef=lambda b, ab: (1 - ab) ** 0.5), ["not sqrt(1 - alpha_bar_t)"]),
    (lambda *a: step(*a, at=lambda t: t - 1), ["off by one", "index t - 1"]),
    (lambda *a: step(*a, at=lambda t: min(t + 1, a[3].T - 1)), ["off by one"]),
    (lambda x, e, t, s, n: step(x, e, t, s, torch.randn_like(n)), ["draws its own random numbers"]),
    (lambda x, e, t, s, n: step(x, e, t, s, 0 * n), ["no noise was added"]),
    (lambda x, e, t, s, n: step(x, e, t, s, -n), ["subtracted the noise"]),
    (lambda x, e, t, s, n: md.ddpm_step(x, e, t, s, noise=n), ["return only x_{t-1}"]),
    (lambda x, e, t, s, n: md.x0_from_eps(x, e, float(s.alpha_bars[t])) + float(s.posterior_variance[t]) ** 0.5 * n,
     ["you returned x0_hat"]),
    (lambda x, e, t, s, n: step(x, e, t, s, n)[:, 0], ["shape"]),
])
def test_wrong_answers_get_hints(wrong, hints):
    result = ex.check_ddpm_step(wrong)
    assert not result
    for hint in hints:
        assert hint in result.message, result.message


def test_noise_at_t0_is_named():
    """Noise at t = 0 is only wrong with a nonzero sigma there: sigma^2 = beta (given the mean is right)."""
    def beta_only_at_0(x_t, eps, t, s, n):
        out = step(x_t, eps, t, s, n)
        return out + float(s.betas[0]) ** 0.5 * n if t == 0 else out
    result = ex.check_ddpm_step(beta_only_at_0)
    assert not result and "noise added at t = 0" in result.message and "z = 0" in result.message, result.message
    assert "at t = 0 (paper t = 1)" in result.message


def test_wrapped_index_at_t0():
    result = ex.check_ddpm_step(wrapped_beta_tilde)
    assert not result and "wrapped around" in result.message and "alpha_bars_prev" in result.message, result.message


def test_mean_and_noise_mistakes_together():
    result = ex.check_ddpm_step(lambda *a: step(*a, var="beta", eps_coef=lambda b, ab: b / (1 - ab)))
    assert not result and "mean: " in result.message and "noise: " in result.message, result.message
    assert "without the square root" in result.message and "sigma^2 = beta_t" in result.message


def test_exceptions_become_hints():
    def broken(x_t, eps, t, s, n):
        return x_t + s.betas[t + 1000]
    result = ex.check_ddpm_step(broken)
    assert not result and "IndexError" in result.message


def test_right_answers_pass_in_every_layout_and_dtype():
    seen = set()

    def spy(x_t, eps, t, s, n):
        seen.add((tuple(x_t.shape), x_t.dtype))
        return step(x_t, eps, t, s, n)

    assert ex.check_ddpm_step(spy)
    shapes = {shape for shape, _ in seen}
    assert {(6, 6), (6, 3, 2), (6, 1, 4, 4), (6, 3, 4, 4)} <= shapes
    assert all((shape, dtype) in seen for shape in shapes for dtype in (torch.float32, torch.float64))


def test_casting_to_float32_gets_a_dtype_hint():
    """The checker gives float32 inputs itself; a step that casts float64 ones down returns the wrong dtype."""
    result = ex.check_ddpm_step(lambda x_t, eps, t, s, n: step(x_t.float(), eps.float(), t, s, n.float()))
    assert not result and "dtype torch.float32, expected torch.float64" in result.message, result.message


def test_a_float64_schedule_slice_gets_a_dtype_hint():
    """sched.alpha_bars[t:t + 1] is a (1,) float64 tensor: unlike a 0-d one it turns a float32 x into float64."""
    def wrong(x_t, eps, t, s, n):
        b, al, ab = s.betas[t:t + 1], s.alphas[t:t + 1], s.alpha_bars[t:t + 1]
        mean = (x_t - b / (1 - ab).sqrt() * eps) / al.sqrt()
        return mean if t == 0 else mean + float(s.posterior_variance[t]) ** 0.5 * n
    result = ex.check_ddpm_step(wrong)
    assert not result and "dtype torch.float64, expected torch.float32" in result.message, result.message
    assert ".to(x.dtype)" in result.message


def test_a_shape_for_one_rank_gets_a_shape_hint():
    def wrong(x_t, eps, t, s, n):
        c = s.alphas.to(x_t.dtype)[t].view(1, 1, 1)                 # fits (B, C, D) only
        return step(x_t, eps, t, s, n) * c / c
    result = ex.check_ddpm_step(wrong)
    assert not result and "has shape (1, 6, 6), expected (6, 6)" in result.message, result.message


def clipped_step(x_t, eps, t, sched, noise):
    """The posterior-mean form with x0_hat clipped to [-1, 1], as for images."""
    x0_hat = md.x0_from_eps(x_t, eps, float(sched.alpha_bars[t])).clamp(-1, 1)
    mean = float(sched.posterior_mean_coef_x0[t]) * x0_hat + float(sched.posterior_mean_coef_xt[t]) * x_t
    return mean + float(sched.posterior_variance[t]) ** 0.5 * noise


def test_clipping_x0_hat_gets_its_hint():
    result = ex.check_ddpm_step(clipped_step)
    assert not result and "you clipped x0_hat" in result.message and "clip_x0" in result.message, result.message


def test_every_catalogued_mean_mistake_gets_its_own_hint():
    """A step whose mean has exactly one catalogued mistake (and the right noise) gets that mistake's hint."""
    from minidiff.exercises import ch05_ddpm_sampling as ch5

    def mistakes(x, eps, t, s):
        return ch5._ddpm_step_mean_mistakes(x.double(), eps.double(), t, s)

    n = len(mistakes(torch.zeros(1), torch.zeros(1), 5, md.NoiseSchedule.linear(T=10)))
    for i in range(n):
        def wrong(x_t, eps, t, s, noise, i=i):
            m = mistakes(x_t, eps, t, s)
            if len(m) <= i:                                     # the t + 1 entry does not exist at t = T-1
                return step(x_t, eps, t, s, noise)
            return m[i][1]().to(x_t.dtype) + float(s.posterior_variance[t]) ** 0.5 * noise
        hint = mistakes(torch.zeros(1), torch.zeros(1), 5, md.NoiseSchedule.linear(T=10))[i][0]
        result = ex.check_ddpm_step(wrong)
        assert not result and result.message.endswith(hint), (i, result.message)
