"""Wilson intervals and the sample-size rule that reports and calibration use."""

from __future__ import annotations

import pytest

from classifiers.ml.eval.intervals import (
    examples_needed,
    rate_summary,
    too_few_for,
    wilson_interval,
)


def test_a_perfect_score_on_twelve_examples_is_not_a_certainty():
    low, high = wilson_interval(12, 12)
    assert high == 1.0 and low == pytest.approx(0.7575, abs=1e-3)


def test_the_interval_narrows_as_examples_grow():
    small = wilson_interval(9, 10)
    large = wilson_interval(900, 1000)
    assert small[0] < large[0] < 0.9 < large[1] < small[1]
    assert large[1] - large[0] < 0.04


def test_no_examples_means_nothing_is_known():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert rate_summary(0, 0)["rate"] is None


def test_a_rate_near_one_percent_needs_about_five_hundred_examples():
    assert examples_needed(0.01) == 500
    assert examples_needed(0.05) == 100
    assert examples_needed(0.001) == 5000
    assert examples_needed(5e-324) == 10**15  # no overflow for a vanishing target
    with pytest.raises(ValueError):
        examples_needed(0.0)


def test_too_few_examples_give_a_warning_that_names_the_count_needed():
    warning = too_few_for(0.01, 12, "benign calibration prompts")
    assert warning is not None and "12" in warning and "500" in warning
    assert too_few_for(0.01, 500, "benign calibration prompts") is None


def test_rate_summary_carries_count_rate_and_interval():
    summary = rate_summary(3, 4)
    assert summary["events"] == 3 and summary["n"] == 4 and summary["rate"] == 0.75
    assert summary["low"] < 0.75 < summary["high"]
