"""Start a probe-cascade calibration on the gpu queue."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifiers.guard.policy import (
    DEFAULT_ESCALATE_FRACTION,
    MAX_ESCALATE_FRACTION,
    CascadeError,
    active_probe,
)
from classifiers.guard.tasks import calibrate_cascade
from classifiers.models import (
    CascadeCalibration,
    ModelVersion,
)
from classifiers.models.jobs import ACTIVE_STATUSES


def start_cascade_calibration(
    *,
    constitution: Any,
    heavy_model: ModelVersion | None,
    escalate_fraction: float = DEFAULT_ESCALATE_FRACTION,
    target_fpr: float | None = None,
    use_when_done: bool = True,
    user: Any = None,
    enqueue: bool = True,
) -> CascadeCalibration:
    probe = active_probe(constitution)
    if probe is None:
        raise CascadeError(
            "this constitution has no active output classifier: train and activate one "
            "first (it is the cascade's probe)"
        )
    if heavy_model is None:
        raise CascadeError("choose the heavy output classifier")
    if heavy_model.kind != "output" or heavy_model.constitution_id != constitution.pk:
        raise CascadeError(
            f"model #{heavy_model.pk} is not an output classifier of {constitution.slug!r}"
        )
    if heavy_model.pk == probe.pk:
        raise CascadeError(
            f"model #{probe.pk} is the active output model, the cascade's probe: "
            "choose another one as the heavy classifier"
        )
    if not 0 < escalate_fraction <= MAX_ESCALATE_FRACTION:
        raise CascadeError(
            f"the escalation rate must be above 0 and at most {MAX_ESCALATE_FRACTION:.0%}"
        )
    if target_fpr is None:
        target_fpr = float(probe.thresholds.get("target_fpr", 0.01))
    if not 0 < target_fpr < 1:
        raise CascadeError("the target false-positive rate must be between 0 and 1")
    with transaction.atomic():
        # Lock the constitution row: two submits at once cannot both pass the check.
        type(constitution).objects.select_for_update().filter(pk=constitution.pk).first()
        if CascadeCalibration.objects.filter(
            constitution=constitution, status__in=ACTIVE_STATUSES
        ).exists():
            raise CascadeError("a cascade calibration is already running for this constitution")
        job = CascadeCalibration.objects.create(
            constitution=constitution,
            probe_model=probe,
            heavy_model=heavy_model,
            config={"escalate_fraction": escalate_fraction, "target_fpr": target_fpr},
            use_when_done=use_when_done,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
    if enqueue:

        transaction.on_commit(lambda: calibrate_cascade.delay(job.pk))
    return job
