"""The exercise checkers pass right answers and give the right hint for the typical wrong ones."""
import pytest
import torch

import minidiff as md
from minidiff import exercises as ex


def col(values, t, like):
    """values[t] as (B, 1, ..., 1) — how a reader would write the gather."""
    return values.to(like.dtype)[t].view(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------------------------ alpha_bars
def test_alpha_bars_right_answers_pass():
    assert ex.check_alpha_bars(lambda b: torch.cumprod(1 - b, dim=0))
    assert ex.check_alpha_bars(lambda b: md.NoiseSchedule(b).alpha_bars)
    assert ex.check_alpha_bars(lambda b: torch.exp(torch.cumsum(torch.log1p(-b), 0)))   # same product, in logs


@pytest.mark.parametrize("wrong, hint", [
    (lambda b: 1 - b, "cumulative product"),
    (lambda b: torch.cumprod(b, 0), "multiplied the betas"),
    (lambda b: torch.exp(-torch.cumsum(b, 0)), "small-beta approximation"),
    (lambda b: torch.cat([b.new_ones(1), torch.cumprod(1 - b, 0)[:-1]]), "off by one"),
    (lambda b: torch.cumprod(1 - b, 0).sqrt(), "square root"),
    (lambda b: torch.cumprod(1 - b, 0)[:-1], "shape"),
])
def test_alpha_bars_wrong_answers_get_hints(wrong, hint):
    result = ex.check_alpha_bars(wrong)
    assert not result
    assert hint in result.message, result.message


def test_unknown_mistake_reports_where():
    def wrong(b):
        out = torch.cumprod(1 - b, 0).clone()
        out[5] += 0.01
        return out
    result = ex.check_alpha_bars(wrong)
    assert not result and "index 5" in result.message, result.message


# ------------------------------------------------------------------------------------------ q_step
def my_q_step(x, t, sched, noise):
    beta = col(sched.betas, t, x)
    return (1 - beta).sqrt() * x + beta.sqrt() * noise


def test_q_step_right_answers_pass():
    assert ex.check_q_step(my_q_step)
    assert ex.check_q_step(lambda x, t, s, n: md.q_step(x, t, s, noise=n))


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, t, s, n: (1 - col(s.betas, t, x)) * x + col(s.betas, t, x).sqrt() * n, "sqrt(1 - beta_t), not"),
    (lambda x, t, s, n: (1 - col(s.betas, t, x)).sqrt() * x + col(s.betas, t, x) * n, "standard deviation"),
    (lambda x, t, s, n: x + col(s.betas, t, x).sqrt() * n, "shrink"),
    (lambda x, t, s, n: md.q_sample(x, t, s, noise=n), "closed form"),
    (lambda x, t, s, n: my_q_step(x, t, s, torch.randn_like(x)), "draws its own random numbers"),
])
def test_q_step_wrong_answers_get_hints(wrong, hint):
    result = ex.check_q_step(wrong)
    assert not result and hint in result.message, result.message


# ------------------------------------------------------------------------------------------ q_sample
def my_q_sample(x0, t, sched, noise):
    a = col(sched.alpha_bars, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def test_q_sample_right_answers_pass():
    assert ex.check_q_sample(my_q_sample)
    assert ex.check_q_sample(lambda x0, t, s, n: md.q_sample(x0, t, s, noise=n))


def _qs(ab_of, sx=True, sn=True):
    def fn(x0, t, s, n):
        a = ab_of(s, t, x0)
        return (a.sqrt() if sx else a) * x0 + ((1 - a).sqrt() if sn else 1 - a) * n
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (_qs(lambda s, t, x: col(s.alpha_bars, t, x), sx=False), "you used alpha_bar where sqrt(alpha_bar) belongs"),
    (_qs(lambda s, t, x: col(s.alpha_bars, t, x), sn=False), "standard deviation sqrt(1 - alpha_bar_t)"),
    (_qs(lambda s, t, x: col(s.alphas, t, x)), "you used alphas"),
    (_qs(lambda s, t, x: col(s.alpha_bars, t - 1, x)), "off by one in t: you used alpha_bars[t-1]"),
    (_qs(lambda s, t, x: col(s.alpha_bars_prev, t, x)), "off by one in t"),
    (_qs(lambda s, t, x: s.alpha_bars[t[0]].to(x.dtype)), "one timestep for the whole batch"),
    (_qs(lambda s, t, x: col(s.alpha_bars, t + 1, x)), "IndexError"),
    (lambda x0, t, s, n: my_q_sample(x0, t, s, torch.randn_like(x0)), "draws its own random numbers"),
    (lambda x0, t, s, n: s.alpha_bars[t].sqrt() * x0, "reshape it to (B, 1, ..., 1)"),   # (B,) * (B, 3, 2)
    (lambda x0, t, s, n: my_q_sample(x0, t, s, n)[:, 0], "shape"),
])
def test_q_sample_wrong_answers_get_hints(wrong, hint):
    result = ex.check_q_sample(wrong)
    assert not result and hint in result.message, result.message


def test_q_sample_swapped_coefficients():
    def swapped(x0, t, s, n):
        a = col(s.alpha_bars, t, x0)
        return (1 - a).sqrt() * x0 + a.sqrt() * n
    result = ex.check_q_sample(swapped)
    assert not result and "swapped" in result.message


