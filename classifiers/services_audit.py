"""Label audits of a dataset: start one, run it (in a worker), decide, apply.

The worker ranks the generated source queries a cross-validated input head doubts
(classifiers.ml.label_audit) and draws a random spot check of the others; reviewers
and policy authors decide each one; a policy author applies the decisions, which
writes a new dataset (the original stays as it was, like every dataset).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from classifiers.ml.types import Cancelled
from classifiers.models import (
    AuditDecision,
    Dataset,
    DatasetExample,
    LabelAudit,
    LabelAuditItem,
)
from classifiers.models.jobs import ACTIVE_STATUSES, JobStatus

logger = logging.getLogger(__name__)

DEFAULT_SPOT_CHECK = 20
# Splits whose every generated source can be queued for people to label: the
# evaluation split (gold labels for the reported numbers) and the calibration split
# (its benign examples set the thresholds).
REVIEWABLE_SPLITS = ("test", "calibration", "validation", "train")
MAX_SPOT_CHECK = 200
EMBED_BATCH = 64
COPY_BATCH = 1000


class AuditError(ValueError):
    """Bad input for an audit (shown to the user as it is)."""


def start_audit(
    *,
    dataset: Dataset,
    user: Any,
    folds: int = 5,
    spot_check: int = DEFAULT_SPOT_CHECK,
    review_splits: Sequence[str] = (),
    seed: int = 0,
    enqueue: bool = True,
) -> LabelAudit:
    if dataset.status != JobStatus.DONE:
        raise AuditError(f"dataset #{dataset.pk} is {dataset.status}: audit a finished dataset")
    if not 2 <= folds <= 10:
        raise AuditError("folds must be between 2 and 10")
    if not 0 <= spot_check <= MAX_SPOT_CHECK:
        raise AuditError(f"the spot check must be between 0 and {MAX_SPOT_CHECK} examples")
    unknown = sorted(set(review_splits) - set(REVIEWABLE_SPLITS))
    if unknown:
        raise AuditError(
            f"unknown split {', '.join(unknown)}: choose from {', '.join(REVIEWABLE_SPLITS)}"
        )
    # The audit's sources are the original, generated rows (see _sources).
    sources = dataset.examples.filter(transform="original").exclude(meta__source="feedback")
    labels = {label for label in (0, 1) if sources.filter(label=label).exists()}
    if len(labels) == 1:
        # A top-up run for restricted (or permitted) categories only: the audit's
        # out-of-fold heads learn from both labels, so say what to do instead.
        only = "harmful" if labels == {1} else "benign"
        raise AuditError(
            f"dataset #{dataset.pk} holds {only} examples only, and an audit needs both "
            "labels to check them: combine it with a run that has the other label "
            "first (Combine datasets, or manage.py combine_datasets), then audit that"
        )
    with transaction.atomic():
        # Lock the dataset row: two submits at once cannot both pass the check.
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        if LabelAudit.objects.filter(dataset=dataset, status__in=ACTIVE_STATUSES).exists():
            raise AuditError(f"an audit of dataset #{dataset.pk} is already running")
        audit = LabelAudit.objects.create(
            dataset=dataset,
            config={
                "folds": folds, "spot_check": spot_check, "seed": seed,
                "review_splits": sorted(set(review_splits)),
            },  # fmt: skip
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
    if enqueue:
        from classifiers.tasks.datasets import audit_labels

        transaction.on_commit(lambda: audit_labels.delay(audit.pk))
    return audit


def _sources(dataset: Dataset) -> tuple[list[Any], dict[str, str], set[str]]:
    """Every source query's original text (reviewed feedback excluded: people
    labelled it), the split of each generated one (the only ones audited), and the
    generated ones an applied audit already decided."""
    from classifiers.ml.label_audit import AuditSource

    rows = (
        dataset.examples.filter(transform="original")
        .order_by("id")
        .values_list("source_id", "prompt_text", "label", "category", "meta", "split")
    )
    sources, generated, seen, reviewed = [], {}, set(), set()
    for source_id, text, label, category, meta, split in rows:
        # Filtered here, not with exclude(meta__source=...): SQL's NULL logic would
        # also drop the rows whose meta has no "source" key.
        if source_id in seen or (meta or {}).get("source") == "feedback":
            continue
        seen.add(source_id)
        sources.append(AuditSource(source_id, text, int(label), category))
        if (meta or {}).get("source") == "generated":
            generated[source_id] = split
            if (meta or {}).get("reviewed"):
                reviewed.add(source_id)
    return sources, generated, reviewed


def execute_audit(
    audit: LabelAudit,
    *,
    progress: Callable[..., None],
    should_cancel: Callable[[], bool],
    finish: Callable[..., None],
) -> None:
    import torch

    from classifiers.ml.label_audit import (
        AuditConfig,
        audit_labels,
        score_histogram,
        spot_check_sample,
    )
    from classifiers.services_datasets import relevance_embedder

    dataset = audit.dataset
    spec = dataset.constitution_version.to_spec()
    categories = [c.name for c in spec.categories]
    sources, generated, reviewed = _sources(dataset)
    if not generated:
        raise AuditError(f"dataset #{dataset.pk} has no generated queries to audit")
    embed = relevance_embedder()
    texts = [s.text for s in sources]
    chunks = []
    for start in range(0, len(texts), EMBED_BATCH):
        if should_cancel():
            raise Cancelled()
        chunks.append(torch.as_tensor(embed(texts[start : start + EMBED_BATCH])))
        progress(stage="embedding", done=min(start + EMBED_BATCH, len(texts)), total=len(texts))
    cfg = AuditConfig(folds=int(audit.config.get("folds", 5)), seed=int(audit.config.get("seed", 0)))
    embeddings = torch.cat(chunks)
    row_of = {s.source_id: i for i, s in enumerate(sources)}
    try:
        result = audit_labels(
            sources, embeddings, categories, [c.label for c in spec.categories], cfg,
            on_progress=progress, should_cancel=should_cancel,
        )  # fmt: skip
    except ValueError as err:
        raise AuditError(str(err)) from err
    # Sources people already decided in an earlier audit still train the heads, but
    # are not queued again.
    findings = [
        f for f in result.findings if f.source_id in generated and f.source_id not in reviewed
    ]
    review_splits = set(audit.config.get("review_splits", []))
    in_split = [
        f for f in findings if not f.suspect and generated[f.source_id] in review_splits
    ]
    in_split_ids = {f.source_id for f in in_split}
    others = [f for f in findings if f.source_id not in in_split_ids]
    spot = set(spot_check_sample(others, int(audit.config.get("spot_check", 0)), cfg.seed))
    text_of = {s.source_id: s.text for s in sources}
    # Non-suspects in a seeded random order: a review stopped half-way is still a
    # random sample (source ids sort by category).
    shuffled = random.Random(cfg.seed).sample(in_split, len(in_split))
    spot_items = random.Random(cfg.seed + 1).sample(
        [f for f in others if f.source_id in spot], len(spot)
    )
    queue = (
        [(f, "suspect") for f in findings if f.suspect]
        + [(f, "split") for f in shuffled]
        + [(f, "spot_check") for f in spot_items]
    )
    items = [
        LabelAuditItem(
            audit=audit, source_id=f.source_id, text=text_of[f.source_id], label=f.label,
            category=f.category, harm_score=f.harm_score, suspect=f.suspect, reason=reason,
            suggested_category=f.suggested_category, rank=rank,
            embedding=embedding_bytes(embeddings[row_of[f.source_id]]),
        )  # fmt: skip
        for rank, (f, reason) in enumerate(queue)
    ]
    summary = {
        **result.stats,
        "generated_sources": len(findings),
        "already_reviewed": len(reviewed),
        "generated_suspects": sum(1 for f in findings if f.suspect),
        "spot_check": len(spot),
        "review_split_sources": len(in_split),
        "histogram": score_histogram(findings),
    }
    with transaction.atomic():
        # A cancel that came in late, or a reaper that failed the job, wins.
        row = LabelAudit.objects.select_for_update().get(pk=audit.pk)
        if row.status != JobStatus.RUNNING:
            raise AuditError(f"audit #{audit.pk} is {row.status}; nothing was saved")
        if row.cancel_requested:
            raise Cancelled()
        LabelAuditItem.objects.bulk_create(items)
        finish(summary=summary, stage="done")


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


# ---------------------------------------------------------------------- decisions


def category_kinds(audit: LabelAudit) -> dict[str, int]:
    """Category name -> label (1 restricted, 0 permitted) of the dataset's version."""
    spec = audit.dataset.constitution_version.to_spec()
    return {c.name: c.label for c in spec.categories}


