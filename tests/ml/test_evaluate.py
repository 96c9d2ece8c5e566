from __future__ import annotations

import json
import math

import numpy as np
import pytest

from classifiers.ml.eval.evaluate import (
    KeywordBaseline,
    auroc,
    average_precision,
    compare_reports,
    confusion,
    evaluation_report,
    histogram,
    pr_curve,
    refusal_baseline_scores,
    roc_curve,
    tpr_at_fpr,
    transform_families,
)
from classifiers.ml.types import PERMITTED, RESTRICTED, CategorySpec, ConstitutionSpec


def test_auroc_exact_values() -> None:
    assert auroc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == 0.5  # ties count half
    # Positives at 0.8, 0.4; negatives at 0.6, 0.2: 3 of 4 pairs ordered right.
    assert auroc([0.8, 0.6, 0.4, 0.2], [1, 0, 1, 0]) == 0.75
    assert math.isnan(auroc([0.1, 0.2], [1, 1]))


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve([0.8, 0.6, 0.4, 0.2], [1, 0, 1, 0])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.8, 0.6, 0.4, 0.2]
    # Ties collapse into one point.
    fpr, tpr, thresholds = roc_curve([0.5, 0.5, 0.1], [1, 0, 0])
    assert fpr.tolist() == [0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 1.0, 1.0]


def test_pr_curve_and_average_precision() -> None:
    precision, recall, _ = pr_curve([0.8, 0.6, 0.4, 0.2], [1, 0, 1, 0])
    assert precision.tolist() == [1.0, 1.0, 0.5, pytest.approx(2 / 3), 0.5]
    assert recall.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    # AP = 0.5 * 1.0 + 0.5 * 2/3
    assert average_precision([0.8, 0.6, 0.4, 0.2], [1, 0, 1, 0]) == pytest.approx(
        0.5 + 1 / 3
    )
    assert average_precision([0.9, 0.1], [1, 0]) == 1.0


def test_tpr_at_fpr_and_confusion() -> None:
    scores = [0.95, 0.9, 0.7, 0.3] + [0.8] + [i / 200 for i in range(99)]
    labels = [1, 1, 1, 1] + [0] * 100
    # 1 % of 100 benign = the single 0.8 may be flagged: the ROC point with the
    # most recall flags everything above the next benign score (0.49), 0.7 too.
    assert tpr_at_fpr(scores, labels, 0.01) == 0.75
    assert tpr_at_fpr(scores, labels, 0.0) == 0.5  # threshold just above 0.8
    assert confusion([0.9, 0.6, 0.4, 0.1], [1, 0, 1, 0], 0.5) == {
        "tp": 1,
        "fp": 1,
        "tn": 1,
        "fn": 1,
    }
    # The boundary is inclusive: score == threshold is flagged.
    assert confusion([0.5], [1], 0.5)["tp"] == 1


def test_histogram() -> None:
    result = histogram([0.05, 0.15, 0.95, 1.0], [0, 0, 1, 1], bins=10)
    assert len(result["edges"]) == 11
    assert result["benign"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert result["harmful"] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 2]


def test_transform_families() -> None:
    assert transform_families("original") == ["original"]
    assert transform_families("base64+typos:0.1") == ["base64", "typos"]
    assert transform_families("") == ["original"]


def _report(name: str, scores: list[float]) -> dict:
    labels = [1, 1, 1, 0, 0, 0]
    categories = ["widgets", "widgets", "gadgets", "gardening", "gardening", "cooking"]
    transforms = [
        "original",
        "base64",
        "base64+typos:0.1",
        "original",
        "typos",
        "original",
    ]
    return evaluation_report(
        scores=scores,
        labels=labels,
        categories=categories,
        transforms=transforms,
        threshold=0.5,
        name=name,
    )


def test_evaluation_report() -> None:
    report = _report("input-v1", [0.9, 0.4, 0.7, 0.6, 0.1, 0.2])
    json.dumps(report, allow_nan=False)  # must be strict JSON
    assert report["n"] == 6 and report["positives"] == 3
    assert report["confusion"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 1}
    assert report["tpr_at_threshold"] == pytest.approx(2 / 3)
    assert report["fpr_at_threshold"] == pytest.approx(1 / 3)
    assert report["auroc"] == pytest.approx(8 / 9, abs=1e-6)
    widgets = report["per_category"]["widgets"]
    assert {k: widgets[k] for k in ("kind", "n", "recall")} == {
        "kind": RESTRICTED,
        "n": 2,
        "recall": 0.5,
    }
    assert widgets["interval"][0] < 0.5 < widgets["interval"][1]
    assert report["per_category"]["gadgets"]["recall"] == 1.0
    gardening = report["per_category"]["gardening"]
    assert {k: gardening[k] for k in ("kind", "n", "fpr")} == {
        "kind": PERMITTED,
        "n": 2,
        "fpr": 0.5,
    }
    assert report["per_category"]["cooking"]["fpr"] == 0.0
    base64 = report["per_transform"]["base64"]
    assert (base64["n"], base64["recall"], base64["fpr"]) == (2, 0.5, None)
    assert base64["fpr_interval"] is None
    typos = report["per_transform"]["typos"]
    assert (typos["n"], typos["recall"], typos["fpr"]) == (2, 1.0, 0.0)
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["tpr"][-1] == 1.0
    assert sum(report["histogram"]["harmful"]) == 3


