"""minidiff.runtime: the timing helper the chapters' speed cells use."""
import time

import pytest

from minidiff.runtime import seconds_per_call


def test_seconds_per_call_warms_up_once_then_averages_the_repeats():
    calls = []

    def work():
        calls.append(time.perf_counter())
        time.sleep(0.02)

    seconds = seconds_per_call(work, repeats=4)
    assert len(calls) == 5                                     # one warm-up call, then four timed ones
    assert 0.02 <= seconds                                      # each timed call sleeps 20 ms
    assert 4 * seconds <= time.perf_counter() - calls[0] - 0.02     # the warm-up call is not in the timed span


@pytest.mark.parametrize("repeats", [0, -1, 1.5, "3"])
def test_seconds_per_call_refuses_a_bad_repeat_count(repeats):
    with pytest.raises((ValueError, TypeError), match="repeats"):
        seconds_per_call(lambda: None, repeats=repeats)


def test_seconds_per_call_refuses_a_non_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        seconds_per_call(3)
