"""The training task: thin, the work lives in training.run."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from classifiers.training.run import run_training_job


@shared_task(name="classifiers.tasks.train_classifier", bind=True, acks_late=True)
def train_classifier(self: Any, run_pk: int) -> None:
    run_training_job(run_pk)
