"""The notation page (book/notation.md): its code cells hold, and it covers every converter.

The page is executed when the book is built; running its cells here as well means that a change to a
converter which contradicts the page fails the unit tests, not only the (slower) book build.
"""
import math
import re
from pathlib import Path

import pytest
import torch

import minidiff as md
from minidiff import conventions
from tolerances import F32_BETA_RTOL, assert_within, cumprod_rel_error

PAGE = Path(__file__).resolve().parents[1] / "book" / "notation.md"
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def page_cells() -> list[str]:
    return CELL.findall(PAGE.read_text())


def test_page_has_code_cells_for_each_convention():
    text = PAGE.read_text()
    for heading in ("Timestep index", "DDIM paper", "Guidance scale", "What $\\eta$ means"):
        assert heading in text, f"notation page lost its section on {heading!r}"
    assert len(page_cells()) >= 5


def test_page_cells_run_and_their_assertions_hold(capsys):
    namespace: dict = {}
    for source in page_cells():
        exec(compile(source, str(PAGE), "exec"), namespace)   # each cell asserts what the text claims
    out = capsys.readouterr().out
    assert "paper t = 10 <-> index i = 9" in out
    assert "s = [1.0, 1.3, 2.0, 5.0]" in out


def test_every_converter_is_on_the_page():
    text = PAGE.read_text()
    public = [name for name in dir(conventions) if not name.startswith("_") and callable(getattr(conventions, name))
              and getattr(getattr(conventions, name), "__module__", "") == conventions.__name__]
    assert public, "minidiff.conventions has no converters?"
    missing = [name for name in public if f"md.{name}" not in text]
    assert not missing, f"converters not documented on the notation page: {missing}"


def test_page_claims_match_diffusers():
    """An independent reference: diffusers' alphas_cumprod is our alpha_bar (the DDIM paper's alpha), and
    DDIM's sigma for eta is eta * sqrt(variance) as diffusers computes it."""
    diffusers = pytest.importorskip("diffusers")
    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                   beta_end=0.02, set_alpha_to_one=True)
    sched = md.NoiseSchedule.linear(T=1000)
    # diffusers' table is float32: each factor 1 - beta_k rounded, so a relative error growing with t (tolerances.py)
    rel = cumprod_rel_error(sched.betas, F32_BETA_RTOL * sched.betas)
    assert_within(ddim.alphas_cumprod, md.ddim_paper_alpha(sched), rel * sched.alpha_bars, "alphas_cumprod")
    # The sigma formula itself, on our float64 table: in float32, 1 - alpha_bar_0 = 1e-4 alone would carry ~3e-4
    # relative error. Both sides evaluate DDIM eq. (16) in float64, whose cancellations (1 - alpha_bar >= 1e-4,
    # 1 - a / a_prev >= 2e-3) leave it good to ~1e-12 relative.
    ddim.alphas_cumprod = sched.alpha_bars.clone()
    for t, prev in [(999, 979), (500, 480), (20, 0)]:
        variance = float(ddim._get_variance(t, prev))
        for eta in (0.0, 0.5, 1.0):
            ours = md.ddim_sigma(float(sched.alpha_bars[t]), float(sched.alpha_bars[prev]), eta)
            assert math.isclose(ours, eta * variance**0.5, rel_tol=1e-12, abs_tol=0.0)
