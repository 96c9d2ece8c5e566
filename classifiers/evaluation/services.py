"""Start (or reuse) the scoring of one input model on one evaluation set."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifiers.evaluation.tasks import evaluate_model
from classifiers.models import EvaluationRun, EvaluationSet, ModelVersion
from classifiers.models.jobs import ACTIVE_STATUSES


class EvaluationError(ValueError):
    """An evaluation cannot start; the message says why."""


def start_evaluation(
    *, evaluation_set: EvaluationSet, model_version: ModelVersion, user: Any,
    enqueue: bool = True,
) -> EvaluationRun:  # fmt: skip
    """Queue the run; a second start of the same model on the same set while one
    is queued or running returns that one instead of scoring twice."""
    if model_version.kind != "input":
        raise EvaluationError(
            f"model #{model_version.pk} is an output classifier: an evaluation set holds "
            "prompts, which input classifiers score"
        )
    with transaction.atomic():
        # Lock the set's row: two submits at once cannot both start a run.
        EvaluationSet.objects.select_for_update().filter(pk=evaluation_set.pk).first()
        running = EvaluationRun.objects.filter(
            evaluation_set=evaluation_set, model_version=model_version,
            status__in=ACTIVE_STATUSES,
        ).first()  # fmt: skip
        if running is not None:
            return running
        run = EvaluationRun.objects.create(
            evaluation_set=evaluation_set, model_version=model_version,
            total=evaluation_set.stats.get("prompts", 0),
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip
    if enqueue:
        transaction.on_commit(lambda: evaluate_model.delay(run.pk))
    return run


def comparison(evaluation_set: EvaluationSet) -> list[dict[str, Any]]:
    """The latest finished run per model on this set, newest model first: the rows
    of the set page's comparison table."""
    latest: dict[int, EvaluationRun] = {}
    runs = (
        evaluation_set.runs.filter(status="done")
        .select_related("model_version__constitution")
        .order_by("-finished_at")
    )
    for run in runs:
        latest.setdefault(run.model_version_id, run)
    return [
        {"run": run, "model": run.model_version, "report": run.report}
        for run in sorted(latest.values(), key=lambda r: -r.model_version_id)
    ]
