"""The worker side of an evaluation: score every prompt of a set with an input model
as the guard serves it (its thresholds, all canonical views), then keep the per-kind
report on the run and in the model's report under the set's name.

A whole-guard run also generates a reply to every prompt the input classifier
passes (the local model, greedy, as the playground and API serve it) and lets the
output classifier halt it: a prompt is refused when either stops it, which is what a
user of the guard sees."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

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
GUARD_STREAMS = 8  # replies generated at once in a whole-guard run


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
    if run.whole_guard:
        scores, flagged, stopped_by = _whole_guard(run, prompts, progress, should_cancel)
    else:
        scores, flagged = _input_only(model, prompts, progress, should_cancel)
        stopped_by = ["input" if f else "" for f in flagged]
    report = kind_report(
        prompts, flagged, name=run.report_name,
        target_fpr=model.thresholds.get("target_fpr"),
    )  # fmt: skip
    report = {
        **report,
        **mistakes_and_histogram(prompts, scores, flagged),
        "threshold": model.threshold,
        "evaluation_set": run.evaluation_set_id,
    }
    if run.whole_guard:
        report["guard"] = _stopped_by_report(prompts, stopped_by, run)
    return report


def _input_only(
    model: Any, prompts: list[LabelledPrompt], progress: Callable[..., None],
    should_cancel: Callable[[], bool],
) -> tuple[list[float], list[bool]]:  # fmt: skip
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
    return scores, flagged


def _whole_guard(
    run: EvaluationRun, prompts: list[LabelledPrompt], progress: Callable[..., None],
    should_cancel: Callable[[], bool],
) -> tuple[list[float], list[bool], list[str]]:  # fmt: skip
    """Per prompt: its input score, whether the guard refused it, and what stopped
    it ("input", "output" or "")."""
    from classifiers.guard.engines import build_engine
    from classifiers.ml.serving.engine import GuardConfig, run_to_end

    engine = build_engine(run.model_version, run.output_model)
    config = GuardConfig(mode="enforce", max_new_tokens=run.max_new_tokens)
    progress(stage="input classifier", done=0, total=len(prompts))
    decisions = []
    for start in range(0, len(prompts), SCORE_BATCH):
        check_cancelled(should_cancel, "evaluation cancelled")
        chunk = prompts[start : start + SCORE_BATCH]
        decisions += engine.classify(
            [[{"role": "user", "content": p.text}] for p in chunk], mode="enforce"
        )
        progress(stage="input classifier", done=len(decisions), total=len(prompts))
    scores = [d.score for d in decisions]
    stopped_by = ["input" if d.blocked else "" for d in decisions]
    passed = [i for i, d in enumerate(decisions) if not d.blocked]

    # The streams read a flag, not should_cancel: that queries the database, and
    # a pool thread's connection would outlive the job.
    stop = threading.Event()

    def reply(index: int) -> bool:
        result = run_to_end(engine.stream(
            [{"role": "user", "content": prompts[index].text}], config,
            should_stop=stop.is_set, input_decision=decisions[index],
        ))  # fmt: skip
        return result.halted_at is not None

    # Several replies at once: the engine's continuous batcher decodes them together.
    done = len(prompts) - len(passed)
    progress(stage="replies", done=done, total=len(prompts))
    pool = ThreadPoolExecutor(max_workers=GUARD_STREAMS)
    pending = {pool.submit(reply, index): index for index in passed}
    try:
        while pending:
            finished, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            if should_cancel():
                stop.set()
            for future in finished:
                if future.result():
                    stopped_by[pending[future]] = "output"
                del pending[future]
                done += 1
            progress(stage="replies", done=done, total=len(prompts))
    finally:
        # A failed reply (or a failed progress write) ends the job now: the streams
        # still running stop and the queued ones never start.
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    check_cancelled(should_cancel, "evaluation cancelled")
    return scores, [bool(s) for s in stopped_by], stopped_by


def _stopped_by_report(
    prompts: list[LabelledPrompt], stopped_by: list[str], run: EvaluationRun
) -> dict[str, Any]:
    """How many prompts each classifier stopped, overall and per kind."""

    def counts(chosen: list[int]) -> dict[str, int]:
        return {
            "input_blocked": sum(1 for i in chosen if stopped_by[i] == "input"),
            "output_halted": sum(1 for i in chosen if stopped_by[i] == "output"),
            "n": len(chosen),
        }

    by_kind: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_kind.setdefault(prompt.kind, []).append(index)
    return {
        "output_model": run.output_model_id,
        "max_new_tokens": run.max_new_tokens,
        **counts(list(range(len(prompts)))),
        "per_kind": {kind: counts(chosen) for kind, chosen in sorted(by_kind.items())},
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
