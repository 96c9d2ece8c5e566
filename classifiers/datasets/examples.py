"""A dataset's examples as classifiers.ml Examples, and review feedback as examples."""

from __future__ import annotations

from typing import Any

from classifiers.ml.types import Example
from classifiers.models import (
    Dataset,
    DatasetExample,
    FeedbackExample,
)


def examples_by_split(dataset: Dataset) -> dict[str, list[Example]]:
    by_split: dict[str, list[Example]] = {}
    for row in DatasetExample.objects.filter(dataset=dataset).iterator(chunk_size=2000):
        by_split.setdefault(row.split, []).append(row.to_example())
    return by_split


def feedback_examples_for(constitution: Any) -> list[Example]:
    """The constitution's active feedback as training examples (meta source feedback)."""
    rows = FeedbackExample.objects.filter(constitution=constitution, active=True).order_by("pk")
    return [
        Example(
            messages=[dict(m) for m in row.messages],
            response=row.response,
            label=int(row.label),
            category=row.category,
            source_id=f"feedback-{row.pk}",
            transform="original",
            meta={"source": "feedback", "feedback_id": row.pk, "decision": row.decision},
        )
        for row in rows
    ]


def feedback_for_dataset(dataset: Dataset) -> list[Example]:
    """The feedback a new dataset of this constitution trains on (train split only:
    calibration and test stay purely synthetic, so the reported numbers stay
    comparable across datasets)."""
    examples = feedback_examples_for(dataset.constitution_version.constitution)
    for example in examples:
        example.meta["split"] = "train"
    return examples
