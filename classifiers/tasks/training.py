"""The training task: thin. Load the run, call the pipeline, record the outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task

logger = logging.getLogger(__name__)


def run_training_job(run_pk: int, *, echo: Callable[[str], None] | None = None) -> None:
    """Run a queued TrainingRun under a JobRunner (also used in-process by commands)."""
    from classifiers.models import TrainingRun
    from classifiers.progress import JobRunner
    from classifiers.services_training import execute_training

    run = TrainingRun.objects.select_related(
        "dataset__constitution_version__constitution", "created_by"
    ).get(pk=run_pk)
    history_source: list[Callable[[], dict[str, Any]]] = []

    def extra_fields() -> dict[str, Any]:
        # The live history goes onto the row with each (throttled) progress write.
        return {"history": history_source[0]()} if history_source else {}

    with JobRunner(run, extra_fields=extra_fields) as runner:
        if runner.skip:
            return
        created = execute_training(
            run,
            progress=runner.progress,
            should_cancel=runner.should_cancel,
            echo=echo,
            set_history=history_source.append,
            on_saved=lambda: runner.finish(stage="done"),
        )
        logger.info("training run %s made models %s", run_pk, [m.pk for m in created])


@shared_task(name="classifiers.tasks.train_classifier", bind=True, acks_late=True)
def train_classifier(self: Any, run_pk: int) -> None:
    run_training_job(run_pk)


def run_cascade_job(job_pk: int) -> None:
    """Run a queued CascadeCalibration under a JobRunner (also used by the command)."""
    from classifiers.models import CascadeCalibration
    from classifiers.progress import JobRunner
    from classifiers.services_cascade import execute_cascade_calibration

    job = CascadeCalibration.objects.select_related(
        "constitution", "probe_model__dataset", "heavy_model", "created_by"
    ).get(pk=job_pk)
    with JobRunner(job) as runner:
        if runner.skip:
            return
        execute_cascade_calibration(
            job, progress=runner.progress, should_cancel=runner.should_cancel,
            finish=runner.finish,
        )  # fmt: skip


@shared_task(name="classifiers.tasks.calibrate_cascade", bind=True, acks_late=True)
def calibrate_cascade(self: Any, job_pk: int) -> None:
    run_cascade_job(job_pk)
