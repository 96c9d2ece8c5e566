"""The evaluation task: thin, the work lives in evaluation.run."""

from __future__ import annotations

from celery import shared_task

from classifiers.evaluation.run import run_evaluation_job


# Loads and runs an input model: model work, so the gpu queue.
@shared_task(name="classifiers.tasks.evaluate_model", bind=True, acks_late=True)
def evaluate_model(self, run_pk: int) -> None:  # type: ignore[no-untyped-def]
    run_evaluation_job(run_pk)
