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
              consecutive=False, return_x0=False, return_pair=False, own_noise=False):
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
        if return_x0:
            return x0_hat
        var = (1 - a_prev) / (1 - a) * (1 - a / a_prev)
        if sigma_no_factor:
            var = (1 - a_prev) / (1 - a)
        sigma = eta * (var if sigma_no_sqrt else torch.tensor(var, dtype=torch.float64).sqrt().item())
        direction = (1 - a_prev) if no_subtract else (1 - a_prev - sigma**2)
        z = torch.randn_like(x_t) if own_noise else noise
        scale = sigma**2 if noise_var else (1.0 if noise_unscaled and sigma > 0 else sigma)
        x_prev = a_prev**0.5 * x0_hat + torch.tensor(direction, dtype=x_t.dtype).sqrt() * eps + scale * z
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


def test_unknown_mistake_names_the_step_and_the_noise_scale():
    def fn(x_t, eps, t, t_prev, sched, eta, noise):
        return md.ddim_step(x_t, eps, t, t_prev, sched, eta=eta, noise=noise)[0] + 0.1 * eta * noise
    result = ex.check_ddim_step(fn)
    assert not result
    assert "eta = 0.5" in result.message and "the noise is scaled by" in result.message, result.message


def test_checker_is_in_the_public_list():
    assert "check_ddim_step" in ex.__all__
