"""Evaluation metrics, JSON reports and the two naive baselines (pure numpy).

Conventions: label 1 = harmful (positive), 0 = benign; an example is flagged iff
`score >= threshold`. Every report value is JSON-serialisable; undefined metrics
(e.g. AUROC with a single class) are None rather than NaN.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifiers.ml.eval.calibrate import roc_threshold_for_fpr
from classifiers.ml.eval.intervals import rate_summary, too_few_for
from classifiers.ml.types import PERMITTED, RESTRICTED, ConstitutionSpec

logger = logging.getLogger(__name__)

MAX_CURVE_POINTS = 200


def _arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, ...]:
    score_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if score_array.shape != label_array.shape:
        raise ValueError("scores and labels must have the same length")
    if np.isnan(score_array).any():
        raise ValueError("scores contain NaN")
    return score_array, label_array


def _cumulative_counts(
    scores: Sequence[float], labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True/false positives when flagging every score >= each distinct threshold.

    Thresholds are the distinct scores in decreasing order, so tied scores always
    move together (no arbitrary order between ties).
    """
    score_array, label_array = _arrays(scores, labels)
    order = np.argsort(-score_array, kind="stable")
    sorted_scores = score_array[order]
    sorted_labels = label_array[order]
    # Last index of each run of equal scores = where a threshold boundary falls.
    boundaries = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    true_positives = np.cumsum(sorted_labels == 1)[boundaries]
    false_positives = np.cumsum(sorted_labels == 0)[boundaries]
    return true_positives, false_positives, sorted_scores[boundaries]


def roc_curve(
    scores: Sequence[float], labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf."""
    if len(scores) == 0:
        raise ValueError("roc_curve needs at least one score")
    true_positives, false_positives, thresholds = _cumulative_counts(scores, labels)
    positives = true_positives[-1]
    negatives = false_positives[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0.0, true_positives / positives] if positives else None
        fpr = np.r_[0.0, false_positives / negatives] if negatives else None
    size = thresholds.size + 1
    nan = np.full(size, np.nan)
    return (
        nan if fpr is None else fpr,
        nan if tpr is None else tpr,
        np.r_[np.inf, thresholds],
    )


def pr_curve(
    scores: Sequence[float], labels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) by decreasing threshold.

    Starts at recall 0 / precision 1 (threshold +inf), like scikit-learn's curve.
    """
    if len(scores) == 0:
        raise ValueError("pr_curve needs at least one score")
    true_positives, false_positives, thresholds = _cumulative_counts(scores, labels)
    positives = true_positives[-1]
    precision = true_positives / (true_positives + false_positives)
    if positives:
        recall = true_positives / positives
    else:
        recall = np.full(precision.size, np.nan)
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, thresholds]


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is absent."""
    fpr, tpr, _ = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(np.trapezoid(tpr, fpr))


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Step-wise area under the PR curve: sum of (R_n - R_n-1) * P_n."""
    precision, recall, _ = pr_curve(scores, labels)
    if np.isnan(recall).any():
        return math.nan
    return float(np.sum(np.diff(recall) * precision[1:]))


def tpr_at_fpr(
    scores: Sequence[float], labels: Sequence[int], target_fpr: float
) -> float:
    """Recall at target_fpr on these scores: the ROC point with the most recall
    whose false-positive rate on these benign scores is within the target
    (calibrate.roc_threshold_for_fpr), an achievable threshold, not an
    interpolation between ROC points. Deployment thresholds use the more
    conservative calibrate.threshold_for_fpr; reports give recall at those too.
    """
    score_array, label_array = _arrays(scores, labels)
    benign = score_array[label_array == 0]
    harmful = score_array[label_array == 1]
    if benign.size == 0 or harmful.size == 0:
        return math.nan
    threshold = roc_threshold_for_fpr(benign, target_fpr)
    return float(np.mean(harmful >= threshold))


