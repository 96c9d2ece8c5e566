"""Every Celery task of the classifiers app, registered by importing it here
(Celery's autodiscovery imports this module).

Task names are explicit ("classifiers.tasks.<name>") and unchanged since they were
defined in this module, so routes in settings and tasks already queued keep working.
"""

from __future__ import annotations

from classifiers.audit.tasks import audit_labels
from classifiers.core.jobs import reap_jobs_of_dead_workers
from classifiers.datasets.tasks import generate_dataset
from classifiers.evaluation.tasks import evaluate_model
from classifiers.guard.tasks import calibrate_cascade
from classifiers.training.tasks import train_classifier

__all__ = [
    "audit_labels",
    "calibrate_cascade",
    "evaluate_model",
    "generate_dataset",
    "reap_jobs_of_dead_workers",
    "train_classifier",
]
