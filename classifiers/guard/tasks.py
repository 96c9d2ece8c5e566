"""The probe-cascade calibration task: thin, the work lives in guard.cascade_run."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from classifiers.guard.cascade_run import run_cascade_job


@shared_task(name="classifiers.tasks.calibrate_cascade", bind=True, acks_late=True)
def calibrate_cascade(self: Any, job_pk: int) -> None:
    run_cascade_job(job_pk)
