"""Start a label audit, decide its items, learn their order, apply it as a new dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from classifiers.audit.report import (
    audit_report,
    category_kinds,
    completed_review_splits,
)
from classifiers.audit.run import AuditError, embeddings_from_bytes
from classifiers.audit.tasks import audit_labels
from classifiers.models import (
    AuditDecision,
    Dataset,
    DatasetExample,
    LabelAudit,
    LabelAuditItem,
)
from classifiers.models.audit import (
    DEFAULT_SPOT_CHECK,
    MAX_SPOT_CHECK,
    REVIEWABLE_SPLITS,
)
from classifiers.models.jobs import ACTIVE_STATUSES, JobStatus
from constitutions.models import record

logger = logging.getLogger(__name__)


COPY_BATCH = 1000


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

        transaction.on_commit(lambda: audit_labels.delay(audit.pk))
    return audit


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


def learn_order(audit: LabelAudit) -> dict[str, Any]:
    """Score every undecided item by how likely its generated label is wrong, from
    the decisions so far (classifiers.ml.eval.label_audit.rank_by_decisions).

    Only orders the queue: ranks, reasons and the random sample are unchanged.
    Takes milliseconds to a second (a logistic head on stored embeddings), so it
    runs in the request, under the audit's row lock: a decision made meanwhile
    waits, and the scores match the decisions they were learned from."""
    from classifiers.ml.eval.label_audit import rank_by_decisions

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


def apply_audit(*, audit: LabelAudit, user: Any) -> Dataset:
    """Write a new dataset: flipped sources (all their augmented copies) relabelled,
    dropped sources left out, reviewed sources marked (a later audit skips them).
    One transaction: all of it or nothing."""
    from classifiers.ml.data import assemble as ml_data

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
                if row.response:  # a refusal stays benign output (data.stage1.set_response)
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
