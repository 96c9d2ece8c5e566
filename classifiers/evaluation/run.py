"""The worker side of an evaluation: score every prompt of a set with an input model
as the guard serves it (its thresholds, all canonical views), then keep the per-kind
report on the run and in the model's report under the set's name."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.guard.engines import input_guard_for
from classifiers.ml.eval.labelled_sets import (
    LabelledPrompt,
    kind_report,
    mistakes_and_histogram,
)
from classifiers.ml.types import Cancelled, check_cancelled
from classifiers.models import EvaluationRun
from classifiers.models.jobs import JobStatus
from classifiers.training.registry import record_evaluation

SCORE_BATCH = 64


def score_prompts(
    run: EvaluationRun,
    *,
    progress: Callable[..., None],
    should_cancel: Callable[[], bool],
) -> dict:
    """The run's report: per-kind recall and FPR with intervals, plus the mistakes
    to read first and the score histograms."""
    model = run.model_version
    prompts = [
        LabelledPrompt(text=text, label=label, kind=kind)
        for text, label, kind in run.evaluation_set.prompts.order_by("position").values_list(
            "text", "label", "kind"
        )
    ]
    guard = input_guard_for(model)
    scores: list[float] = []
    flagged: list[bool] = []
    progress(stage="scoring", done=0, total=len(prompts))
    for start in range(0, len(prompts), SCORE_BATCH):
        check_cancelled(should_cancel, "evaluation cancelled")
        chunk = prompts[start : start + SCORE_BATCH]
        decisions = guard.decide(
            [[{"role": "user", "content": p.text}] for p in chunk], mode="shadow"
        )
        scores += [d.score for d in decisions]
        flagged += [d.flagged for d in decisions]
        progress(stage="scoring", done=len(flagged), total=len(prompts))
    report = kind_report(
        prompts, flagged, name=run.evaluation_set.name,
        target_fpr=model.thresholds.get("target_fpr"),
    )  # fmt: skip
    return {
        **report,
        **mistakes_and_histogram(prompts, scores, flagged),
        "threshold": model.threshold,
        "evaluation_set": run.evaluation_set_id,
    }


def run_evaluation_job(run_pk: int) -> None:
    """Run a queued EvaluationRun under a JobRunner (the task and the command)."""
    run = EvaluationRun.objects.select_related("evaluation_set", "model_version").get(pk=run_pk)
    with JobRunner(run) as runner:
        if runner.skip:
            return
        report = score_prompts(run, progress=runner.progress, should_cancel=runner.should_cancel)
        with transaction.atomic():
            # A cancel that came in at the last moment wins, and a job the reaper
            # failed stays failed: nothing is recorded in either case.
            row = EvaluationRun.objects.select_for_update().get(pk=run.pk)
            if row.cancel_requested:
                raise Cancelled("evaluation cancelled")
            if row.status != JobStatus.RUNNING:
                return
            record_evaluation(model_version=run.model_version, report=_model_copy(report))
            runner.finish(report=report)


def _model_copy(report: dict) -> dict:
    """The model's report keeps the rates; the prompts' texts stay with the set."""
    return {k: v for k, v in report.items() if k not in ("missed", "false_alarms")}
