"""Calibrating and evaluating the streaming probe cascade (serving/cascade.py).

With a running-max probe every stream that reaches lo escalates, so lo sets the
escalation rate: it is calibrated so that a chosen fraction of benign traffic
escalates. hi is the highest probe score any benign calibration stream reached.
`run_cascade` replays precomputed probe and heavy per-token scores through
StreamingCascade; `calibrate_cascade` picks band, weight and threshold;
`evaluate_cascade` reports probe, heavy and cascade side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers.ml.eval.calibrate import (
    calibrate_thresholds,
    false_positive_rate,
    threshold_for_fpr,
)
from classifiers.ml.eval.evaluate import auroc, tpr_at_fpr
from classifiers.ml.output.scoring import final_scores
from classifiers.ml.serving.cascade import DEFAULT_WEIGHTS, CascadeSettings, replay

# --------------------------------------------------------------- calibration


def _check(probe: Sequence[Sequence[float]], heavy: Sequence[Sequence[float]],
           labels: Sequence[int]) -> None:  # fmt: skip
    if not (len(probe) == len(heavy) == len(labels)):
        raise ValueError("probe scores, heavy scores and labels must have one entry per response")
    for p, h in zip(probe, heavy, strict=True):
        if len(p) != len(h):
            raise ValueError("the probe and the heavy classifier must score the same tokens")
    if not any(y == 0 for y in labels):
        raise ValueError("calibrating a cascade needs benign responses")


@dataclass
class CascadeRun:
    """A cascade's scores over a set of responses, with what it cost."""

    finals: list[float]
    escalated: list[bool]
    heavy_tokens: int
    tokens: int

    def escalation_rate(self, labels: Sequence[int] | None = None, label: int | None = None) -> float:
        """Share escalated: of all streams, or of those with `label`."""
        picked = [e for i, e in enumerate(self.escalated) if label is None or labels[i] == label]
        return float(np.mean(picked)) if picked else 0.0

    @property
    def heavy_token_fraction(self) -> float:
        """Heavy-classifier tokens over what running it on every token would take."""
        return self.heavy_tokens / self.tokens if self.tokens else 0.0


def run_cascade(
    probe: Sequence[Sequence[float]], heavy: Sequence[Sequence[float]], settings: CascadeSettings
) -> CascadeRun:
    runs = [replay(p, h, settings) for p, h in zip(probe, heavy, strict=True)]
    return CascadeRun(
        finals=[r.final for r in runs],
        escalated=[r.escalated_at is not None for r in runs],
        heavy_tokens=sum(r.heavy_tokens for r in runs),
        tokens=sum(len(p) for p in probe),
    )


@dataclass
class Calibration:
    settings: CascadeSettings
    weights: list[dict[str, float]] = field(default_factory=list)  # per candidate weight
    stats: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings.to_dict(), "weights": self.weights, "stats": self.stats}