def decide(
    *, item: LabelAuditItem, decision: str, new_category: str = "", user: Any
) -> LabelAuditItem:
    """Record (or change) one decision; an applied audit is closed."""
    if decision not in AuditDecision.values:
        raise AuditError(f"unknown decision {decision!r}: keep, flip or drop")
    new_category = new_category.strip()
    if decision == AuditDecision.FLIP:
        new_category = new_category or item.suggested_category
        kinds = category_kinds(item.audit)
        if new_category not in kinds:
            raise AuditError(f"{new_category!r} is not a category of this constitution")
        if kinds[new_category] == item.label:
            raise AuditError(
                f"flipping a {'harmful' if item.label else 'benign'} example needs a "
                f"{'permitted' if item.label else 'restricted'} category, "
                f"not {new_category!r}"
            )
    else:
        new_category = ""
    with transaction.atomic():
        audit = LabelAudit.objects.select_for_update().get(pk=item.audit_id)
        if audit.applied_dataset_id or audit.applied_at:
            raise AuditError(
                f"audit #{audit.pk} was applied (dataset #{audit.applied_dataset_id}); "
                "start a new audit of that dataset to change more labels"
            )
        LabelAuditItem.objects.filter(pk=item.pk).update(
            decision=decision, new_category=new_category, decided_by=user,
            decided_at=timezone.now(),
        )  # fmt: skip
    item.refresh_from_db()
    return item


