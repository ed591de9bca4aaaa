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
    # The variance may come back as (B,) or with x's full shape, in x's dtype.
    assert ex.check_posterior(lambda x0, x_t, t, s: (my_posterior(x0, x_t, t, s)[0],
                                                    s.posterior_variance[t].to(x0.dtype)))
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


# ------------------------------------------------------------------------------------------ layouts and dtypes
RANK2, RANK3, RANK4 = (12, 6), (12, 3, 2), (12, 3, 4, 4)      # shapes every per-sample checker must try


def spy(fn, seen, arg=0):
    """``fn`` that records (shape, dtype) of its ``arg``-th argument."""
    def wrapped(*args):
        seen.add((tuple(args[arg].shape), args[arg].dtype))
        return fn(*args)
    return wrapped


@pytest.mark.parametrize("check, right, arg", [
    (ex.check_q_step, my_q_step, 0),
    (ex.check_q_sample, my_q_sample, 0),
    (ex.check_posterior, my_posterior, 0),
    (ex.check_eps_loss, my_eps_loss, 1),
])
def test_right_answers_pass_in_every_layout_and_dtype(check, right, arg):
    seen = set()
    result = check(spy(right, seen, arg))
    assert result, result.message
    shapes = {shape for shape, _ in seen}
    assert {RANK2, RANK3, RANK4} <= shapes and any(len(s) == 4 and s[1] == 1 for s in shapes), shapes
    assert {dtype for _, dtype in seen} == {torch.float32, torch.float64}
    assert all((shape, dtype) in seen for shape in shapes for dtype in (torch.float32, torch.float64))


def rank3_col(values, t, like):
    """values[t][:, None, None]: the gather that fits (B, 3, 2) batches only (cast to x's dtype)."""
    return values.to(like.dtype)[t][:, None, None]


def uncast_col(values, t, like):
    """values[t] reshaped for any rank but left in the schedule's float64."""
    return values[t].view(-1, *([1] * (like.ndim - 1)))


def q_sample_with(gather, sign=1):
    def fn(x0, t, s, n):
        a = gather(s.alpha_bars, t, x0)
        return a.sqrt() * x0 + sign * (1 - a).sqrt() * n
    return fn


def q_step_with(gather, sign=1):
    def fn(x, t, s, n):
        b = gather(s.betas, t, x)
        return (1 - b).sqrt() * x + sign * b.sqrt() * n
    return fn


def posterior_with(gather):
    def fn(x0, x_t, t, s):
        b, al = gather(s.betas, t, x0), gather(s.alphas, t, x0)
        ab, abp = gather(s.alpha_bars, t, x0), gather(s.alpha_bars_prev, t, x0)
        return b * abp.sqrt() / (1 - ab) * x0 + (1 - abp) * al.sqrt() / (1 - ab) * x_t, (1 - abp) / (1 - ab) * b
    return fn


def eps_loss_with(gather=col, sign=1, reduce=lambda e, t, s: (e**2).mean()):
    def fn(model, x0, s, t, n):
        a = gather(s.alpha_bars, t, x0)
        e = model(a.sqrt() * x0 + sign * (1 - a).sqrt() * n, t) - n
        return reduce(e, t, s)
    return fn


BROADCAST_HINTS = ["(B, 1, ..., 1)", "any rank", ".view(-1, *[1] * (x.ndim - 1))", "[:, None, None]",
                   "has shape (12, 12, 6), expected (12, 6)"]


@pytest.mark.parametrize("check, wrong", [
    (ex.check_q_step, q_step_with(rank3_col)),
    (ex.check_q_sample, q_sample_with(rank3_col)),
    (ex.check_posterior, posterior_with(rank3_col)),
    (ex.check_eps_loss, eps_loss_with(rank3_col)),
    (ex.check_q_sample, q_sample_with(lambda v, t, x: v[t][:, None, None])),       # uncast as well
])
def test_a_gather_for_rank_3_only_gets_the_broadcast_hint(check, wrong):
    result = check(wrong)
    assert not result
    for hint in BROADCAST_HINTS:
        assert hint in result.message, result.message


def test_rank_3_gather_passes_on_rank_3_alone():
    """The broadcast mistake is right on (B, 3, 2) batches: only the other layouts reveal it."""
    gen = torch.Generator().manual_seed(0)
    sched = md.NoiseSchedule.linear(T=20, beta_start=0.01, beta_end=0.3)
    t = torch.randint(0, 20, (5,), generator=gen)
    x, n = torch.randn(2, 5, 3, 2, generator=gen, dtype=torch.float64)
    assert torch.allclose(q_sample_with(rank3_col)(x, t, sched, n), md.q_sample(x, t, sched, noise=n))


def test_the_broadcast_error_at_rank_4_says_how_to_reshape():
    """On (B, 3, 4, 4) the (B, 1, 1) coefficient does not broadcast at all: the RuntimeError gets the hint."""
    result = ex.check_q_sample(lambda x0, t, s, n: q_sample_with(rank3_col)(x0, t, s, n) if x0.ndim == 4 and
                               x0.shape[1] == 3 else my_q_sample(x0, t, s, n))
    assert not result and "RuntimeError" in result.message and "(B, 1, ..., 1)" in result.message, result.message
    assert ".view(-1, *[1] * (x.ndim - 1))" in result.message


DTYPE_HINTS = ["dtype torch.float64, expected torch.float32", ".to(x.dtype)"]


