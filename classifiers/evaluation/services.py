"""Start (or reuse) the scoring of one input model on one evaluation set."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifiers.evaluation.tasks import evaluate_model
from classifiers.models import EvaluationRun, EvaluationSet, ModelVersion
from classifiers.models.jobs import ACTIVE_STATUSES
from classifiers.training.registry import active_model

# A whole-guard run generates a reply per prompt: these bound its work.
MAX_GUARD_PROMPTS = 2000
GUARD_TOKENS = (8, 256)
DEFAULT_GUARD_TOKENS = 64


class EvaluationError(ValueError):
    """An evaluation cannot start; the message says why."""


def guarding_output_model(model_version: ModelVersion) -> ModelVersion | None:
    """The output classifier that guards with this input model: the one trained in
    the same run, else the constitution's active one."""
    same_run = ModelVersion.objects.filter(
        training_run_id=model_version.training_run_id, kind="output"
    ).first()  # fmt: skip
    return same_run or active_model(model_version.constitution, "output")


def start_evaluation(
    *, evaluation_set: EvaluationSet, model_version: ModelVersion, user: Any,
    whole_guard: bool = False, max_new_tokens: int = DEFAULT_GUARD_TOKENS,
    enqueue: bool = True,
) -> EvaluationRun:  # fmt: skip
    """Queue the run; a second start of the same model on the same set while one
    is queued or running returns that one instead of scoring twice.

    `whole_guard` also generates a reply to every prompt the input classifier passes
    and lets the output classifier halt it (see evaluation/run.py)."""
    if model_version.kind != "input":
        raise EvaluationError(
            f"model #{model_version.pk} is an output classifier: an evaluation set holds "
            "prompts, which input classifiers score"
        )
    output_model = None
    if whole_guard:
        low, high = GUARD_TOKENS
        if not low <= int(max_new_tokens) <= high:
            raise EvaluationError(f"reply length must be between {low} and {high} tokens")
        if evaluation_set.stats.get("prompts", 0) > MAX_GUARD_PROMPTS:
            raise EvaluationError(
                f"a whole-guard run generates a reply per prompt: use a set of at most "
                f"{MAX_GUARD_PROMPTS} prompts (this one has {evaluation_set.stats['prompts']}), "
                "or score the input classifier alone"
            )
        output_model = guarding_output_model(model_version)
        if output_model is None:
            raise EvaluationError(
                f"model #{model_version.pk}'s training run has no output classifier and "
                f"{model_version.constitution.slug} has no active one: score the input "
                "classifier alone"
            )
    tokens = int(max_new_tokens) if whole_guard else 0
    with transaction.atomic():
        # Lock the set's row: two submits at once cannot both start a run.
        EvaluationSet.objects.select_for_update().filter(pk=evaluation_set.pk).first()
        running = EvaluationRun.objects.filter(
            evaluation_set=evaluation_set, model_version=model_version,
            output_model=output_model, max_new_tokens=tokens, status__in=ACTIVE_STATUSES,
        ).first()  # fmt: skip
        if running is not None:
            return running
        run = EvaluationRun.objects.create(
            evaluation_set=evaluation_set, model_version=model_version,
            output_model=output_model, max_new_tokens=tokens,
            total=evaluation_set.stats.get("prompts", 0),
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip
    if enqueue:
        transaction.on_commit(lambda: evaluate_model.delay(run.pk))
    return run


def comparison(evaluation_set: EvaluationSet) -> list[dict[str, Any]]:
    """The latest finished run per model and way of scoring (input classifier alone,
    or the whole guard), newest model first: the rows of the set page's table."""
    latest: dict[tuple[int, bool], EvaluationRun] = {}
    runs = (
        evaluation_set.runs.filter(status="done")
        .select_related("model_version__constitution")
        .order_by("-finished_at")
    )
    for run in runs:
        latest.setdefault((run.model_version_id, run.whole_guard), run)
    return [
        {"run": run, "model": run.model_version, "report": run.report,
         "key": f"{run.model_version_id}{'g' if run.whole_guard else ''}"}  # fmt: skip
        for run in sorted(latest.values(), key=lambda r: (-r.model_version_id, r.whole_guard))
    ]
