"""Probe cascade: escalation band, logit ensemble, stats, probe variant comparison."""

from __future__ import annotations

import math

import pytest

from classifiers.ml.eval.cascade import (
    Cascade,
    calibrate_band,
    cascade_stats,
    compare_probe_options,
)
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.serving.cascade import ensemble_score
from tests.ml.test_output_classifier import toy_examples
from tests.ml.test_value_head import make_tokenizer, tiny_lm


def test_cascade_escalates_only_inside_band_and_ensembles():
    heavy_batches = []

    def heavy(items):
        heavy_batches.append(list(items))
        return [0.9 for _ in items]

    cascade = Cascade(
        lambda items: [x for x in items], heavy, band=(0.3, 0.6), weight=0.25
    )
    results = cascade([0.1, 0.3, 0.5, 0.6, 0.95])
    assert heavy_batches == [[0.3, 0.5, 0.6]]  # one batched call, band inclusive
    assert [r.escalated for r in results] == [False, True, True, True, False]
    assert results[0].score == 0.1 and results[0].heavy_score is None
    z = 0.25 * math.log(0.5 / 0.5) + 0.75 * math.log(0.9 / 0.1)
    assert results[2].score == pytest.approx(1 / (1 + math.exp(-z)))
    assert results[2].probe_score == 0.5 and results[2].heavy_score == 0.9
    # No uncertain items: the heavy classifier is never called.
    heavy_batches.clear()
    cascade([0.01, 0.99])
    assert heavy_batches == []


def test_ensemble_weight_extremes():
    assert ensemble_score(0.2, 0.9, 1.0) == pytest.approx(0.2)
    assert ensemble_score(0.2, 0.9, 0.0) == pytest.approx(0.9)


def test_calibrate_band_fraction_and_center():
    scores = [i / 100 for i in range(1, 100)]  # 0.01 .. 0.99
    labels = [int(s > 0.5) for s in scores]
    lo, hi = calibrate_band(scores, labels, escalate_fraction=0.1)
    inside = [s for s in scores if lo <= s <= hi]
    assert len(inside) == 10
    assert lo <= 0.51 <= hi  # around the separating threshold
    lo2, hi2 = calibrate_band(scores, labels, escalate_fraction=0.05, center=0.9)
    assert lo2 <= 0.9 <= hi2 and lo2 > 0.8
    lo3, hi3 = calibrate_band(scores, labels, escalate_fraction=0.05, target_fpr=0.0)
    assert lo3 <= 0.5 <= hi3 + 0.02  # strictest threshold sits at the top benign


def test_cascade_stats_relative_cost():
    cascade = Cascade(lambda xs: xs, lambda xs: [0.5] * len(xs), band=(0.4, 0.6))
    results = cascade([0.1, 0.5, 0.9, 0.45])
    stats = cascade_stats(results, probe_cost=0.1, heavy_cost=2.0)
    assert stats["escalation_rate"] == 0.5 and stats["heavy_calls"] == 2
    assert stats["relative_cost"] == pytest.approx((4 * 0.1 + 2 * 2.0) / (4 * 2.0))


def test_compare_probe_options_trains_all_variants():
    tok = make_tokenizer()
    lm = tiny_lm(tok.vocab_size, layers=4)
    base = OutputClassifierConfig(lr=0.05, epochs=10, batch_size=8, window=4)
    out = compare_probe_options(
        base,
        toy_examples(24),
        toy_examples(12, seed=1),
        lm=lm,
        tokenizer=tok,
        device="cpu",
    )
    names = [o["name"] for o in out]
    assert names == [
        "last/running_max",
        "last/window",
        "multi/running_max",
        "multi/window",
    ]
    assert out[2]["layers"] == [2, 3, -1]
    for o in out:
        assert 0.0 <= o["auroc"] <= 1.0
        assert set(o["tpr_at_fpr"]) == {"0.01", "0.05"}
        assert len(o["history"]) == 10
    assert max(o["auroc"] for o in out) > 0.9
