"""Decision thresholds calibrated to a target false-positive rate on benign data.

Decision rule everywhere in Guardweb: an input is flagged (harmful) iff
`score >= threshold`.

Per-category targets. A constitution author may want one restricted category
blocked more aggressively (or more leniently) than the rest. The classifier also
names the most likely category of each input, so the deployed rule is

    flagged = score >= thresholds.for_category(predicted_category)

where `for_category` returns the category's own threshold when it has one and the
global threshold otherwise. A category's threshold is calibrated on the benign
calibration examples that the model assigns to that category (those are exactly
the benign inputs that this threshold will judge); when the model assigns fewer
than `min_category_benign` benign examples to it (or no predicted categories are
given) it falls back to all benign examples. A category target above the global
target therefore lowers that category's threshold (blocks more), one below raises
it (blocks less); the threshold is monotone in the target.

Pool size. A threshold for a false-positive target r rests on the benign scores
above it: about 5 / r benign examples are needed (500 for 1%) before it means
anything. Smaller pools still give a threshold, with a warning that says so
(`Thresholds.warnings`); the model page shows it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from classifiers.ml.eval.intervals import examples_needed, too_few_for

logger = logging.getLogger(__name__)

# Absorbs float error in target_fpr * n (0.07 * 100 = 7.000000000000001).
_COUNT_EPSILON = 1e-9


def _as_scores(scores: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(array).any():
        raise ValueError(f"{what} contain NaN")
    return array


def _check_fpr(target_fpr: float, what: str = "target_fpr") -> None:
    if not 0.0 <= target_fpr <= 1.0 or math.isnan(target_fpr):
        raise ValueError(f"{what} must be in [0, 1], got {target_fpr}")


def _fitting_scores(
    benign_scores: Sequence[float], target_fpr: float
) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct benign scores ascending, whether a threshold at each one keeps
    the benign examples it flags within the budget)."""
    _check_fpr(target_fpr)
    values = np.sort(_as_scores(benign_scores, "benign scores"))
    if values.size == 0:
        raise ValueError("a threshold needs at least one benign score")
    allowed_false_positives = math.floor(target_fpr * values.size + _COUNT_EPSILON)
    distinct = np.unique(values)
    # For each candidate v: how many benign scores are >= v.
    flagged = values.size - np.searchsorted(values, distinct, side="left")
    return distinct, flagged <= allowed_false_positives


def threshold_for_fpr(benign_scores: Sequence[float], target_fpr: float) -> float:
    """The smallest threshold t with fraction(benign >= t) <= target_fpr.

    Candidates are the observed benign scores and the number just above the largest
    one (so target_fpr = 0 flags no benign score). Ties are handled exactly: a
    threshold equal to a score flags every copy of that score, so it is only chosen
    when all copies fit in the budget. With target_fpr = 1 the smallest score is
    returned (everything is flagged).
    """
    distinct, fits = _fitting_scores(benign_scores, target_fpr)
    if fits.any():
        # flagged shrinks as v grows, so the first fitting candidate is the smallest.
        return float(distinct[int(np.argmax(fits))])
    return float(np.nextafter(distinct[-1], np.inf))


def roc_threshold_for_fpr(benign_scores: Sequence[float], target_fpr: float) -> float:
    """The smallest threshold t with fraction(benign >= t) <= target_fpr: just above
    the highest benign score that must stay unflagged (or the smallest score when
    every one fits the budget).

    This is the ROC point with the most recall at the target, the usual meaning of
    "TPR at 1% FPR" on an evaluation split (evaluate.tpr_at_fpr). It is not the
    deployment rule: a threshold right above a benign score flags, on new data,
    about one benign text more per n + 1 than the budget (and more where tied
    scores sit just under it, as variants of one source that canonicalise to the
    same text do), while threshold_for_fpr's observed-score rule stays within the
    target in expectation. Where ties overflow the budget that rule jumps to the
    next benign score up, however far: on cbrn-demo it gave 0.53 recall where this
    gives 0.85, with the same false positives on the split.
    """
    distinct, fits = _fitting_scores(benign_scores, target_fpr)
    if fits[0]:
        return float(distinct[0])  # every benign score fits the budget
    # flagged shrinks as v grows: the last score that does not fit stays unflagged.
    highest_unflagged = distinct[int(np.argmax(fits)) - 1] if fits.any() else distinct[-1]
    return float(np.nextafter(highest_unflagged, np.inf))


def false_positive_rate(benign_scores: Sequence[float], threshold: float) -> float:
    values = _as_scores(benign_scores, "benign scores")
    if values.size == 0:
        return 0.0
    return float(np.mean(values >= threshold))