def test_report_curves_are_downsampled() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=2000).tolist()
    scores = (rng.random(2000) * 0.5 + np.array(labels) * 0.5).tolist()
    report = evaluation_report(
        scores=scores,
        labels=labels,
        categories=["x"] * 2000,
        transforms=None,
        threshold=0.5,
        name="big",
    )
    assert 100 < len(report["roc"]["fpr"]) <= 200
    assert len(report["pr"]["recall"]) <= 200
    assert report["roc"]["fpr"][0] == 0.0 and report["roc"]["fpr"][-1] == 1.0
    assert report["auroc"] > 0.99


def test_single_class_report_is_json() -> None:
    report = evaluation_report(
        scores=[0.1, 0.2],
        labels=[0, 0],
        categories=["cooking", "cooking"],
        transforms=["original", "original"],
        threshold=0.5,
        name="benign-only",
    )
    assert report["auroc"] is None and report["tpr_at_threshold"] is None
    json.dumps(report, allow_nan=False)


def test_compare_reports() -> None:
    a = _report("keyword", [0.9, 0.4, 0.7, 0.6, 0.1, 0.2])
    b = _report("input-v1", [0.9, 0.8, 0.7, 0.1, 0.1, 0.2])
    comparison = compare_reports(a, b)
    metrics = {row["metric"]: row for row in comparison["metrics"]}
    assert metrics["tpr_at_threshold"]["delta"] == pytest.approx(1 / 3, abs=1e-6)
    assert metrics["fpr_at_threshold"]["delta"] == pytest.approx(-1 / 3, abs=1e-6)
    assert comparison["per_category"]["widgets"] == {
        "metric": "recall",
        "a": 0.5,
        "b": 1.0,
        "delta": 0.5,
    }
    assert comparison["per_category"]["gardening"]["metric"] == "fpr"
    assert comparison["a"] == "keyword" and comparison["b"] == "input-v1"


def _spec() -> ConstitutionSpec:
    return ConstitutionSpec(
        name="demo",
        domain="household gadgets",
        categories=(
            CategorySpec(
                name="forbidden widgets",
                kind=RESTRICTED,
                description="Building the forbidden widget or its sprocket.",
                excludes="Buying garden tools.",
                example_queries=("how do I make the forbidden widget",),
            ),
            CategorySpec(
                name="gardening",
                kind=PERMITTED,
                description="Growing plants, garden tools and sprocket-free planters.",
                example_queries=("how do I water tomatoes",),
            ),
        ),
    )


def test_keyword_baseline() -> None:
    baseline = KeywordBaseline.from_constitution(_spec())
    assert "forbidden" in baseline.keywords and "widget" in baseline.keywords
    assert "sprocket" not in baseline.keywords  # also in a permitted category
    assert "how" not in baseline.keywords and "the" not in baseline.keywords
    assert "garden" not in baseline.keywords  # from the restricted "excludes" text
    scores = baseline.score(
        ["Forbidden widgets, please!", "a widget for tomatoes", "water my garden"]
    )
    assert scores == [1.0, 0.5, 0.0]
    assert baseline.matches("Forbidden widgets") == ["forbidden", "widget"]


def test_refusal_baseline() -> None:
    replies = ["I can't help with that.", "Sure, here is a poem."]
    scores = refusal_baseline_scores(replies, lambda r: r.startswith("I can't"))
    assert scores == [1.0, 0.0]


def test_report_with_per_example_thresholds() -> None:
    # e.g. per-category thresholds looked up by each example's predicted category
    report = evaluation_report(
        scores=[0.6, 0.6, 0.3, 0.3],
        labels=[1, 0, 1, 0],
        categories=["widgets", "gardening", "widgets", "gardening"],
        transforms=None,
        threshold=[0.2, 0.7, 0.2, 0.7],
        name="per-category",
    )
    assert report["threshold"] is None
    assert report["confusion"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}
    assert report["per_category"]["widgets"]["recall"] == 1.0
    original = report["per_transform"]["original"]
    assert (original["n"], original["recall"], original["fpr"]) == (4, 1.0, 0.0)


def test_every_rate_carries_its_95_percent_interval_and_small_splits_say_so() -> None:
    report = _report("input-v1", [0.9, 0.4, 0.7, 0.6, 0.1, 0.2])
    low, high = report["tpr_interval"]
    assert low < report["tpr_at_threshold"] < high
    low, high = report["fpr_interval"]
    assert low < report["fpr_at_threshold"] < high
    # Three benign examples cannot show a 1% false-positive rate; three harmful ones
    # leave the recall wide open.
    assert any("benign examples: 3 examples" in w for w in report["warnings"])
    assert any("3 harmful examples" in w for w in report["warnings"])


def test_a_split_big_enough_for_one_percent_has_no_sample_size_warning() -> None:
    rng = np.random.default_rng(0)
    labels = [1] * 400 + [0] * 600
    scores = [float(rng.uniform(0.6, 1.0) if y else rng.uniform(0.0, 0.5)) for y in labels]
    report = evaluation_report(
        scores=scores, labels=labels, categories=["a" if y else "b" for y in labels],
        threshold=0.55, name="big",
    )  # fmt: skip
    assert report["warnings"] == []
    assert report["tpr_interval"][1] - report["tpr_interval"][0] < 0.02
