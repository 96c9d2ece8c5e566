"""The worker side of a training run: load the rows, call classifiers.ml.pipeline,
save the results.

    dataset rows by split -> ml.pipeline.train_guard (train, calibrate, evaluate)
    -> ml.pipeline.save_guard (both artifacts) -> ModelVersion rows (+ activation)
    in one transaction

Nothing half-done survives: a failure or a cancel removes any artifact folder this
run wrote, creates no rows and leaves the active models alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.datasets.examples import examples_by_split
from classifiers.ml import registry
from classifiers.ml.device import pick_device_name
from classifiers.ml.pipeline import (
    PipelineConfig,
    PipelineProgress,
    remove_artifacts,
    save_guard,
    train_guard,
)
from classifiers.models import ModelVersion, TrainingRun
from classifiers.training.config import TrainingError, code_version, normalize_config
from classifiers.training.registry import activate_model

logger = logging.getLogger(__name__)


def category_fpr_targets(version: Any) -> dict[str, float]:
    """The per-category false-positive targets a constitution version sets."""
    return {
        c["name"]: float(c["target_fpr"])
        for c in version.content.get("categories", [])
        if c.get("target_fpr") is not None
    }


def execute_training(
    run: TrainingRun,
    *,
    progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    echo: Callable[[str], None] | None = None,
    set_history: Callable[[Callable[[], dict[str, Any]]], None] | None = None,
    on_saved: Callable[[], None] | None = None,
) -> list[ModelVersion]:
    """Run the whole pipeline for `run`; returns the created ModelVersions.

    `set_history` receives a zero-argument function returning the live history, so
    the JobRunner can save it with each progress write. `on_saved` runs inside the
    transaction that creates the rows (the JobRunner marks the run done there), so
    rows, activation and the run's status commit together.
    """
    cfg = normalize_config(run.config)
    dataset = run.dataset
    version = dataset.constitution_version
    constitution = version.constitution
    tracker = PipelineProgress(progress, should_cancel, echo)
    if set_history is not None:
        set_history(tracker.history_snapshot)

    tracker.report("load", 0, 1)
    splits = examples_by_split(dataset)
    if not splits.get("train"):
        raise TrainingError(f"dataset #{dataset.pk} has no training examples")
    if not any(e.label == 0 for e in splits.get("calibration", [])):
        raise TrainingError(
            f"dataset #{dataset.pk} has no benign examples in its calibration split; "
            "thresholds cannot be calibrated"
        )
    tracker.report("load", 1, 1)

    encoder = registry.encoder_dir(getattr(settings, "ENCODER_MODEL_DIR", "") or None)
    generator = partial(
        registry.generator_dir,
        getattr(settings, "GENERATOR_MODEL_DIR", "") or None,
        data_dir=settings.DATA_DIR,
    )
    trained = train_guard(
        PipelineConfig.from_dict(cfg), splits, version.to_spec(),
        encoder_dir=encoder, generator_dir=generator, device=pick_device_name(),
        category_fpr=category_fpr_targets(version), progress=tracker,
        should_cancel=should_cancel,
        warn=lambda message: logger.warning("run %s: %s", run.pk, message),
    )  # fmt: skip

    tracker.check()
    version_tag = code_version()
    input_rel = f"{constitution.slug}/{run.pk}-input"
    output_rel = f"{constitution.slug}/{run.pk}-output"
    written = [Path(settings.ARTIFACTS_DIR) / input_rel, Path(settings.ARTIFACTS_DIR) / output_rel]
    input_checksum, output_checksum = save_guard(
        trained, encoder_dir=encoder, input_dir=written[0], output_dir=written[1],
        code_version=version_tag, progress=tracker,
    )  # fmt: skip
    try:
        tracker.check()
        with transaction.atomic():
            common = dict(
                constitution=constitution, constitution_version=version,
                dataset=dataset, training_run=run, code_version=version_tag,
            )  # fmt: skip
            created = [
                ModelVersion.objects.create(
                    kind="input", path=input_rel, checksum=input_checksum,
                    config={"mode": cfg["input_mode"], "run": cfg,
                            "classifier": asdict(trained.input.config)},
                    thresholds=trained.input.threshold_doc, metrics=trained.input.metrics,
                    report=trained.input.report, **common,
                )
            ]  # fmt: skip
            if trained.output is not None:
                created.append(
                    ModelVersion.objects.create(
                        kind="output", path=output_rel, checksum=output_checksum,
                        config={"mode": cfg["output_mode"], "run": cfg,
                                "classifier": trained.output.config.to_dict()},
                        thresholds=trained.output.threshold_doc,
                        metrics=trained.output.metrics, report=trained.output.report,
                        **common,
                    )
                )  # fmt: skip
            if run.activate_when_done:
                for model_version in created:
                    activate_model(model_version=model_version, user=run.created_by)
            TrainingRun.objects.filter(pk=run.pk).update(
                history=tracker.history_snapshot()
            )
            if on_saved is not None:
                on_saved()
    except BaseException:
        # No orphans: the artifacts go with the rows the transaction rolled back.
        remove_artifacts(written[: 2 if trained.output is not None else 1])
        raise
    return created


def run_training_job(run_pk: int, *, echo: Callable[[str], None] | None = None) -> None:
    """Run a queued TrainingRun under a JobRunner (also used in-process by commands)."""
    run = TrainingRun.objects.select_related(
        "dataset__constitution_version__constitution", "created_by"
    ).get(pk=run_pk)
    history_source: list[Callable[[], dict[str, Any]]] = []

    def extra_fields() -> dict[str, Any]:
        # The live history goes onto the row with each (throttled) progress write.
        return {"history": history_source[0]()} if history_source else {}

    with JobRunner(run, extra_fields=extra_fields) as runner:
        if runner.skip:
            return
        created = execute_training(
            run,
            progress=runner.progress,
            should_cancel=runner.should_cancel,
            echo=echo,
            set_history=history_source.append,
            on_saved=lambda: runner.finish(stage="done"),
        )
        logger.info("training run %s made models %s", run_pk, [m.pk for m in created])