def embedding_bytes(vector: Any) -> bytes:
    """A sentence embedding as float16 bytes (768 bytes for MiniLM's 384)."""
    import numpy as np

    return np.asarray(vector, dtype=np.float16).tobytes()


def embeddings_from_bytes(blobs: Sequence[bytes]) -> Any:
    """Blobs written by embedding_bytes -> an (N, E) float32 tensor ((0, 0) for none)."""
    import numpy as np
    import torch

    if not blobs:
        return torch.zeros(0, 0)
    return torch.from_numpy(
        np.stack([np.frombuffer(bytes(b), dtype=np.float16) for b in blobs]).astype(np.float32)
    )


def learn_order(audit: LabelAudit) -> dict[str, Any]:
    """Score every undecided item by how likely its generated label is wrong, from
    the decisions so far (classifiers.ml.label_audit.rank_by_decisions).

    Only orders the queue: ranks, reasons and the random sample are unchanged.
    Takes milliseconds to a second (a logistic head on stored embeddings), so it
    runs in the request, under the audit's row lock: a decision made meanwhile
    waits, and the scores match the decisions they were learned from."""
    from classifiers.ml.label_audit import rank_by_decisions

    with transaction.atomic():
        locked = LabelAudit.objects.select_for_update().get(pk=audit.pk)
        if locked.status != JobStatus.DONE:
            raise AuditError(f"audit #{audit.pk} is {locked.status}; wait until it is done")
        if locked.applied_at:
            raise AuditError(f"audit #{audit.pk} was applied; its queue is closed")
        rows = list(locked.items.values_list("pk", "label", "decision", "embedding"))
        if any(blob is None for *_, blob in rows):
            raise AuditError(
                f"audit #{audit.pk} was run before embeddings were stored; start a new "
                "audit of the dataset to learn from decisions"
            )
        decided = [r for r in rows if r[2]]
        pending = [r for r in rows if not r[2]]
        if not pending:
            raise AuditError("every item is decided; there is nothing left to order")
        try:
            ranking = rank_by_decisions(
                embeddings_from_bytes([r[3] for r in decided]), [r[1] for r in decided],
                [r[2] != AuditDecision.KEEP for r in decided],
                embeddings_from_bytes([r[3] for r in pending]), [r[1] for r in pending],
                seed=int(locked.config.get("seed", 0)),
            )  # fmt: skip
        except ValueError as err:
            raise AuditError(str(err)) from err
        learned = {
            "decided": ranking.decided,
            "wrong": ranking.wrong,
            "auroc": ranking.auroc,
            "scored": len(pending),
            "at": timezone.now().isoformat(),
        }
        LabelAuditItem.objects.bulk_update(
            [
                LabelAuditItem(pk=pk, wrong_score=score)
                for (pk, *_), score in zip(pending, ranking.wrong_scores, strict=True)
            ],
            ["wrong_score"],
            batch_size=COPY_BATCH,
        )
        # A score is a guess about an undecided label; decided items drop theirs.
        locked.items.exclude(decision="").update(wrong_score=None)
        # Only the summary key is written: a concurrent save of other fields stays.
        locked.summary = {**locked.summary, "learned": learned}
        locked.save(update_fields=["summary"])
    audit.summary = locked.summary
    return learned


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
    from classifiers.ml.label_audit import wilson_interval

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


# ------------------------------------------------------------------------- apply


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


