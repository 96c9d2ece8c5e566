"""Celery tasks, thin: load rows, call classifiers.ml, save through services.

Task names are explicit ("classifiers.tasks.<name>") so routes in settings stay
stable whichever submodule defines them.
"""

from __future__ import annotations

import importlib

from celery.signals import worker_ready

for _area in ("datasets", "training", "guard"):
    try:
        importlib.import_module(f"classifiers.tasks.{_area}")
    except ModuleNotFoundError as exc:
        if exc.name != f"classifiers.tasks.{_area}":
            raise


@worker_ready.connect
def reap_jobs_of_dead_workers(**_: object) -> None:
    """A (re)started worker marks jobs whose worker died as failed."""
    from classifiers.models import CascadeCalibration, Dataset, LabelAudit, TrainingRun

    Dataset.reap_stale()
    TrainingRun.reap_stale()
    CascadeCalibration.reap_stale()
    LabelAudit.reap_stale()
