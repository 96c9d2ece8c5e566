"""The dataset build task: thin, the work lives in services_datasets.run_dataset."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="classifiers.tasks.generate_dataset", bind=True, acks_late=True)
def generate_dataset(self, dataset_id: int) -> str:  # type: ignore[no-untyped-def]
    from classifiers.services_datasets import run_dataset

    return run_dataset(dataset_id).status
