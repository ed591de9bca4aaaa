"""Chapter 6: the DDIM-step checker passes right answers and gives the right hint for each typical mistake."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex

pytestmark = pytest.mark.usefixtures("one_thread")


def ab(sched, t):
    """alpha_bar at index t as a reader writes it: 1 for the data (t = -1)."""
    return 1.0 if t < 0 else float(sched.alpha_bars[t])


def make_step(*, x0_prev=False, no_sqrt_x0=False, sigma_no_factor=False, sigma_no_sqrt=False, no_subtract=False,
              noise_var=False, noise_unscaled=False, alphas_prev=False, alphas_both=False, wrap=False,
              consecutive=False, return_x0=False, return_pair=False, own_noise=False, noise_sign=1, clip=None,
              uncast=False):
    """A reader's DDIM step (eq. 12 and 16) with one switchable mistake."""
    def fn(x_t, eps, t, t_prev, sched, eta, noise):
        a = float(sched.alphas[t]) if alphas_both else ab(sched, t)
        tp = t - 1 if consecutive else t_prev
        if alphas_prev or alphas_both:
            a_prev = 1.0 if tp < 0 else float(sched.alphas[tp])
        elif wrap:
            a_prev = float(sched.alpha_bars[tp])                      # alpha_bars[-1] wraps at the data
        else:
            a_prev = ab(sched, tp)
        x0_a = a_prev if x0_prev else a
        x0_hat = (x_t - (1 - x0_a) ** 0.5 * eps) / (x0_a if no_sqrt_x0 else x0_a**0.5)
        if clip is not None:
            x0_hat = x0_hat.clamp(-1, 1)
            if clip == "recompute":                                 # the noise consistent with the clipped x0_hat
                eps = (x_t - a**0.5 * x0_hat) / (1 - a) ** 0.5
        if return_x0:
            return x0_hat
        var = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        if sigma_no_factor:
            var = (1 - a_prev) / (1 - a)
        sigma = eta * (var if sigma_no_sqrt else torch.tensor(var, dtype=torch.float64).sqrt().item())
        direction = (1 - a_prev) if no_subtract else (1 - a_prev - sigma**2)
        z = torch.randn_like(x_t) if own_noise else noise
        scale = sigma**2 if noise_var else (1.0 if noise_unscaled and sigma > 0 else sigma)
        coef = torch.tensor([direction], dtype=torch.float64) if uncast else torch.tensor(direction, dtype=x_t.dtype)
        x_prev = a_prev**0.5 * x0_hat + coef.sqrt() * eps + noise_sign * scale * z
        return (x_prev, x0_hat) if return_pair else x_prev
    return fn


def test_right_answers_pass():
    assert ex.check_ddim_step(make_step())
    assert ex.check_ddim_step(lambda x, e, t, tp, s, eta, n: md.ddim_step(x, e, t, tp, s, eta=eta, noise=n)[0])


def test_sigma_from_the_package_passes():
    def fn(x_t, eps, t, t_prev, sched, eta, noise):
        a, a_prev = ab(sched, t), ab(sched, t_prev)
        sigma = md.ddim_sigma(a, a_prev, eta)
        x0_hat = md.x0_from_eps(x_t, eps, a)
        return a_prev**0.5 * x0_hat + (1 - a_prev - sigma**2) ** 0.5 * eps + sigma * noise
    result = ex.check_ddim_step(fn)
    assert result, result.message


@pytest.mark.parametrize("mistake, hint", [
    ("sigma_no_factor", "lacks the factor sqrt(1 - alpha_bar_t / alpha_bar_{t-1})"),
    ("sigma_no_sqrt", "left out the square root in eq. (16)"),
    ("no_subtract", "subtract sigma_t^2"),
    ("noise_var", "not the variance sigma_t^2"),
    ("noise_unscaled", "must be scaled by sigma_t"),
    ("x0_prev", "x0_hat uses alpha_bar_t"),
    ("no_sqrt_x0", "x0_hat divides by sqrt(alpha_bar_t)"),
    ("return_x0", "you returned x0_hat"),
    ("alphas_prev", "for the previous step"),
    ("alphas_both", "the DDIM paper's alpha_t is minidiff's alpha_bar_t"),
    ("wrap", "alpha_bars[-1] wraps around"),
    ("consecutive", "DDIM skips timesteps"),
    ("return_pair", "return only x_prev"),
    ("own_noise", "draws its own random numbers"),
])
def test_typical_mistakes_get_their_hint(mistake, hint):
    result = ex.check_ddim_step(make_step(**{mistake: True}))
    assert not result
    assert hint in result.message, result.message


