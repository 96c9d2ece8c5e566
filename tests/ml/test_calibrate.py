from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifiers.ml.eval.calibrate import (
    Thresholds,
    calibrate_thresholds,
    false_positive_rate,
    roc_threshold_for_fpr,
    threshold_for_fpr,
)
from classifiers.ml.eval.evaluate import tpr_at_fpr

# Scores on a coarse grid so hypothesis produces plenty of ties.
grid_scores = st.lists(
    st.integers(min_value=0, max_value=20).map(lambda k: k / 20),
    min_size=1,
    max_size=60,
)
any_scores = st.lists(
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=60
)
fprs = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_exact_values() -> None:
    benign = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert threshold_for_fpr(benign, 0.1) == 1.0  # only 1.0 is flagged
    assert threshold_for_fpr(benign, 0.3) == 0.8
    assert threshold_for_fpr(benign, 0.35) == 0.8  # 3.5 rounds down to 3 allowed
    assert threshold_for_fpr(benign, 1.0) == 0.1
    zero = threshold_for_fpr(benign, 0.0)
    assert zero > 1.0 and zero == math.nextafter(1.0, math.inf)


def test_ties_are_never_split() -> None:
    # Five copies of 0.9: flagging any of them flags all five (50 % > 20 %).
    benign = [0.1] * 5 + [0.9] * 5
    threshold = threshold_for_fpr(benign, 0.2)
    assert threshold > 0.9
    assert false_positive_rate(benign, threshold) == 0.0
    assert threshold_for_fpr(benign, 0.5) == 0.9


def test_float_error_in_budget() -> None:
    # 0.07 * 100 = 7.000000000000001 must still allow exactly 7 false positives.
    benign = [i / 100 for i in range(100)]
    threshold = threshold_for_fpr(benign, 0.07)
    assert threshold == 0.93
    assert false_positive_rate(benign, threshold) == pytest.approx(0.07)


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        threshold_for_fpr([], 0.01)
    with pytest.raises(ValueError):
        threshold_for_fpr([0.5], 1.5)
    with pytest.raises(ValueError):
        threshold_for_fpr([float("nan")], 0.1)
    with pytest.raises(ValueError):
        calibrate_thresholds([0.9], [1], ["harm"])  # no benign examples


@settings(max_examples=150, deadline=None)
@given(benign=st.one_of(grid_scores, any_scores), target=fprs)
def test_achieved_fpr_within_target_and_threshold_is_smallest(
    benign: list[float], target: float
) -> None:
    threshold = threshold_for_fpr(benign, target)
    assert false_positive_rate(benign, threshold) <= target + 1e-12
    # Minimality: any smaller candidate (an observed score) would exceed the target.
    smaller = [s for s in set(benign) if s < threshold]
    if smaller:
        assert false_positive_rate(benign, max(smaller)) > target


@settings(max_examples=150, deadline=None)
@given(benign=grid_scores, a=fprs, b=fprs)
def test_threshold_is_monotone_in_target(
    benign: list[float], a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert threshold_for_fpr(benign, high) <= threshold_for_fpr(benign, low)


@settings(max_examples=100, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 20).map(lambda k: k / 20), st.integers(0, 1)),
        min_size=1,
        max_size=60,
    ),
    target=fprs,
)
def test_calibrate_thresholds_meets_target(
    data: list[tuple[float, int]], target: float
) -> None:
    if all(label == 1 for _, label in data):
        data = data + [(0.0, 0)]
    scores = [s for s, _ in data]
    labels = [y for _, y in data]
    categories = ["harm" if y else "benign" for y in labels]
    result = calibrate_thresholds(scores, labels, categories, target_fpr=target)
    assert result.achieved_fpr <= target + 1e-12
    benign = [s for s, y in data if y == 0]
    assert result.global_threshold == threshold_for_fpr(benign, target)
    assert result.n_benign == len(benign)


def _per_category_fixture() -> tuple[list[float], list[int], list[str], list[str]]:
    # 40 benign examples the model assigns to "widgets", 40 it assigns to "garden",
    # and 10 harmful ones. The "widgets" benign scores run higher.
    scores = [0.30 + i / 100 for i in range(40)]  # 0.30 .. 0.69
    scores += [i / 100 for i in range(40)]  # 0.00 .. 0.39
    scores += [0.95] * 10
    labels = [0] * 80 + [1] * 10
    categories = ["gardening"] * 80 + ["widgets"] * 10
    predicted = ["widgets"] * 40 + ["gardening"] * 40 + ["widgets"] * 10
    return scores, labels, categories, predicted