def apply_audit(*, audit: LabelAudit, user: Any) -> Dataset:
    """Write a new dataset: flipped sources (all their augmented copies) relabelled,
    dropped sources left out, reviewed sources marked (a later audit skips them).
    One transaction: all of it or nothing."""
    from classifiers.ml import data as ml_data
    from constitutions.models import record

    with transaction.atomic():
        audit = LabelAudit.objects.select_for_update().select_related(
            "dataset__constitution_version__constitution"
        ).get(pk=audit.pk)
        if audit.status != JobStatus.DONE:
            raise AuditError(f"audit #{audit.pk} is {audit.status}: nothing to apply")
        if audit.applied_dataset_id or audit.applied_at:
            raise AuditError(
                f"audit #{audit.pk} was already applied (dataset #{audit.applied_dataset_id})"
            )
        decisions = {item.source_id: item for item in audit.items.exclude(decision="")}
        flips = {k: v for k, v in decisions.items() if v.decision == AuditDecision.FLIP}
        drops = {k for k, v in decisions.items() if v.decision == AuditDecision.DROP}
        reviewed_splits = completed_review_splits(audit)
        if not flips and not drops and not reviewed_splits:
            raise AuditError(
                "no label was flipped or dropped and no split review is complete: "
                "there is nothing to apply"
            )
        source = audit.dataset
        now = timezone.now()
        report = audit_report(audit)
        provenance = {
            "of_dataset": source.pk,
            "audit": audit.pk,
            "flipped": len(flips),
            "dropped": len(drops),
            "kept": sum(1 for v in decisions.values() if v.decision == AuditDecision.KEEP),
            # Only splits whose whole queue was decided count as reviewed.
            "reviewed_splits": reviewed_splits,
            "spot_error_rate": report["spot_error_rate"],
            "spot_error_interval": report["spot_error_interval"],
        }
        copy = Dataset.objects.create(
            constitution_version=source.constitution_version, generator=source.generator,
            endpoint=source.endpoint, seed=source.seed,
            config={**source.config, "audit": provenance},
            feedback_included=source.feedback_included, status=JobStatus.DONE,
            stage="done", created_by=user if getattr(user, "is_authenticated", False) else None,
            created_at=now, started_at=now, finished_at=now,
        )  # fmt: skip
        batch: list[DatasetExample] = []
        for row in source.examples.order_by("id").iterator(chunk_size=COPY_BATCH):
            if row.source_id in drops:
                continue
            decided = decisions.get(row.source_id)
            meta = dict(row.meta)
            label, category = row.label, row.category
            if decided is not None:
                meta["reviewed"] = {"audit": audit.pk, "decision": decided.decision}
            if decided is not None and decided.decision == AuditDecision.FLIP:
                label, category = 1 - row.label, decided.new_category
                meta["reviewed"]["flipped_from"] = [row.label, row.category]
                if row.response:  # a refusal stays benign output (data._set_response)
                    meta["response_label"] = 0 if meta.get("refused") else label
            row_copy = DatasetExample(
                dataset=copy, messages=row.messages, prompt_text=row.prompt_text,
                response=row.response, label=label, category=category,
                source_id=row.source_id, transform=row.transform, split=row.split, meta=meta,
            )  # fmt: skip
            batch.append(row_copy)
            if len(batch) >= COPY_BATCH:
                DatasetExample.objects.bulk_create(batch)
                batch = []
        DatasetExample.objects.bulk_create(batch)
        # Counted from the copy as written, streamed: no list of every example.
        copy.counts = {
            **ml_data.count_examples(
                row.to_example() for row in copy.examples.iterator(chunk_size=COPY_BATCH)
            ),
            "feedback": (source.counts or {}).get("feedback", 0),
            "stats": (source.counts or {}).get("stats", {}),
        }
        copy.done = copy.total = copy.counts["total"]
        copy.save(update_fields=["counts", "done", "total"])
        LabelAudit.objects.filter(pk=audit.pk).update(applied_dataset=copy, applied_at=now)
        record(
            source.constitution_version.constitution, user, "dataset",
            f"label audit #{audit.pk} applied: dataset #{copy.pk} from #{source.pk} "
            f"({len(flips)} flipped, {len(drops)} dropped"
            f"{', reviewed: ' + ', '.join(reviewed_splits) if reviewed_splits else ''})",
            audit=audit.pk, dataset=copy.pk,
        )  # fmt: skip
    return copy


def label_provenance(dataset: Dataset, _seen: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Which splits' labels people reviewed, following applied audits back to the
    generated dataset, and through a combined dataset into each of its parts (a split
    of a combined dataset counts as reviewed when it is reviewed in every part): the
    model page and its JSON report say whether the numbers rest on generated or
    reviewed labels."""
    from classifiers.services_combine import combined_from

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