@pytest.mark.parametrize("check, wrong", [
    (ex.check_q_step, q_step_with(uncast_col)),
    (ex.check_q_sample, q_sample_with(uncast_col)),
    (ex.check_posterior, posterior_with(uncast_col)),
    (ex.check_eps_loss, eps_loss_with(uncast_col)),
    (ex.check_posterior, lambda x0, x_t, t, s: (my_posterior(x0, x_t, t, s)[0], s.posterior_variance[t])),
])
def test_an_uncast_schedule_gets_the_dtype_hint(check, wrong):
    result = check(wrong)
    assert not result
    for hint in DTYPE_HINTS:
        assert hint in result.message, result.message


def test_casting_down_gets_a_dtype_hint():
    result = ex.check_q_sample(lambda x0, t, s, n: my_q_sample(x0.float(), t, s, n.float()))
    assert not result and "dtype torch.float32, expected torch.float64" in result.message, result.message


def test_alpha_bars_keeps_the_schedules_dtype():
    result = ex.check_alpha_bars(lambda b: torch.cumprod(1 - b.float(), 0))
    assert not result and "dtype torch.float32, expected torch.float64" in result.message, result.message


# ------------------------------------------------------------------------------------------ the new hints
def test_noise_sign_flip_gets_its_hint():
    for check, wrong in ((ex.check_q_step, q_step_with(col, sign=-1)), (ex.check_q_sample, q_sample_with(col, -1))):
        result = check(wrong)
        assert not result and "the noise is added, not subtracted" in result.message, result.message
    result = ex.check_eps_loss(eps_loss_with(sign=-1))
    assert not result and "subtracts the noise" in result.message, result.message


def elbo_weights(t, s, var="beta_tilde", beta_tilde=None):
    """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) as a reader writes it, (B,) float64."""
    b, al, ab = s.betas[t], s.alphas[t], s.alpha_bars[t]
    sigma2 = b if var == "beta" else (s.posterior_variance[t] if beta_tilde is None else beta_tilde(s, t))
    return b**2 / (2 * sigma2 * al * (1 - ab))


def elbo_loss(**kw):
    def reduce(e, t, s):
        per_sample = (e**2).reshape(len(e), -1).mean(1)
        return (elbo_weights(t, s, **kw).to(e.dtype) * per_sample).mean()
    return eps_loss_with(reduce=reduce)


@pytest.mark.parametrize("wrong, hints", [
    (eps_loss_with(reduce=lambda e, t, s: 0.5 * (e**2).mean()), ["0.5 * MSE"]),
    (eps_loss_with(reduce=lambda e, t, s: ((e**2) / 2).mean()), ["0.5 * MSE"]),
    (elbo_loss(var="beta"), ["ELBO's lambda_t"]),
    (elbo_loss(), ["ELBO's lambda_t", "infinite"]),
    # beta_tilde from alpha_bar_{t-1} = alpha_bar_t / alpha_t: rounding may leave it a tiny positive number at t = 0,
    # so the loss is finite but enormous; the checker recognises the weighting all the same.
    (elbo_loss(beta_tilde=lambda s, t: (1 - s.alpha_bars[t] / s.alphas[t]) / (1 - s.alpha_bars[t]) * s.betas[t]),
     ["ELBO's lambda_t"]),
    (eps_loss_with(reduce=lambda e, t, s: (elbo_weights(t, s, "beta").to(e.dtype)
                                           * (e**2).reshape(len(e), -1).sum(1)).mean()), ["ELBO's lambda_t"]),
])
def test_loss_mistakes_get_their_hint(wrong, hints):
    result = ex.check_eps_loss(wrong)
    assert not result
    for hint in hints:
        assert hint in result.message, result.message


def test_a_huge_loss_still_gets_the_elbo_hint():
    """The weighting is recognised from a probe at one timestep, whatever the loss at t = 0 came out as."""
    def wrong(model, x0, s, t, n):
        loss = elbo_loss(var="beta")(model, x0, s, t, n)
        return loss * 1e17 if bool((t == 0).any()) and not bool((t == t[0]).all()) else loss
    result = ex.check_eps_loss(wrong)
    assert not result and "ELBO's lambda_t" in result.message, result.message


# ------------------------------------------------------------------------------------------ the catalogues
@pytest.mark.parametrize("check, catalogue", [
    (ex.check_q_step, "ch01_forward_process._q_step_mistakes"),
    (ex.check_q_sample, "ch02_closed_form._q_sample_mistakes"),
])
def test_every_catalogued_noising_mistake_gets_its_own_hint(check, catalogue):
    """A reader who makes exactly one catalogued mistake, in every layout and dtype, gets that mistake's hint:
    no entry is shadowed by an earlier one or by the right answer."""
    import importlib
    module, fn_name = catalogue.split(".")
    mistakes = getattr(importlib.import_module(f"minidiff.exercises.{module}"), fn_name)
    n = len(mistakes(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), md.NoiseSchedule.linear(T=4),
                     torch.zeros(2, 1)))
    for i in range(n):
        def wrong(x, t, s, noise, i=i):
            hint, make = mistakes(x.double(), t, s, noise.double())[i]
            return make().to(x.dtype)
        expected = mistakes(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), md.NoiseSchedule.linear(T=4),
                            torch.zeros(2, 1))[i][0]
        result = check(wrong)
        assert not result and result.message == expected, (i, result.message)
