"""Chapter 11's checkers: check_karras_sigmas and check_heun_step pass right answers, written several ways, and
name each typical mistake."""
import pytest
import torch

from minidiff import exercises as ex
from minidiff import solvers

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ EDM's sigmas
def karras_loop(steps, sigma_min, sigma_max, rho):
    out = []
    for i in range(steps):
        frac = i / (steps - 1) if steps > 1 else 0.0
        out.append((sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho)
    return out + [0.0]


@pytest.mark.parametrize("right", [
    solvers.karras_sigmas,
    karras_loop,                                                         # a Python list
    lambda S, lo, hi, rho: torch.tensor(karras_loop(S, lo, hi, rho), dtype=torch.float32),   # float32
])
def test_karras_right_answers_pass(right):
    result = ex.check_karras_sigmas(right)
    assert result, result.message


def no_zero(S, lo, hi, rho):
    return karras_loop(S, lo, hi, rho)[:-1]


def increasing(S, lo, hi, rho):
    return karras_loop(S, lo, hi, rho)[:-1][::-1] + [0.0]


def rho_power(S, lo, hi, rho):
    ramp = torch.linspace(0, 1, S, dtype=torch.float64)
    return torch.cat([(hi**rho + ramp * (lo**rho - hi**rho)).clamp(min=0) ** (1 / rho), torch.zeros(1, dtype=torch.float64)])


def ramp_over_s(S, lo, hi, rho):
    ramp = torch.arange(S, dtype=torch.float64) / S
    return torch.cat([(hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho, torch.zeros(1, dtype=torch.float64)])


def linear(S, lo, hi, rho):
    return karras_loop(S, lo, hi, 1.0)


@pytest.mark.parametrize("wrong, hint", [
    (no_zero, "end with sigma = 0"),
    (increasing, "must decrease"),
    (rho_power, "interpolate sigma^(1/rho)"),
    (ramp_over_s, "i / (S - 1)"),
    (linear, "that is rho = 1"),
    (lambda S, lo, hi, rho: [1.1 * s for s in karras_loop(S, lo, hi, rho)], "entry 0 is"),
    (lambda S, lo, hi, rho: "sigmas", "return a tensor or list"),
    (lambda S, lo, hi, rho: 1 / 0, "raised ZeroDivisionError"),
])
def test_karras_mistakes_are_named(wrong, hint):
    result = ex.check_karras_sigmas(wrong)
    assert not result
    assert hint in result.message, result.message


# ------------------------------------------------------------------------------------------ one Heun step
def heun_right(denoise, x, sigma, sigma_next):
    return solvers.sample_heun(denoise, x, torch.tensor([sigma, sigma_next], dtype=torch.float64))


def heun_written_out(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next > 0:
        x_next = x + (sigma_next - sigma) * 0.5 * (d + (x_next - denoise(x_next, sigma_next)) / sigma_next)
    return x_next


@pytest.mark.parametrize("right", [heun_right, heun_written_out])
def test_heun_right_answers_pass(right):
    result = ex.check_heun_step(right)
    assert result, result.message


def euler_only(denoise, x, sigma, sigma_next):
    return x + (sigma_next - sigma) * (x - denoise(x, sigma)) / sigma


def always_correct(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    return x + (sigma_next - sigma) * (d + (x_next - denoise(x_next, sigma_next)) / sigma_next) / 2


def from_prediction(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    return x_next + (sigma_next - sigma) * (d + (x_next - denoise(x_next, sigma_next)) / sigma_next) / 2


def second_slope_only(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    return x + (sigma_next - sigma) * (x_next - denoise(x_next, sigma_next)) / sigma_next


def wrong_sign(denoise, x, sigma, sigma_next):
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if sigma_next == 0:
        return x_next
    return x + (sigma - sigma_next) * (d + (x_next - denoise(x_next, sigma_next)) / sigma_next) / 2


def skips_last_step(denoise, x, sigma, sigma_next):
    return x if sigma_next == 0 else heun_written_out(denoise, x, sigma, sigma_next)


@pytest.mark.parametrize("wrong, hint", [
    (euler_only, "that is Euler's step"),
    (always_correct, "not finite"),
    (from_prediction, "start the corrected step from x"),
    (second_slope_only, "average the two slopes"),
    (wrong_sign, "the step is sigma_next - sigma"),
    (skips_last_step, "the Euler step is still needed"),
    (lambda d, x, s, sn: x[:, :1], "return x_next, a tensor of x's shape"),
    (lambda d, x, s, sn: heun_written_out(d, x, s, sn) * 1.01, "off by up to"),
])
def test_heun_mistakes_are_named(wrong, hint):
    result = ex.check_heun_step(wrong)
    assert not result
    assert hint in result.message, result.message


def test_heun_division_by_a_python_zero_is_named():
    def python_floats(denoise, x, sigma, sigma_next):
        d = (x - denoise(x, sigma)) / sigma
        x_next = x + (sigma_next - sigma) * d
        scale = 1 / sigma_next                                       # ZeroDivisionError at the last step
        return x + (sigma_next - sigma) * (d + (x_next - denoise(x_next, sigma_next)) * scale) / 2
    result = ex.check_heun_step(python_floats)
    assert not result and "is an Euler step" in result.message, result.message
