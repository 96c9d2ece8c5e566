"""What an audit's page shows: score histograms, tallies, estimated error rates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from classifiers.models import (
    AuditDecision,
    Dataset,
    LabelAudit,
)


def histogram_bars(histogram: dict[str, list[int]], *, height: int = 120) -> list[dict[str, Any]]:
    """SVG geometry for the audit page: two bars per score bin, log-scaled heights
    (the confident bins hold hundreds, the suspects' bins a handful)."""
    import math

    harmful, benign = histogram.get("harmful", []), histogram.get("benign", [])
    peak = math.log1p(max(harmful + benign, default=0)) or 1.0
    bars = []
    for i, (n_harmful, n_benign) in enumerate(zip(harmful, benign, strict=True)):
        h_harmful = round(height * math.log1p(n_harmful) / peak)
        h_benign = round(height * math.log1p(n_benign) / peak)
        bars.append({
            "x": 20 + 32 * i, "range": f"{i / len(harmful):.1f}–{(i + 1) / len(harmful):.1f}",
            "n_harmful": n_harmful, "h_harmful": h_harmful, "y_harmful": 20 + height - h_harmful,
            "n_benign": n_benign, "h_benign": h_benign, "y_benign": 20 + height - h_benign,
        })  # fmt: skip
    return bars


def category_kinds(audit: LabelAudit) -> dict[str, int]:
    """Category name -> label (1 restricted, 0 permitted) of the dataset's version."""
    spec = audit.dataset.constitution_version.to_spec()
    return {c.name: c.label for c in spec.categories}


def audit_report(audit: LabelAudit) -> dict[str, Any]:
    """What the decisions say: how often the model's suspicion was right, and an
    estimate (with a 95% interval) of the label errors it did not flag, from the
    non-suspects people checked (the random spot check and any fully reviewed split,
    itself a random, per-category stratified share of the sources).

    The non-suspects are queued in a random order, so the decided run at the head of
    that order is a random sample whatever else was decided. A reviewer reading the
    learned order (likely errors first) decides items further down; those fix labels
    but would bias the rate, so the rate uses the head run only, and the errors fixed
    outside it are subtracted from the estimate of what is left."""
    from classifiers.ml.eval.intervals import wilson_interval

    rows = list(audit.items.order_by("rank").values_list("reason", "suspect", "decision"))

    def tally(keep_row: Callable[[str, bool], bool]) -> dict[str, int]:
        counts = {d: 0 for d in (*AuditDecision.values, "")}
        for reason, suspect, decision in rows:
            if keep_row(reason, suspect):
                counts[decision] += 1
        return counts

    suspects = tally(lambda reason, suspect: suspect)
    checked = tally(lambda reason, suspect: not suspect)  # every non-suspect decision
    by_reason = {
        name: tally(lambda reason, suspect, name=name: reason == name)
        for name in ("suspect", "split", "spot_check")
    }
    non_suspect = [decision for _, suspect, decision in rows if not suspect]
    sample_size = next((i for i, d in enumerate(non_suspect) if not d), len(non_suspect))
    sample_errors = sum(d != AuditDecision.KEEP for d in non_suspect[:sample_size])
    fixed_elsewhere = sum(d not in ("", AuditDecision.KEEP) for d in non_suspect[sample_size:])
    decided_suspects = sum(v for k, v in suspects.items() if k)
    wrong_suspects = suspects["flip"] + suspects["drop"]
    low, high = wilson_interval(sample_errors, sample_size)
    generated = int(audit.summary.get("generated_sources", 0))
    unflagged = generated - int(audit.summary.get("generated_suspects", 0))
    rate = sample_errors / sample_size if sample_size else None
    return {
        "suspects": suspects,
        "spot_check": checked,
        "by_reason": by_reason,
        "pending": suspects[""] + checked[""],
        "suspect_precision": wrong_suspects / decided_suspects if decided_suspects else None,
        # The random sample behind the rate: the decided head of the queue order.
        "sample_size": sample_size,
        "sample_partial": sample_size < sum(v for k, v in checked.items() if k),
        "spot_error_rate": rate,
        "spot_error_interval": [low, high] if sample_size else None,
        # Errors among the unflagged sources outside the sample, less those fixed.
        "estimated_unflagged_errors": (
            max(0, round(rate * max(unflagged - sample_size, 0)) - fixed_elsewhere)
            if rate is not None else None
        ),  # fmt: skip
    }


def _source_splits(dataset: Dataset) -> dict[str, str]:
    """source_id -> the split of its original text."""
    return dict(
        dataset.examples.filter(transform="original").values_list("source_id", "split")
    )


def completed_review_splits(audit: LabelAudit) -> list[str]:
    """The review splits whose every queued item (suspects included) is decided."""
    wanted = set(audit.config.get("review_splits", []))
    if not wanted:
        return []
    split_of = _source_splits(audit.dataset)
    open_splits = {
        split_of.get(source_id)
        for source_id in audit.items.filter(decision="").values_list("source_id", flat=True)
    }
    return sorted(wanted - open_splits)
