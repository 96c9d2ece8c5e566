"""Combine finished datasets of one constitution version into one.

Each query keeps its split; a query that repeats an earlier part's is left out, so
reviewed runs pool without leaking across splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from classifiers.datasets.lineage import label_provenance, part_name
from classifiers.ml.data import assemble as ml_data
from classifiers.ml.data.combine import combine_examples
from classifiers.models import Dataset, DatasetExample
from classifiers.models.jobs import JobStatus
from constitutions.models import record

COPY_BATCH = 1000


class CombineError(ValueError):
    """These datasets cannot be combined; the message says why."""


def combine_problems(datasets: Sequence[Dataset]) -> list[str]:
    """What stops these datasets from being combined, in words; [] when nothing."""
    if len({d.pk for d in datasets}) < 2:
        return ["choose at least two different datasets to combine"]
    if len({d.pk for d in datasets}) != len(datasets):
        return ["each dataset can be listed once"]
    problems = [
        f"dataset #{d.pk} is {d.get_status_display().lower()}, not done"
        for d in datasets
        if d.status != JobStatus.DONE
    ]
    versions = {d.constitution_version_id for d in datasets}
    if len(versions) > 1:
        listed = ", ".join(f"#{d.pk} ({d.constitution_version})" for d in datasets)
        problems.append(
            f"the datasets come from different constitution versions ({listed}); "
            "only datasets of one version can be combined, since a model is trained "
            "on one version's categories"
        )
    problems += _shared_origin_problems(datasets)
    heldout = {tuple(sorted(d.config.get("heldout_families") or [])) for d in datasets}
    if len(heldout) > 1:
        listed = ", ".join(
            f"#{d.pk}: {', '.join(d.config.get('heldout_families') or []) or 'none'}"
            for d in datasets
        )
        problems.append(
            f"the datasets hold out different transform families ({listed}); a family "
            "one part trains on would no longer be held out"
        )
    return problems


def _shared_origin_problems(datasets: Sequence[Dataset]) -> list[str]:
    """Two parts that trace back to one generated dataset (a run and its reviewed
    copy) would pit one review against none: every source a repeat."""

    origin_of: dict[int, int] = {}
    problems = []
    for d in datasets:
        for origin in label_provenance(d)["generated_datasets"]:
            if origin in origin_of and origin_of[origin] != d.pk:
                problems.append(
                    f"datasets #{origin_of[origin]} and #{d.pk} both come from dataset "
                    f"#{origin} (one is an audited copy of the other): combine only one"
                )
            origin_of.setdefault(origin, d.pk)
    return problems


def order_parts(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Reviewed datasets first (their copy of a repeated source wins), then oldest."""
    return sorted(datasets, key=lambda d: (0 if (d.config or {}).get("audit") else 1, d.pk))


def _summed_stats(datasets: Sequence[Dataset]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in datasets:
        for key, value in ((d.counts or {}).get("stats") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] += value
    return dict(total)


def combine_datasets(*, datasets: Sequence[Dataset], user: Any) -> Dataset:
    """A new finished dataset holding the listed datasets' examples; the first listed
    part wins where sources repeat. Raises CombineError, writing nothing."""

    datasets = list(datasets)
    problems = combine_problems(datasets)
    if problems:
        raise CombineError("; ".join(problems))
    parts = [
        (part_name(d), (row.to_example() for row in d.examples.order_by("id").iterator(
            chunk_size=COPY_BATCH)))
        for d in datasets
    ]  # fmt: skip
    combined = combine_examples(parts)
    first = datasets[0]
    transforms: list[str] = []
    for d in datasets:
        transforms += [t for t in d.transforms if t not in transforms]
    provenance = {
        "of_datasets": [d.pk for d in datasets],
        "parts": combined.parts,
        "duplicate_sources": combined.duplicate_sources,
        "label_conflicts": combined.label_conflicts,
    }
    config = {key: value for key, value in first.config.items() if key != "audit"}
    # A part's own scope (a top-up's categories) does not describe the whole.
    config.update(transforms=transforms, only_categories=[], combined=provenance)
    feedback = sum(1 for ex in combined.examples if ex.meta.get("source") == "feedback")
    now = timezone.now()
    with transaction.atomic():
        copy = Dataset.objects.create(
            constitution_version=first.constitution_version,
            generator=" + ".join(sorted({d.generator for d in datasets}))[:300],
            endpoint=first.endpoint, seed=first.seed, config=config,
            feedback_included=feedback,
            status=JobStatus.DONE, stage="done",
            created_by=user if getattr(user, "is_authenticated", False) else None,
            created_at=now, started_at=now, finished_at=now,
        )  # fmt: skip
        rows = [
            DatasetExample(
                dataset=copy, messages=ex.messages, prompt_text=ex.prompt_text,
                response=ex.response, label=ex.label, category=ex.category,
                source_id=ex.source_id, transform=ex.transform,
                split=ex.meta.get("split", ""),
                meta={k: v for k, v in ex.meta.items() if k != "split"},
            )  # fmt: skip
            for ex in combined.examples
        ]
        DatasetExample.objects.bulk_create(rows, batch_size=COPY_BATCH)
        copy.counts = {
            **ml_data.count_examples(combined.examples),
            "feedback": feedback,
            "stats": _summed_stats(datasets),
        }
        copy.done = copy.total = copy.counts["total"]
        copy.save(update_fields=["counts", "done", "total"])
        record(
            first.constitution_version.constitution, user, "dataset",
            f"dataset #{copy.pk} combined from "
            f"{', '.join(f'#{d.pk}' for d in datasets)} "
            f"({combined.duplicate_sources} repeated source"
            f"{'s' if combined.duplicate_sources != 1 else ''} left out)",
            dataset=copy.pk,
        )  # fmt: skip
    return copy
