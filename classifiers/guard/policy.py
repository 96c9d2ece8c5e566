"""What the guard serves: the probe cascade in use, turned on or off."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifiers.models import (
    ActiveModel,
    CascadeCalibration,
    GuardPolicy,
    ModelVersion,
)
from classifiers.models.jobs import JobStatus
from classifiers.training.registry import active_model
from constitutions.models import record

DEFAULT_ESCALATE_FRACTION = 0.05  # of benign streams; CC++ escalated ~5.5% of traffic


MAX_ESCALATE_FRACTION = 0.5


class CascadeError(ValueError):
    """Bad input for a cascade (shown to the user as it is)."""


def active_probe(constitution: Any) -> ModelVersion | None:

    return active_model(constitution, "output")


def stop_cascade(*, constitution: Any, user: Any) -> bool:
    """Serve the output model alone again. Returns whether a cascade was on."""

    with transaction.atomic():
        changed = GuardPolicy.objects.filter(
            constitution=constitution, cascade__isnull=False
        ).update(cascade=None)
        if changed:
            record(constitution, user, "guard", "probe cascade turned off")
    return bool(changed)


def use_cascade(*, job: CascadeCalibration, user: Any) -> None:
    """Serve a finished calibration (one UPDATE: the next request picks it up)."""
    if job.status != JobStatus.DONE or not job.settings:
        raise CascadeError(f"calibration #{job.pk} has not finished")
    with transaction.atomic():
        if not serve_if_probe_active(job, user):
            raise CascadeError(
                f"calibration #{job.pk} was made for output model #{job.probe_model_id}, "
                "which is no longer active: calibrate again"
            )


def serve_if_probe_active(job: CascadeCalibration, user: Any) -> bool:
    """Point the policy at `job` if its probe is still the active output model
    (the live-model rows locked, so an activation racing this sees the result).
    Call inside a transaction."""

    list(ActiveModel.objects.select_for_update().filter(constitution=job.constitution))
    probe = active_probe(job.constitution)
    if probe is None or probe.pk != job.probe_model_id:
        return False
    # Only the cascade column: a settings form saved meanwhile keeps its changes.
    GuardPolicy.objects.update_or_create(constitution=job.constitution, defaults={"cascade": job})
    record(
        job.constitution, user, "guard",
        f"probe cascade #{job.pk} on: output model #{job.probe_model_id} escalates "
        f"to #{job.heavy_model_id}",
        cascade=job.pk,
    )  # fmt: skip
    return True


def served_cascade(policy: GuardPolicy, output_model: ModelVersion | None) -> CascadeCalibration | None:
    """The calibration the guard serves, or None (off, or its probe was replaced)."""
    job = policy.cascade if policy.cascade_id else None
    if job is None or output_model is None or job.probe_model_id != output_model.pk:
        return None
    if job.status != JobStatus.DONE or not job.settings:
        return None
    return job
