"""The generation task: thin, the work lives in datasets.run."""

from __future__ import annotations

from celery import shared_task

from classifiers.datasets.run import run_dataset


@shared_task(name="classifiers.tasks.generate_dataset", bind=True, acks_late=True)
def generate_dataset(self, dataset_id: int) -> str:  # type: ignore[no-untyped-def]

    return run_dataset(dataset_id).status
