"""Where a dataset's rows came from: the parts it was combined from and the label
audits applied on the way.
"""

from __future__ import annotations

from typing import Any

from classifiers.models import (
    Dataset,
    LabelAudit,
)


def part_name(dataset: Dataset) -> str:
    return f"d{dataset.pk}"


def combined_from(dataset: Dataset) -> list[Dataset]:
    """The parts a combined dataset was made of, in priority order ([] otherwise)."""
    ids = ((dataset.config or {}).get("combined") or {}).get("of_datasets") or []
    found = {d.pk: d for d in Dataset.objects.filter(pk__in=ids)}
    return [found[pk] for pk in ids if pk in found]


def label_provenance(dataset: Dataset, _seen: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Which splits' labels people reviewed, following applied audits back to the
    generated dataset, and through a combined dataset into each of its parts (a split
    of a combined dataset counts as reviewed when it is reviewed in every part): the
    model page and its JSON report say whether the numbers rest on generated or
    reviewed labels."""

    audits, reviewed, flipped, dropped = [], set(), 0, 0
    current: Dataset | None = dataset
    seen = set(_seen)
    while current is not None and current.pk not in seen:
        seen.add(current.pk)
        audit = LabelAudit.objects.filter(applied_dataset=current).first()
        if audit is None:
            break
        audits.append(audit.pk)
        provenance = (current.config or {}).get("audit", {})
        reviewed |= set(provenance.get("reviewed_splits", []))
        flipped += int(provenance.get("flipped", 0))
        dropped += int(provenance.get("dropped", 0))
        current = audit.dataset
    generated = [current.pk] if current is not None else []
    parts = combined_from(current) if current is not None else []
    if parts:
        below = [label_provenance(part, frozenset(seen)) for part in parts]
        for part in below:
            audits += [pk for pk in part["audits"] if pk not in audits]
        listed = ((current.config or {}).get("combined") or {}).get("of_datasets") or []
        if len(parts) == len(listed):  # a part gone: its review cannot be vouched for
            reviewed |= set.intersection(*(set(p["reviewed_splits"]) for p in below))
        flipped += sum(part["flipped"] for part in below)
        dropped += sum(part["dropped"] for part in below)
        generated = [pk for part in below for pk in part["generated_datasets"]]
    return {
        "audits": audits,
        "reviewed_splits": sorted(reviewed),
        # Held-out transform examples follow their source, so these four are all.
        "all_reviewed": reviewed >= {"train", "validation", "calibration", "test"},
        "flipped": flipped,
        "dropped": dropped,
        "generated_dataset": generated[0] if generated else None,
        "generated_datasets": generated,
        "combined_from": [part.pk for part in parts],
    }
