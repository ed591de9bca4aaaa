"""Chapter 10's checkers: check_flow_conversions and check_flow_matching_loss pass right answers, written several
ways, and name each typical mistake."""
import pytest
import torch

from minidiff import exercises as ex
from minidiff import flow

pytestmark = pytest.mark.usefixtures("one_thread")


def col(t, x):
    return t.to(x.dtype).view(-1, *[1] * (x.ndim - 1))


# ------------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("right", [
    lambda x, v, t: (x - col(t, x) * v, x + (1 - col(t, x)) * v),
    lambda x, v, t: (flow.x0_from_velocity(x, v, t), flow.eps_from_velocity(x, v, t)),
    lambda x, v, t: [x - col(t, x) * v, (x - col(t, x) * v) + v],          # eps = x0 + v
])
def test_conversions_right_answers_pass(right):
    result = ex.check_flow_conversions(right)
    assert result, result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, v, t: (x + col(t, x) * v, x + (1 - col(t, x)) * v), "x0: the sign"),
    (lambda x, v, t: (x - (1 - col(t, x)) * v, x + (1 - col(t, x)) * v), "x0: you used 1 - t"),
    (lambda x, v, t: (x - v, x + (1 - col(t, x)) * v), "x0: you returned x_t - v"),
    (lambda x, v, t: (x - col(t, x) * v, x - (1 - col(t, x)) * v), "eps: the sign"),
    (lambda x, v, t: (x - col(t, x) * v, x + col(t, x) * v), "eps: you used t"),
    (lambda x, v, t: (x - col(t, x) * v, x + v), "eps: you returned x_t + v"),
    (lambda x, v, t: (x + (1 - col(t, x)) * v, x - col(t, x) * v), "you returned (eps, x0)"),
    (lambda x, v, t: x - col(t, x) * v, "return the pair"),
    (lambda x, v, t: (x - t[:, None] * v, x + (1 - t[:, None]) * v), "shape"),
    (lambda x, v, t: (x - col(t.double(), x).double() * v, x + (1 - col(t, x)) * v), "dtype"),
    (lambda x, v, t: (x - col(t, x) * v + 0.01 * torch.randn_like(x), x + (1 - col(t, x)) * v),
     "draws its own random numbers"),
    (lambda x, v, t: (x - 0.5 * col(t, x) * v, x + (1 - col(t, x)) * v), "x0 differs"),
])
def test_conversions_mistakes_are_named(wrong, hint):
    result = ex.check_flow_conversions(wrong)
    assert not result
    assert hint in result.message, result.message


# ------------------------------------------------------------------------------------------ the loss
def right_loss(model, x0, t, noise):
    x_t = (1 - col(t, x0)) * x0 + col(t, x0) * noise
    return (model(x_t, t) - (noise - x0)).pow(2).mean()


@pytest.mark.parametrize("right", [
    right_loss,
    lambda m, x0, t, n: flow.flow_matching_loss(m, x0, t=t, noise=n),
    lambda m, x0, t, n: torch.nn.functional.mse_loss(m(flow.flow_path(x0, n, t), t), flow.velocity_target(x0, n)),
])
def test_loss_right_answers_pass(right):
    result = ex.check_flow_matching_loss(right)
    assert result, result.message


def loss_with(path=None, target=None, time=None, reduce=None):
    def fn(model, x0, t, noise):
        tc = col(t, x0)
        x_t = (1 - tc) * x0 + tc * noise if path is None else path(x0, tc, noise)
        out = model(x_t, t if time is None else time(t))
        err = (out - ((noise - x0) if target is None else target(x0, noise))).pow(2)
        return err.mean() if reduce is None else reduce(err)
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (loss_with(target=lambda x0, n: x0 - n), "the target's sign"),
    (loss_with(path=lambda x0, tc, n: tc * x0 + (1 - tc) * n), "the path is reversed"),
    (loss_with(target=lambda x0, n: n), "regressed on the noise"),
    (loss_with(target=lambda x0, n: x0), "regressed on x0"),
    (loss_with(time=lambda t: 1 - t), "called the model at 1 - t"),
    (loss_with(reduce=lambda e: e.flatten(1).sum(1).mean()), "summed over the dimensions"),
    (loss_with(reduce=lambda e: e.flatten(1).mean(1).sum()), "summed over the batch"),
    (loss_with(reduce=lambda e: e.mean().sqrt()), "root mean square"),
    (loss_with(reduce=lambda e: e.flatten(1).mean(1)), "one number"),
    (lambda m, x0, t, n: right_loss(m, x0, torch.rand_like(t), n), "draws its own random numbers"),
    (loss_with(reduce=lambda e: 0.5 * e.mean()), "your loss is"),
])
def test_loss_mistakes_are_named(wrong, hint):
    result = ex.check_flow_matching_loss(wrong)
    assert not result
    assert hint in result.message, result.message
