"""Shared test fixtures.

Timestep convention used throughout: ``t`` is minidiff's 0-based index, the paper's step ``t + 1``.
Every random draw uses a seeded ``torch.Generator``; nothing seeds globally.
"""
import pytest
import torch

import minidiff as md
from chapter_runs import NAME as CHAPTER_RUNS, ChapterRuns


def pytest_configure(config):
    """Record nbval's run of each chapter, so that the browser test builds the book from it (tests/chapter_runs.py)."""
    if not config.pluginmanager.has_plugin(CHAPTER_RUNS):
        config.pluginmanager.register(ChapterRuns(), CHAPTER_RUNS)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread, then restore the setting.

    The math-core tests use small tensors, where a second thread buys nothing and, on a busy 2-core machine,
    costs up to 10x in thread hand-offs. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def linear():
    """The DDPM paper's schedule: T = 1000, betas from 1e-4 to 0.02."""
    return md.NoiseSchedule.linear(T=1000)


@pytest.fixture(scope="session")
def cosine():
    """The improved-DDPM cosine schedule, T = 1000."""
    return md.NoiseSchedule.cosine(T=1000)


@pytest.fixture(scope="session")
def zero_snr(linear):
    """The linear schedule rescaled to zero terminal SNR (alpha_bar_T = 0, last beta = 1)."""
    return linear.rescale_zero_terminal_snr()


@pytest.fixture(scope="session")
def small():
    """A short linear schedule for end-to-end sampling tests that must stay fast."""
    return md.NoiseSchedule.linear(T=200, beta_start=5e-4, beta_end=0.1)


@pytest.fixture
def gen():
    """A factory of seeded CPU generators: ``gen(seed)``."""
    return lambda seed=0: torch.Generator().manual_seed(seed)


class TrueEps:
    """A "perfect model" for a known clean batch ``x0``: returns the exact noise that produced ``x_t``.

    For x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps it returns eps, computed from x_t alone (it never
    sees the noise), so it is exactly right on every noised version of ``x0``.
    """

    def __init__(self, x0: torch.Tensor, sched: md.NoiseSchedule):
        self.x0, self.sched = x0, sched

    def __call__(self, x_t, t, y=None):
        alpha_bar = md.schedules.gather(self.sched.alpha_bars, t, x_t)        # (B, 1, ...)
        return md.eps_from_x0(x_t, self.x0, alpha_bar)


@pytest.fixture
def true_eps():
    """``true_eps(x0, sched)`` builds a :class:`TrueEps` model."""
    return TrueEps


@pytest.fixture(scope="session")
def points2d():
    """Five 2D points in three classes, well separated (pairwise distance >= 2) and deliberately asymmetric.

    Point 0 appears twice, so under the empirical distribution it has probability 2/6 and the others 1/6.
    """
    points = torch.tensor([[2.0, 0.0], [2.0, 0.0], [-2.0, 0.5], [0.0, 2.5], [0.5, -2.0], [-2.0, -2.0]],
                          dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return points, labels


@pytest.fixture
def oracle(small, points2d):
    """The exact denoiser of ``points2d`` (with its labels, so 3 classes) on the ``small`` schedule."""
    points, labels = points2d
    return md.OracleDenoiser(points, small, labels=labels)
