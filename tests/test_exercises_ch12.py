"""Chapter 12's checkers: check_kl_term and check_latent_scale pass right answers, written several ways, and name
each typical mistake."""
import math

import pytest
import torch

from minidiff import exercises as ex
from minidiff.autoencoder import kl_to_standard_normal, latent_scale

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ the KL term
def kl_distributions(mean, logvar):
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    return torch.distributions.kl_divergence(q, p)


def kl_from_std(mean, logvar):
    std = torch.exp(logvar / 2)
    return (mean**2 + std**2) / 2 - torch.log(std) - 0.5


@pytest.mark.parametrize("right", [kl_to_standard_normal, kl_distributions, kl_from_std])
def test_kl_right_answers_pass(right):
    result = ex.check_kl_term(right)
    assert result, result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda m, lv: m**2 + lv.exp() - 1 - lv, "the factor 1/2 is missing"),
    (lambda m, lv: 0.5 * (m**2 + lv - 1 - lv.log()), "not logvar itself"),
    (lambda m, lv: 0.5 * (m**2 + (lv / 2).exp() - 1 - lv), "used the standard deviation"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 + lv), "minus sign"),
    (lambda m, lv: 0.5 * (m**2 + lv.exp() - lv), "the -1 is missing"),
    (lambda m, lv: 0.5 * (m + lv.exp() - 1 - lv), "the mean enters squared"),
    (lambda m, lv: 0.5 * ((1 + m**2) / lv.exp() - 1 + lv), "the other direction"),
    (lambda m, lv: kl_to_standard_normal(m, lv).mean(), "of mean's shape"),
    (lambda m, lv: kl_to_standard_normal(m, lv).sum(1), "of mean's shape"),
    (lambda m, lv: kl_to_standard_normal(m, lv).double(), "keep the inputs' dtype"),
    (lambda m, lv: kl_to_standard_normal(m, lv).tolist(), "return a tensor"),
    (lambda m, lv: 1.01 * kl_to_standard_normal(m, lv), "expected"),
    (lambda m, lv: 1 / 0, "raised ZeroDivisionError"),
])
def test_kl_mistakes_are_named(wrong, hint):
    result = ex.check_kl_term(wrong)
    assert not result
    assert hint in result.message, result.message


# ------------------------------------------------------------------------------------------ the latent scale
@pytest.mark.parametrize("right", [
    latent_scale,
    lambda z: 1 / z.std(),                                               # a 0-d tensor
    lambda z: 1 / float(z.flatten().std(unbiased=False)),                # n instead of n - 1: within tolerance
    lambda z: 1 / math.sqrt(float(((z - z.mean()) ** 2).mean())),
])
def test_scale_right_answers_pass(right):
    result = ex.check_latent_scale(right)
    assert result, result.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda z: z.std(), "that is the standard deviation itself"),
    (lambda z: 1 / z.var(), "that is 1 / variance"),
    (lambda z: 1 / z.square().mean().sqrt(), "root mean square"),
    (lambda z: 1 / z.abs().mean(), "1 / mean |z|"),
    (lambda z: 1 / z.std((0, 2, 3)), "not one per channel"),
    (lambda z: 1 / z[:, 0].std(), "one channel's 1 / std"),
    (lambda z: float((1 / z.transpose(0, 1).flatten(1).std(1)).mean()), "or their average"),
    (lambda z: "scale", "return a number"),
    (lambda z: 0.18215, "expected 1 / std"),
    (lambda z: z[1000], "raised IndexError"),
])
def test_scale_mistakes_are_named(wrong, hint):
    result = ex.check_latent_scale(wrong)
    assert not result
    assert hint in result.message, result.message