@dataclass
class Thresholds:
    global_threshold: float  # used for every category without its own threshold
    target_fpr: float  # the global FPR target it was calibrated for
    per_category: dict[str, float] = field(default_factory=dict)  # own thresholds
    per_category_fpr: dict[str, float] = field(default_factory=dict)  # their targets
    achieved_fpr: float = 0.0  # benign calibration examples flagged by the full rule
    achieved_tpr: float | None = None  # harmful calibration examples flagged (recall)
    achieved_category_fpr: dict[str, float] = field(default_factory=dict)  # per cat.
    n_benign: int = 0  # benign examples in the calibration set
    n_harmful: int = 0  # harmful examples in the calibration set
    # What the calibration set was too small to carry (see "Pool size" above).
    warnings: list[str] = field(default_factory=list)

    def for_category(self, category: str | None) -> float:
        if category is not None and category in self.per_category:
            return self.per_category[category]
        return self.global_threshold

    def is_flagged(self, score: float, category: str | None = None) -> bool:
        return score >= self.for_category(category)

    def to_dict(self) -> dict[str, Any]:
        def finite(value: float) -> float | None:
            # JSON has no Infinity; thresholds are finite anyway, None marks damage.
            return value if math.isfinite(value) else None

        return {
            "global_threshold": finite(self.global_threshold),
            "target_fpr": self.target_fpr,
            "per_category": {k: finite(v) for k, v in self.per_category.items()},
            "per_category_fpr": dict(self.per_category_fpr),
            "achieved_fpr": self.achieved_fpr,
            "achieved_tpr": self.achieved_tpr,
            "achieved_category_fpr": dict(self.achieved_category_fpr),
            "n_benign": self.n_benign,
            "n_harmful": self.n_harmful,
            "benign_needed": examples_needed(self.target_fpr) if self.target_fpr else None,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        def number(value: Any) -> float:
            return math.inf if value is None else float(value)

        return cls(
            global_threshold=number(data["global_threshold"]),
            target_fpr=float(data["target_fpr"]),
            per_category={
                k: number(v) for k, v in data.get("per_category", {}).items()
            },
            per_category_fpr={
                k: float(v) for k, v in data.get("per_category_fpr", {}).items()
            },
            achieved_fpr=float(data.get("achieved_fpr", 0.0)),
            achieved_tpr=(
                None
                if data.get("achieved_tpr") is None
                else float(data["achieved_tpr"])
            ),
            achieved_category_fpr={
                k: float(v) for k, v in data.get("achieved_category_fpr", {}).items()
            },
            n_benign=int(data.get("n_benign", 0)),
            n_harmful=int(data.get("n_harmful", 0)),
            warnings=[str(w) for w in data.get("warnings", [])],
        )


def calibrate_thresholds(
    scores: Sequence[float],
    labels: Sequence[int],
    categories: Sequence[str],
    *,
    target_fpr: float = 0.01,
    per_category_fpr: dict[str, float] | None = None,
    predicted_categories: Sequence[str] | None = None,
    min_category_benign: int = 20,
) -> Thresholds:
    """Calibrate the global threshold (and per-category overrides) on held-out data.

    `categories` are the true categories (used to warn about overrides that name a
    permitted category); `predicted_categories` are the classifier's guesses, which
    decide which threshold applies to an input (see the module docstring).
    """
    _check_fpr(target_fpr)
    score_array = _as_scores(scores, "scores")
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not (score_array.size == label_array.size == len(categories)):
        raise ValueError("scores, labels and categories must have the same length")
    if predicted_categories is not None and len(predicted_categories) != len(scores):
        raise ValueError("predicted_categories must match scores in length")
    benign = label_array == 0
    if not benign.any():
        raise ValueError("calibration needs benign examples (label 0)")
    per_category_fpr = dict(per_category_fpr or {})
    restricted = {c for c, y in zip(categories, label_array, strict=True) if y == 1}

    global_threshold = threshold_for_fpr(score_array[benign], target_fpr)
    warnings = []
    if target_fpr > 0:
        warnings.append(too_few_for(target_fpr, int(benign.sum()), "benign calibration prompts"))
    per_category: dict[str, float] = {}
    predicted = np.asarray(
        [] if predicted_categories is None else list(predicted_categories), object
    )
    for category, category_target in sorted(per_category_fpr.items()):
        _check_fpr(category_target, f"FPR target of {category!r}")
        if category not in restricted and category in set(categories):
            logger.warning("per-category FPR target for non-restricted %r", category)
        pool = benign
        if predicted.size:
            assigned = benign & (predicted == category)
            if int(assigned.sum()) >= min_category_benign:
                pool = assigned
        per_category[category] = threshold_for_fpr(score_array[pool], category_target)
        if category_target > 0:
            warnings.append(
                too_few_for(
                    category_target, int(pool.sum()),
                    f"benign calibration prompts for {category!r}",
                )
            )  # fmt: skip

    thresholds = Thresholds(
        global_threshold=global_threshold,
        target_fpr=target_fpr,
        per_category=per_category,
        per_category_fpr=per_category_fpr,
        n_benign=int(benign.sum()),
        n_harmful=int((~benign).sum()),
        warnings=[w for w in warnings if w],
    )
    for warning in thresholds.warnings:
        logger.warning("calibration: %s", warning)
    decision_categories: Sequence[str | None] = (
        list(predicted) if predicted.size else [None] * score_array.size
    )
    applied = np.array([thresholds.for_category(c) for c in decision_categories])
    flagged = score_array >= applied
    thresholds.achieved_fpr = float(flagged[benign].mean())
    if (~benign).any():
        thresholds.achieved_tpr = float(flagged[~benign].mean())
    if predicted.size:
        for category in per_category:
            assigned = benign & (predicted == category)
            if assigned.any():
                rate = float(flagged[assigned].mean())
                thresholds.achieved_category_fpr[category] = rate
    logger.info(
        "calibrated threshold %.4f for FPR %.4f (achieved %.4f, %d overrides)",
        global_threshold,
        target_fpr,
        thresholds.achieved_fpr,
        len(per_category),
    )
    return thresholds
