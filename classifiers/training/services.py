"""Start and cancel training runs."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q

from classifiers.models import (
    Dataset,
    DatasetExample,
    JobStatus,
    TrainingRun,
)
from classifiers.training.config import TrainingError, normalize_config
from classifiers.training.tasks import train_classifier


def corrected_training_prompts(dataset: Dataset) -> int:
    """Training examples whose label a person corrected (data.is_correction): what
    the correction weight applies to."""
    corrected = Q(meta__reviewed__has_key="flipped_from") | Q(meta__source="feedback")
    return DatasetExample.objects.filter(corrected, dataset=dataset, split="train").count()


def training_start(
    *,
    dataset: Dataset,
    config: dict[str, Any] | None,
    user: Any,
    activate_when_done: bool = False,
    enqueue: bool = True,
) -> TrainingRun:
    """Create a queued run and (after commit) send it to the gpu queue."""
    if dataset.status != JobStatus.DONE:
        raise TrainingError(f"dataset #{dataset.pk} is {dataset.status}, not done")
    if not DatasetExample.objects.filter(dataset=dataset, split="train").exists():
        raise TrainingError(f"dataset #{dataset.pk} has no training examples")
    cfg = normalize_config(config)
    run = TrainingRun.objects.create(
        dataset=dataset,
        config=cfg,
        activate_when_done=activate_when_done,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    if enqueue:

        transaction.on_commit(lambda: train_classifier.delay(run.pk))
    return run


def training_cancel(*, run: TrainingRun) -> bool:
    return run.request_cancel()