def calibrate_cascade(
    probe: Sequence[Sequence[float]],
    heavy: Sequence[Sequence[float]],
    labels: Sequence[int],
    *,
    target_fpr: float,
    escalate_fraction: float,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    categories: Sequence[str] | None = None,
    per_category_fpr: dict[str, float] | None = None,
    predicted_categories: Sequence[str] | None = None,
) -> Calibration:
    """Band, weight and threshold from a benign+harmful calibration split.

    lo: the probe score that `escalate_fraction` of benign streams reach (an
    interpolated quantile); hi: the highest probe score of any benign stream. For each candidate weight the
    threshold is set on the benign cascade scores to `target_fpr`; the weight with
    the highest TPR at its threshold wins (ties: the probe-heavier weight, cheaper
    to trust). With `per_category_fpr` (and the true `categories`), the chosen
    weight's cascade scores also get per-category thresholds, calibrated as the
    single classifiers' are (classifiers.ml.eval.calibrate): on the benign streams whose
    prompt `predicted_categories` assigns to the category, else on all benign ones."""
    _check(probe, heavy, labels)
    if not 0.0 < escalate_fraction <= 1.0:
        raise ValueError("escalate_fraction must be in (0, 1]")
    y = np.asarray(labels)
    probe_finals = np.asarray(final_scores(probe))
    benign_peak = float(probe_finals[y == 0].max())
    # An interpolated quantile, not threshold_for_fpr's conservative count: on a small
    # split the latter would put lo at the top benign score, a band of one point.
    lo = float(np.quantile(probe_finals[y == 0], 1.0 - escalate_fraction))
    band = (min(lo, benign_peak), benign_peak)
    best: tuple[float, float, float, CascadeRun] | None = None
    table = []
    for w in sorted(weights, reverse=True):
        trial = CascadeSettings(band, float(w), 1.0)
        run = run_cascade(probe, heavy, trial)
        finals = np.asarray(run.finals)
        threshold = threshold_for_fpr(finals[y == 0], target_fpr)
        tpr = float(np.mean(finals[y == 1] >= threshold)) if (y == 1).any() else 0.0
        table.append({"weight": float(w), "threshold": threshold, "tpr": tpr,
                      "fpr": false_positive_rate(finals[y == 0], threshold)})  # fmt: skip
        if best is None or tpr > best[2]:
            best = (float(w), threshold, tpr, run)
    assert best is not None
    weight, threshold, tpr, run = best
    per_category: dict[str, float] = {}
    if per_category_fpr:
        if categories is None:
            raise ValueError("per-category targets need the examples' categories")
        per_category = calibrate_thresholds(
            run.finals, labels, categories, target_fpr=target_fpr,
            per_category_fpr=per_category_fpr, predicted_categories=predicted_categories,
        ).per_category  # fmt: skip
    return Calibration(
        CascadeSettings(band, weight, threshold, per_category),
        table,
        {
            "n": float(len(labels)),
            "n_benign": float((y == 0).sum()),
            "escalation_rate_benign": run.escalation_rate(labels, 0),
            "escalation_rate_harmful": run.escalation_rate(labels, 1),
            "escalation_rate": run.escalation_rate(),
            "heavy_token_fraction": run.heavy_token_fraction,
            "tpr_at_threshold": tpr,
        },
    )


def _headline(finals: Sequence[float], labels: Sequence[int],
              threshold: float | Sequence[float], target_fpr: float) -> dict[str, float | None]:  # fmt: skip
    """`threshold`: one number, or one per example (per-category thresholds)."""
    y = np.asarray(labels)
    s = np.asarray(finals)
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), s.shape)
    both = (y == 1).any() and (y == 0).any()
    return {
        "auroc": auroc(list(s), list(y)) if both else None,
        "tpr_at_target_fpr": tpr_at_fpr(list(s), list(y), target_fpr) if both else None,
        "tpr_at_threshold": float(np.mean(s[y == 1] >= t[y == 1])) if (y == 1).any() else None,
        "fpr_at_threshold": float(np.mean(s[y == 0] >= t[y == 0])) if (y == 0).any() else None,
    }


def evaluate_cascade(
    probe: Sequence[Sequence[float]],
    heavy: Sequence[Sequence[float]],
    labels: Sequence[int],
    settings: CascadeSettings,
    *,
    probe_threshold: float,
    heavy_threshold: float,
    target_fpr: float,
    predicted_categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Probe alone, heavy alone and the cascade on one split, each at its own
    calibrated threshold, plus how often (and how much) the heavy one ran. With
    `predicted_categories` (the input classifier's, per example) the cascade is
    judged at the threshold the guard would apply to each: per category."""
    _check(probe, heavy, labels)
    run = run_cascade(probe, heavy, settings)
    cascade_threshold: float | list[float] = settings.threshold
    if predicted_categories is not None and settings.per_category:
        cascade_threshold = [settings.threshold_for(c) for c in predicted_categories]
    return {
        "n": len(labels),
        "n_benign": int(sum(1 for y in labels if y == 0)),
        "probe": _headline(final_scores(probe), labels, probe_threshold, target_fpr),
        "heavy": _headline(final_scores(heavy), labels, heavy_threshold, target_fpr),
        "cascade": _headline(run.finals, labels, cascade_threshold, target_fpr),
        "escalation_rate": run.escalation_rate(),
        "escalation_rate_benign": run.escalation_rate(labels, 0),
        "escalation_rate_harmful": run.escalation_rate(labels, 1),
        "heavy_token_fraction": run.heavy_token_fraction,
    }