def confusion(
    scores: Sequence[float],
    labels: Sequence[int],
    threshold: float | Sequence[float] | np.ndarray,
) -> dict[str, int]:
    """tp/fp/tn/fn counts; `threshold` is one number or one per example."""
    score_array, label_array = _arrays(scores, labels)
    flagged = score_array >= np.asarray(threshold, dtype=np.float64)
    harmful = label_array == 1
    return {
        "tp": int(np.sum(flagged & harmful)),
        "fp": int(np.sum(flagged & ~harmful)),
        "tn": int(np.sum(~flagged & ~harmful)),
        "fn": int(np.sum(~flagged & harmful)),
    }


def histogram(
    scores: Sequence[float], labels: Sequence[int], bins: int = 20
) -> dict[str, list[float] | list[int]]:
    """Score counts per bin and label over [0, 1] (widened if scores exceed it)."""
    score_array, label_array = _arrays(scores, labels)
    low = min(0.0, float(score_array.min())) if score_array.size else 0.0
    high = max(1.0, float(score_array.max())) if score_array.size else 1.0
    edges = np.linspace(low, high, bins + 1)
    positive, _ = np.histogram(score_array[label_array == 1], bins=edges)
    negative, _ = np.histogram(score_array[label_array == 0], bins=edges)
    return {
        "edges": [float(e) for e in edges],
        "harmful": [int(c) for c in positive],
        "benign": [int(c) for c in negative],
    }


