"""The worker side of a probe-cascade calibration."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.core.model_cache import shared_generator
from classifiers.datasets.examples import examples_by_split
from classifiers.guard.engines import input_guard_for, output_model_for
from classifiers.guard.policy import CascadeError, serve_if_probe_active
from classifiers.ml.pipeline import REPORT_SPLITS, with_response_label
from classifiers.ml.types import Cancelled, Example
from classifiers.models import CascadeCalibration
from classifiers.models.jobs import JobStatus
from classifiers.training.registry import active_model

logger = logging.getLogger(__name__)


SCORE_BATCH = 8


def _score(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: Any,
    *,
    max_length: int,
    on_batch: Callable[[int], None],
    should_cancel: Callable[[], bool],
) -> tuple[list[list[float]], float]:
    """Per-token running scores (each model's own aggregator), and seconds spent."""
    from classifiers.ml.output.scoring import aggregate_scores, score_responses

    per_token: list[list[float]] = []
    seconds = 0.0
    for start in range(0, len(examples), SCORE_BATCH):
        if should_cancel():
            raise Cancelled()
        chunk = list(examples[start : start + SCORE_BATCH])
        t0 = time.perf_counter()
        probs = score_responses(
            model, tokenizer, chunk, batch_size=SCORE_BATCH, max_length=max_length
        )
        seconds += time.perf_counter() - t0
        per_token += [aggregate_scores(p, cfg.aggregator, float(cfg.ema_alpha)) for p in probs]
        on_batch(len(chunk))
    return per_token, seconds


def _predicted_categories(constitution: Any, examples: Sequence[Example]) -> list[str] | None:
    """The active input classifier's category of each prompt: the guard picks a
    per-category output threshold by it. None without an active input model."""
    from classifiers.ml.input.scoring import score_texts

    model = active_model(constitution, "input")
    if model is None:
        return None
    guard = input_guard_for(model)
    scored = score_texts(guard.model, guard.tokenizer, [e.prompt_text for e in examples])
    return [s.category for s in scored]


def _parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def execute_cascade_calibration(
    job: CascadeCalibration,
    *,
    progress: Callable[..., None],
    should_cancel: Callable[[], bool],
    finish: Callable[..., None],
) -> None:
    from classifiers.ml.eval.cascade_calibration import (
        calibrate_cascade,
        evaluate_cascade,
    )

    probe_model, heavy_model = job.probe_model, job.heavy_model
    probe, probe_thresholds, probe_cfg = output_model_for(probe_model)
    heavy, heavy_thresholds, heavy_cfg = output_model_for(heavy_model)
    generator, tokenizer = shared_generator()
    if heavy.lm.config.vocab_size != probe.lm.config.vocab_size:
        raise CascadeError(
            f"model #{heavy_model.pk} uses another tokenizer than the probe "
            f"(vocabulary {heavy.lm.config.vocab_size} vs {probe.lm.config.vocab_size})"
        )
    splits = examples_by_split(probe_model.dataset)
    # Band, weight and threshold are fitted on calibration + validation (neither is
    # reported on): the calibration split alone is a few dozen replies on small
    # datasets, too few benign ones to place a band.
    examples = {
        "calibration": with_response_label(
            splits.get("calibration", []) + splits.get("validation", [])
        ),
        **{s: with_response_label(splits.get(s, [])) for s in REPORT_SPLITS},
    }
    if not any(e.label == 0 for e in examples["calibration"]):
        raise CascadeError(
            f"dataset #{probe_model.dataset_id} has no benign responses in its calibration "
            "and validation splits"
        )
    max_length = min(probe_cfg.max_length, heavy_cfg.max_length)
    total = 2 * sum(len(v) for v in examples.values())
    done = 0

    def on_batch(n: int, stage: str) -> None:
        nonlocal done
        done += n
        progress(stage=stage, done=done, total=total)

    scores: dict[str, dict[str, list[list[float]]]] = {}
    seconds = {"probe": 0.0, "heavy": 0.0}
    for split, items in examples.items():
        scores[split] = {}
        for name, model, cfg in (("probe", probe, probe_cfg), ("heavy", heavy, heavy_cfg)):
            stage = f"{name}: {split}"
            progress(stage=stage, done=done, total=total)
            scores[split][name], spent = _score(
                model, tokenizer, items, cfg, max_length=max_length,
                on_batch=lambda n, stage=stage: on_batch(n, stage), should_cancel=should_cancel,
            )  # fmt: skip
            seconds[name] += spent

    target_fpr = float(job.config["target_fpr"])
    labels = {s: [e.label for e in items] for s, items in examples.items()}
    per_category_fpr = dict(probe_thresholds.per_category_fpr)
    calibration = calibrate_cascade(
        scores["calibration"]["probe"], scores["calibration"]["heavy"], labels["calibration"],
        target_fpr=target_fpr, escalate_fraction=float(job.config["escalate_fraction"]),
        categories=[e.category for e in examples["calibration"]],
        per_category_fpr=per_category_fpr,
        predicted_categories=(
            _predicted_categories(job.constitution, examples["calibration"])
            if per_category_fpr else None
        ),
    )  # fmt: skip
    evaluation = {
        split: evaluate_cascade(
            scores[split]["probe"], scores[split]["heavy"], labels[split], calibration.settings,
            probe_threshold=probe_thresholds.global_threshold,
            heavy_threshold=heavy_thresholds.global_threshold, target_fpr=target_fpr,
            predicted_categories=(
                _predicted_categories(job.constitution, examples[split])
                if calibration.settings.per_category else None
            ),
        )  # fmt: skip
        for split in REPORT_SPLITS
        if labels[split]
    }
    tokens = sum(len(s) for split in scores.values() for s in split["heavy"])
    heavy_params, generator_params = _parameters(heavy.lm), _parameters(generator)
    fraction = calibration.stats["heavy_token_fraction"]
    cost = {
        # Measured here, on whole responses: what each classifier costs per token.
        "heavy_seconds_per_token": seconds["heavy"] / tokens if tokens else None,
        "probe_standalone_seconds_per_token": seconds["probe"] / tokens if tokens else None,
        "heavy_parameters": heavy_params,
        "generator_parameters": generator_params,
        # Served, the probe reads the generator's activations (a 1-output linear
        # layer per token), so the cascade's extra compute is the heavy classifier on
        # the escalated share of tokens, in generator forwards (parameter ratio).
        "heavy_token_fraction": fraction,
        "extra_compute_vs_generation": fraction * heavy_params / generator_params,
        "heavy_on_everything_vs_generation": heavy_params / generator_params,
    }
    report = {
        "calibration": calibration.to_dict(),
        "splits": evaluation,
        "cost": cost,
        "probe_model": probe_model.pk,
        "heavy_model": heavy_model.pk,
        "target_fpr": target_fpr,
        "escalate_fraction": float(job.config["escalate_fraction"]),
    }
    if should_cancel():
        raise Cancelled()
    save_result(job, settings=calibration.settings.to_dict(), report=report, finish=finish)


def save_result(
    job: CascadeCalibration,
    *,
    settings: dict[str, Any],
    report: dict[str, Any],
    finish: Callable[..., None],
) -> None:
    """Mark the job done with its result and, if asked and its probe is still the
    active output model, serve it: all in one transaction."""
    with transaction.atomic():
        # A worker killed before the commit leaves the policy as it was. The row is
        # locked and re-read, so a cancel that came in late, or a reaper that already
        # failed the job (its heartbeat lapsed), wins over this result.
        row = CascadeCalibration.objects.select_for_update().get(pk=job.pk)
        if row.cancel_requested:
            raise Cancelled()
        if row.status != JobStatus.RUNNING:
            raise CascadeError(f"calibration #{job.pk} is {row.status}; nothing was switched")
        finish(settings=settings, report=report, stage="done")
        job.refresh_from_db()
        if job.use_when_done:
            serve_if_probe_active(job, job.created_by)


def run_cascade_job(job_pk: int) -> None:
    """Run a queued CascadeCalibration under a JobRunner (also used by the command)."""

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