@pytest.mark.parametrize("kw, hints", [
    (dict(noise_sign=-1), ["you subtracted the noise", "eta = 0.5"]),
    (dict(clip="keep"), ["you clipped x0_hat", "clip_x0"]),
    (dict(clip="recompute"), ["you clipped x0_hat"]),
    (dict(uncast=True), ["dtype torch.float64, expected torch.float32", ".to(x.dtype)"]),
])
def test_new_mistakes_get_their_hint(kw, hints):
    result = ex.check_ddim_step(make_step(**kw))
    assert not result
    for hint in hints:
        assert hint in result.message, result.message


def test_subtracted_noise_outside_the_catalogue_is_named():
    """Subtracting the noise along with another, uncatalogued mistake: the noise probe still names the sign."""
    def fn(x_t, eps, t, t_prev, sched, eta, noise):
        right = md.ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0]
        sigma = md.ddim_sigma(ab(sched, t), ab(sched, t_prev), eta)
        return right - 2 * sigma * noise + (0.01 * eps if eta > 0 else 0.0)
    result = ex.check_ddim_step(fn)
    assert not result and "you subtracted the noise" in result.message and "noise-free part" in result.message, \
        result.message


def test_right_answers_pass_in_every_layout_and_dtype():
    seen = set()
    right = make_step()

    def spy(x_t, *args):
        seen.add((tuple(x_t.shape), x_t.dtype))
        return right(x_t, *args)

    assert ex.check_ddim_step(spy)
    shapes = {shape for shape, _ in seen}
    assert {(6, 6), (6, 3, 2), (6, 1, 4, 4), (6, 3, 4, 4)} <= shapes
    assert all((shape, dtype) in seen for shape in shapes for dtype in (torch.float32, torch.float64))


def test_every_catalogued_mistake_gets_its_own_hint():
    """A step with exactly one catalogued mistake gets that mistake's hint (or, where two entries describe the
    same mistake, the same text): no entry is shadowed by another or by the right answer."""
    from minidiff.exercises import ch06_ddim as ch6
    sched = md.NoiseSchedule.linear(T=20, beta_start=0.01, beta_end=0.3)
    z = torch.zeros(1, dtype=torch.float64)
    catalogued, reached = set(), set()
    for t, t_prev, eta in ch6._ddim_cases(20):
        for i, (hint, _) in enumerate(ch6._ddim_step_mistakes(z, z, t, t_prev, sched, eta, z)):
            catalogued.add(hint)
            def wrong(x_t, eps, t_, t_prev_, s, eta_, noise, i=i, t=t, t_prev=t_prev):
                m = ch6._ddim_step_mistakes(x_t.double(), eps.double(), t_, t_prev_, s, eta_, noise.double())
                if (t_, t_prev_) != (t, t_prev) or len(m) <= i:     # right elsewhere: only this case is wrong
                    return md.ddim_step(x_t, eps, t_, t_prev_, s, eta=eta_, noise=noise)[0]
                return m[i][1]().to(x_t.dtype)
            result = ex.check_ddim_step(wrong)
            if result:                                             # e.g. sigma's mistakes when eta = 0: no change
                continue
            assert result.message.endswith(hint), (t, t_prev, eta, i, result.message)
            reached.add(hint)
    assert reached == catalogued, catalogued - reached


def test_unknown_mistake_names_the_step_and_the_noise_scale():
    def fn(x_t, eps, t, t_prev, sched, eta, noise):
        return md.ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0] + 0.1 * eta * noise
    result = ex.check_ddim_step(fn)
    assert not result
    assert "eta = 0.5" in result.message and "the noise is scaled by" in result.message, result.message


def test_checker_is_in_the_public_list():
    assert "check_ddim_step" in ex.__all__