def _downsample(*curves: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> list[list]:
    size = curves[0].size
    if size <= max_points:
        index = np.arange(size)
    else:
        # Evenly spaced indices, always keeping both end points of the curve.
        index = np.unique(np.linspace(0, size - 1, max_points).round().astype(int))
    return [[_clean(float(c[i])) for i in index] for c in curves]


def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def transform_families(transform: str) -> list[str]:
    """`"base64+typos:0.1"` -> ["base64", "typos"]: each applied transform's family.

    Transforms are "+"-joined names; a family is a name without its parameters
    (anything after ":" or "(").
    """
    names = [part.strip() for part in (transform or "original").split("+")]
    families = [re.split(r"[:(]", name, maxsplit=1)[0].strip() for name in names]
    return sorted({family for family in families if family}) or ["original"]


def _rate(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if flags.size else None


def _interval(flags: np.ndarray) -> list[float] | None:
    """[low, high] of the 95% interval of a rate (None when nothing was measured)."""
    if not flags.size:
        return None
    summary = rate_summary(int(flags.sum()), int(flags.size))
    return [summary["low"], summary["high"]]


# The FPR a guard is judged at: a split with fewer benign examples than this rate
# needs cannot show its false positives, nor its TPR at that FPR.
REPORTED_FPR = 0.01
# A recall whose 95% interval is wider than this is flagged as rough.
WIDE_INTERVAL = 0.2


def sample_size_warnings(
    *, positives: int, negatives: int, tpr_interval: list[float] | None
) -> list[str]:
    """What a report's numbers cannot show, given how few examples they rest on."""
    warnings = []
    benign = too_few_for(REPORTED_FPR, negatives, "benign examples")
    if benign:
        warnings.append(
            f"{benign}: the FPR and the TPR at {REPORTED_FPR:.0%} FPR cannot be "
            "told apart from chance at that level"
        )
    if tpr_interval is not None and tpr_interval[1] - tpr_interval[0] > WIDE_INTERVAL:
        warnings.append(
            f"{positives} harmful examples: the recall is only known to lie between "
            f"{tpr_interval[0]:.2f} and {tpr_interval[1]:.2f} (95%)"
        )
    return warnings


def evaluation_report(
    *,
    scores: Sequence[float],
    labels: Sequence[int],
    categories: Sequence[str],
    transforms: Sequence[str] | None = None,
    threshold: float | Sequence[float],
    name: str,
) -> dict[str, Any]:
    """Everything the evaluation page shows about one classifier on one test set.

    `threshold` is one number, or one per example (e.g. per-category thresholds:
    `[t.for_category(c) for c in predicted_categories]`).
    Restricted categories are those that carry harmful labels; their recall is
    reported. Permitted categories (benign labels) get their false-positive rate.
    """
    score_array, label_array = _arrays(scores, labels)
    if len(categories) != score_array.size:
        raise ValueError("categories must match scores in length")
    if transforms is None:
        transforms = ["original"] * score_array.size
    if len(transforms) != score_array.size:
        raise ValueError("transforms must match scores in length")
    applied = np.broadcast_to(
        np.asarray(threshold, dtype=np.float64), score_array.shape
    )
    flagged = score_array >= applied
    harmful = label_array == 1
    category_array = np.asarray(list(categories), dtype=object)

    per_category: dict[str, dict[str, Any]] = {}
    for category in sorted(set(categories)):
        mask = category_array == category
        kind = RESTRICTED if harmful[mask].any() else PERMITTED
        entry: dict[str, Any] = {"kind": kind, "n": int(mask.sum())}
        if kind == RESTRICTED:
            entry["recall"] = _rate(flagged[mask & harmful])
            entry["interval"] = _interval(flagged[mask & harmful])
        else:
            entry["fpr"] = _rate(flagged[mask & ~harmful])
            entry["interval"] = _interval(flagged[mask & ~harmful])
        per_category[category] = entry

    per_transform: dict[str, dict[str, Any]] = {}
    family_lists = [transform_families(t) for t in transforms]
    for family in sorted({f for families in family_lists for f in families}):
        mask = np.array([family in families for families in family_lists])
        per_transform[family] = {
            "n": int(mask.sum()),
            "recall": _rate(flagged[mask & harmful]),
            "recall_interval": _interval(flagged[mask & harmful]),
            "fpr": _rate(flagged[mask & ~harmful]),
            "fpr_interval": _interval(flagged[mask & ~harmful]),
        }

    counts = confusion(score_array, label_array, applied)
    report: dict[str, Any] = {
        "name": name,
        "n": int(score_array.size),
        "positives": int(harmful.sum()),
        "negatives": int((~harmful).sum()),
        # A per-example threshold list is not repeated in the report.
        "threshold": _clean(float(threshold)) if np.ndim(threshold) == 0 else None,
        "auroc": None,
        "average_precision": None,
        "tpr_at_threshold": _rate(flagged[harmful]),
        "fpr_at_threshold": _rate(flagged[~harmful]),
        # 95% intervals of the two rates above, [low, high] (Wilson).
        "tpr_interval": _interval(flagged[harmful]),
        "fpr_interval": _interval(flagged[~harmful]),
        "tpr_at_1pct_fpr": None,
        "confusion": counts,
        "per_category": per_category,
        "per_transform": per_transform,
        "roc": None,
        "pr": None,
        "histogram": histogram(score_array, label_array),
    }
    report["warnings"] = sample_size_warnings(
        positives=report["positives"], negatives=report["negatives"],
        tpr_interval=report["tpr_interval"],
    )  # fmt: skip
    if score_array.size:
        report["auroc"] = _clean(auroc(score_array, label_array))
        report["average_precision"] = _clean(
            average_precision(score_array, label_array)
        )
        report["tpr_at_1pct_fpr"] = _clean(tpr_at_fpr(score_array, label_array, 0.01))
        fpr, tpr, roc_thresholds = roc_curve(score_array, label_array)
        roc_points = _downsample(fpr, tpr, roc_thresholds)
        report["roc"] = dict(zip(("fpr", "tpr", "thresholds"), roc_points, strict=True))
        precision, recall, pr_thresholds = pr_curve(score_array, label_array)
        pr_points = _downsample(precision, recall, pr_thresholds)
        report["pr"] = dict(
            zip(("precision", "recall", "thresholds"), pr_points, strict=True)
        )
    return report


SCALAR_METRICS = (
    "auroc",
    "average_precision",
    "tpr_at_threshold",
    "fpr_at_threshold",
    "tpr_at_1pct_fpr",
)


def _delta(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return round(float(b) - float(a), 6)
    return None


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Side-by-side metrics of two reports; delta = b - a (None where undefined)."""
    metrics = [
        {
            "metric": key,
            "a": a.get(key),
            "b": b.get(key),
            "delta": _delta(a.get(key), b.get(key)),
        }
        for key in SCALAR_METRICS
    ]
    categories: dict[str, dict[str, Any]] = {}
    a_categories, b_categories = a.get("per_category", {}), b.get("per_category", {})
    for category in sorted(set(a_categories) | set(b_categories)):
        left = a_categories.get(category, {})
        right = b_categories.get(category, {})
        metric = "recall" if "recall" in left or "recall" in right else "fpr"
        categories[category] = {
            "metric": metric,
            "a": left.get(metric),
            "b": right.get(metric),
            "delta": _delta(left.get(metric), right.get(metric)),
        }
    transforms: dict[str, dict[str, Any]] = {}
    a_transforms, b_transforms = a.get("per_transform", {}), b.get("per_transform", {})
    for family in sorted(set(a_transforms) | set(b_transforms)):
        left = a_transforms.get(family, {})
        right = b_transforms.get(family, {})
        transforms[family] = {
            "a": left.get("recall"),
            "b": right.get("recall"),
            "delta": _delta(left.get("recall"), right.get("recall")),
        }
    return {
        "a": a.get("name"),
        "b": b.get("name"),
        "metrics": metrics,
        "per_category": categories,
        "per_transform_recall": transforms,
    }


# --------------------------------------------------------------------------- baselines

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Small built-in list: enough to keep function words out of the blocklist without
# pulling in an NLP package.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because
    been before being below between both but by can could did do does doing down during
    each either else etc even ever every few for from further get gets getting give
    had has have having he her here hers herself him himself his how however i if in
    including into is it its itself just like make makes making many may me might
    more most much must my myself no nor not now of off on once one only or other
    our ours out over own per please same she should so some such than that the their
    theirs them themselves then there these they this those through to too under
    until up upon us use used using very via was we were what when where whether which
    while who whom why will with within without would yes you your yours yourself
    question questions query queries request requests content information info ask
    asks asking asked about tell explain describe help how-to steps step user users
    category categories example examples general specific related""".split()
)


def _normalise_word(word: str) -> str:
    word = word.lower()
    # Crude plural folding so "widgets" matches "widget"; no stemmer dependency.
    if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def _words(text: str) -> set[str]:
    return {_normalise_word(w) for w in _WORD.findall(text or "")}


@dataclass
class KeywordBaseline:
    """A keyword blocklist: the naive baseline the trained classifiers must beat."""

    keywords: frozenset[str]  # normalised words that mark a restricted topic
    saturation: int = 2  # distinct matches that give score 1.0

    @classmethod
    def from_constitution(
        cls, spec: ConstitutionSpec, *, min_length: int = 3, saturation: int = 2
    ) -> KeywordBaseline:
        restricted: set[str] = set()
        permitted: set[str] = set()
        for category in spec.categories:
            text = " ".join(
                (category.name, category.description, *category.example_queries)
            )
            if category.kind == RESTRICTED:
                restricted |= _words(text)
                # A restricted category's "excludes" text names allowed things.
                permitted |= _words(category.excludes)
            else:
                permitted |= _words(text + " " + category.excludes)
        keywords = {
            w
            for w in restricted - permitted
            if len(w) >= min_length and w not in STOPWORDS
        }
        logger.info("keyword baseline with %d keywords", len(keywords))
        return cls(keywords=frozenset(keywords), saturation=saturation)

    def matches(self, text: str) -> list[str]:
        return sorted(_words(text) & self.keywords)

    def score(self, texts: Sequence[str]) -> list[float]:
        saturation = max(1, self.saturation)
        return [min(1.0, len(self.matches(text)) / saturation) for text in texts]


def refusal_baseline_scores(
    replies: Sequence[str], is_refusal: Callable[[str], bool]
) -> list[float]:
    """1.0 where the unguarded generator refused on its own, else 0.0.

    This is the "no classifier at all" baseline: the model's own safety training.
    """
    return [1.0 if is_refusal(reply) else 0.0 for reply in replies]