def test_per_category_target_moves_that_category_only() -> None:
    scores, labels, categories, predicted = _per_category_fixture()
    base = calibrate_thresholds(
        scores, labels, categories, target_fpr=0.05, predicted_categories=predicted
    )
    assert base.per_category == {}
    assert base.global_threshold == pytest.approx(0.66)  # 4 of 80 benign flagged
    looser = calibrate_thresholds(
        scores,
        labels,
        categories,
        target_fpr=0.05,
        per_category_fpr={"widgets": 0.5},
        predicted_categories=predicted,
    )
    # Calibrated on the 40 benign inputs assigned to "widgets": half may be flagged.
    assert looser.per_category["widgets"] == pytest.approx(0.50)
    assert looser.global_threshold == base.global_threshold
    assert looser.achieved_category_fpr["widgets"] == pytest.approx(0.5)
    assert looser.for_category("widgets") < looser.for_category("gardening")
    assert looser.is_flagged(0.55, "widgets") and not looser.is_flagged(0.55, None)

    stricter = calibrate_thresholds(
        scores,
        labels,
        categories,
        target_fpr=0.05,
        per_category_fpr={"widgets": 0.0},
        predicted_categories=predicted,
    )
    assert stricter.per_category["widgets"] > 0.69
    assert stricter.achieved_category_fpr["widgets"] == 0.0


def test_per_category_falls_back_to_all_benign_without_predictions() -> None:
    scores, labels, categories, _ = _per_category_fixture()
    result = calibrate_thresholds(
        scores, labels, categories, target_fpr=0.05, per_category_fpr={"widgets": 0.5}
    )
    benign = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    assert result.per_category["widgets"] == threshold_for_fpr(benign, 0.5)
    assert result.achieved_tpr == 1.0


def test_to_dict_round_trip_is_json() -> None:
    scores, labels, categories, predicted = _per_category_fixture()
    result = calibrate_thresholds(
        scores,
        labels,
        categories,
        target_fpr=0.05,
        per_category_fpr={"widgets": 0.1},
        predicted_categories=predicted,
    )
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert Thresholds.from_dict(data) == result


def test_the_roc_threshold_does_not_jump_over_a_gap() -> None:
    """Tied benign scores that overflow the budget: deployment jumps to the next
    benign score up (conservative); the evaluation metric takes the ROC point just
    above the ties, where every harmful score in the gap counts, with the same false
    positives on the split."""
    benign = [0.1] * 95 + [0.88] * 3 + [0.99] * 2
    assert threshold_for_fpr(benign, 0.03) == 0.99
    roc = roc_threshold_for_fpr(benign, 0.03)  # 3 allowed: the 0.99s, not the 0.88s
    assert roc == math.nextafter(0.88, math.inf)
    assert false_positive_rate(benign, roc) == false_positive_rate(benign, 0.99)
    assert tpr_at_fpr(benign + [0.9, 0.95], [0] * 100 + [1, 1], 0.03) == 1.0


def test_roc_threshold_edge_cases() -> None:
    benign = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert roc_threshold_for_fpr(benign, 0.1) == math.nextafter(0.9, math.inf)
    assert roc_threshold_for_fpr(benign, 1.0) == 0.1
    assert roc_threshold_for_fpr(benign, 0.0) == math.nextafter(1.0, math.inf)
    assert roc_threshold_for_fpr([0.5] * 4, 0.5) == math.nextafter(0.5, math.inf)


@settings(max_examples=150, deadline=None)
@given(benign=st.one_of(grid_scores, any_scores), target=fprs)
def test_roc_threshold_is_within_target_smallest_and_below_the_deployed_one(
    benign: list[float], target: float
) -> None:
    roc = roc_threshold_for_fpr(benign, target)
    assert false_positive_rate(benign, roc) <= target + 1e-12
    assert roc <= threshold_for_fpr(benign, target)
    smaller = [s for s in set(benign) if s < roc]
    if smaller:  # one step down flags a score that breaks the budget
        assert false_positive_rate(benign, max(smaller)) > target
        assert roc == math.nextafter(max(smaller), math.inf)
    else:
        assert roc == min(benign)


def test_a_pool_too_small_for_its_target_gives_a_visible_warning() -> None:
    scores = [i / 100 for i in range(100)] + [0.99] * 10
    labels = [0] * 100 + [1] * 10
    result = calibrate_thresholds(scores, labels, ["benign"] * 100 + ["harm"] * 10,
                                  target_fpr=0.01)  # fmt: skip
    # 100 benign prompts carry a 5% target but not a 1% one.
    assert len(result.warnings) == 1 and "100" in result.warnings[0]
    assert "500" in result.warnings[0]
    assert result.to_dict()["benign_needed"] == 500
    assert Thresholds.from_dict(result.to_dict()).warnings == result.warnings
    assert calibrate_thresholds(scores, labels, ["benign"] * 100 + ["harm"] * 10,
                                target_fpr=0.05).warnings == []  # fmt: skip


def test_a_per_category_target_is_checked_against_its_own_pool() -> None:
    scores, labels, categories, predicted = _per_category_fixture()
    result = calibrate_thresholds(
        scores, labels, categories, target_fpr=0.5,
        per_category_fpr={"widgets": 0.001}, predicted_categories=predicted,
    )  # fmt: skip
    assert any("'widgets'" in w and "5000" in w for w in result.warnings)