# ------------------------------------------------------------------------------------------ posterior
def my_posterior(x0, x_t, t, sched):
    b, al = col(sched.betas, t, x0), col(sched.alphas, t, x0)
    ab, abp = col(sched.alpha_bars, t, x0), col(sched.alpha_bars_prev, t, x0)
    mean = b * abp.sqrt() / (1 - ab) * x0 + (1 - abp) * al.sqrt() / (1 - ab) * x_t
    return mean, (1 - abp) / (1 - ab) * b


def test_posterior_right_answers_pass():
    assert ex.check_posterior(my_posterior)
    assert ex.check_posterior(md.q_posterior)
    # The variance may come back as (B,) or with x's full shape.
    assert ex.check_posterior(lambda x0, x_t, t, s: (my_posterior(x0, x_t, t, s)[0], s.posterior_variance[t]))
    assert ex.check_posterior(lambda x0, x_t, t, s: (my_posterior(x0, x_t, t, s)[0],
                                                    my_posterior(x0, x_t, t, s)[1].expand_as(x0)))


def test_posterior_variance_beta_instead_of_beta_tilde():
    result = ex.check_posterior(lambda x0, x_t, t, s: (my_posterior(x0, x_t, t, s)[0], col(s.betas, t, x0)))
    assert not result and "you returned beta_t" in result.message and "mean" not in result.message


def test_posterior_wrapped_index_at_t0():
    def wrapped(x0, x_t, t, sched):
        b, al = col(sched.betas, t, x0), col(sched.alphas, t, x0)
        ab, abp = col(sched.alpha_bars, t, x0), col(sched.alpha_bars, t - 1, x0)     # wraps at t = 0
        mean = b * abp.sqrt() / (1 - ab) * x0 + (1 - abp) * al.sqrt() / (1 - ab) * x_t
        return mean, (1 - abp) / (1 - ab) * b
    result = ex.check_posterior(wrapped)
    assert not result and "wrong at t = 0" in result.message and "alpha_bars_prev" in result.message


def test_posterior_swapped_mean_coefficients():
    def swapped(x0, x_t, t, s):
        mean, var = my_posterior(x0, x_t, t, s)
        b, al = col(s.betas, t, x0), col(s.alphas, t, x0)
        ab, abp = col(s.alpha_bars, t, x0), col(s.alpha_bars_prev, t, x0)
        return b * abp.sqrt() / (1 - ab) * x_t + (1 - abp) * al.sqrt() / (1 - ab) * x0, var
    result = ex.check_posterior(swapped)
    assert not result and "swapped the coefficients" in result.message and "variance" not in result.message


def test_posterior_not_a_pair():
    result = ex.check_posterior(lambda x0, x_t, t, s: my_posterior(x0, x_t, t, s)[0])
    assert not result and "pair" in result.message


# ------------------------------------------------------------------------------------------ eps loss
def my_eps_loss(model, x0, sched, t, noise):
    x_t = md.q_sample(x0, t, sched, noise=noise)
    return ((model(x_t, t) - noise) ** 2).mean()


def test_eps_loss_right_answers_pass():
    assert ex.check_eps_loss(my_eps_loss)
    assert ex.check_eps_loss(lambda m, x0, s, t, n: md.eps_loss(m, x0, s, t=t, noise=n))


def _loss(target="eps", x_in="x_t", t_shift=0, reduce=lambda e: (e**2).mean()):
    def fn(model, x0, sched, t, noise):
        x_t = md.q_sample(x0, t, sched, noise=noise)
        inp = {"x_t": x_t, "x0": x0}[x_in]
        pred = model(inp, t + t_shift)
        return reduce(pred - {"eps": noise, "x0": x0, "x_t": x_t}[target])
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (_loss(target="x0"), "target is the noise"),
    (_loss(x_in="x0"), "not the clean x_0"),
    (_loss(t_shift=1), "t + 1"),
    (_loss(reduce=lambda e: e.abs().mean()), "L1"),
    (_loss(reduce=lambda e: (e**2).sum()), "summed the squared errors"),
    (_loss(reduce=lambda e: (e**2).reshape(len(e), -1).sum(1).mean()), "constant factor"),
    (_loss(reduce=lambda e: (e**2).mean(dim=0)), "one number"),
    (lambda m, x0, s, t, n: my_eps_loss(m, x0, s, torch.randint(0, s.T, t.shape), torch.randn_like(x0)),
     "draws its own random numbers"),
])
def test_eps_loss_wrong_answers_get_hints(wrong, hint):
    result = ex.check_eps_loss(wrong)
    assert not result and hint in result.message, result.message


def test_eps_loss_wrong_noisy_input():
    def wrong(model, x0, sched, t, noise):
        a = col(sched.alpha_bars, t, x0)
        return ((model(a * x0 + (1 - a).sqrt() * noise, t) - noise) ** 2).mean()
    result = ex.check_eps_loss(wrong)
    assert not result and "sqrt(alpha_bar)" in result.message


def test_errors_in_the_readers_code_become_hints():
    def broken(x0, t, sched, noise):
        raise NameError("name 'alpha_bar' is not defined")
    result = ex.check_q_sample(broken)
    assert not result and "NameError" in result.message and "alpha_bar" in result.message
    assert repr(result).startswith("FAIL check_q_sample")
    assert repr(ex.check_q_sample(my_q_sample)).startswith("PASS check_q_sample")
