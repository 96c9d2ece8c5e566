"""The worker side of a training run.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.datasets.examples import examples_by_split
from classifiers.ml.types import Cancelled, Example
from classifiers.models import (
    ModelVersion,
    TrainingRun,
)
from classifiers.training.config import TrainingError, code_version, normalize_config
from classifiers.training.registry import activate_model

REPORT_SPLITS = ("test", "heldout_transforms")


HALTING_BINS = 10


def _category_fpr_targets(version: Any) -> dict[str, float]:
    return {
        c["name"]: float(c["target_fpr"])
        for c in version.content.get("categories", [])
        if c.get("target_fpr") is not None
    }


def _with_response_label(examples: Sequence[Example]) -> list[Example]:
    """Examples that have a response, labelled for the OUTPUT classifier."""
    from classifiers.ml.data import response_label

    out = []
    for example in examples:
        label = response_label(example)
        if label is not None:
            out.append(replace(example, label=label))
    return out


def _halting_histogram(
    positions: Sequence[int | None], lengths: Sequence[int], labels: Sequence[int]
) -> dict[str, Any]:
    """Where in the response (as a fraction of its tokens) the guard halted."""
    edges = [i / HALTING_BINS for i in range(HALTING_BINS + 1)]
    harmful = [0] * HALTING_BINS
    benign = [0] * HALTING_BINS
    absolute: list[int] = []
    for position, length, label in zip(positions, lengths, labels, strict=True):
        if position is None:
            continue
        absolute.append(int(position))
        fraction = position / max(length, 1)
        index = min(int(fraction * HALTING_BINS), HALTING_BINS - 1)
        (harmful if label == 1 else benign)[index] += 1
    n_harmful = sum(1 for label in labels if label == 1)
    halted_harmful = sum(harmful)
    return {
        "edges": edges,
        "harmful": harmful,
        "benign": benign,
        "halted": len(absolute),
        "n": len(positions),
        "harmful_halted_fraction": halted_harmful / n_harmful if n_harmful else None,
        "median_token": sorted(absolute)[len(absolute) // 2] if absolute else None,
    }


class _Progress:
    """Adapts the ML core's callbacks: stage names, history, cancel, console echo."""

    def __init__(
        self,
        run: TrainingRun,
        progress: Callable[..., None] | None,
        should_cancel: Callable[[], bool] | None,
        echo: Callable[[str], None] | None,
    ) -> None:
        self.run = run
        self._progress = progress
        self._should_cancel = should_cancel
        self._echo = echo
        self.history: dict[str, list[dict[str, Any]]] = {"input": [], "output": []}
        self._lock = threading.Lock()
        self._last_echo = 0.0
        self._last_stage = ""

    def callback(self, kind: str, rename: dict[str, str]) -> Callable[..., None]:
        def on_progress(*, stage: str, done: int, total: int, **extra: Any) -> None:
            name = rename.get(stage, stage)
            if stage == "train" and "loss" in extra:
                point = {"step": int(done), **{
                    k: _finite(extra[k]) for k in
                    ("loss", "val_loss", "val_auroc", "epoch") if k in extra
                }}  # fmt: skip
                with self._lock:
                    self.history[kind].append(point)
            self.report(name, done, total)

        return on_progress

    def report(self, stage: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(stage=stage, done=done, total=total)
        now = time.monotonic()
        if self._echo and (stage != self._last_stage or now - self._last_echo > 2.0
                           or (total and done >= total)):  # fmt: skip
            self._last_echo, self._last_stage = now, stage
            self._echo(f"{stage}: {done}/{total}")

    def check(self) -> None:
        if self._should_cancel is not None and self._should_cancel():
            raise Cancelled("training cancelled")

    def history_snapshot(self) -> dict[str, Any]:
        with self._lock:
            # Keep the JSON small: the live chart needs at most a few hundred points.
            return {kind: _thin(points) for kind, points in self.history.items()}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _thin(points: list[dict[str, Any]], limit: int = 300) -> list[dict[str, Any]]:
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    # Keep every epoch-end point (they carry val_auroc) and every stride-th step.
    return [p for i, p in enumerate(points) if i % stride == 0 or "val_auroc" in p]


def _input_reports(
    *,
    loaded_model: Any,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    thresholds: Any,
    spec: Any,
    target_fpr: float,
    progress: _Progress,
) -> dict[str, Any]:
    from classifiers.ml.data import is_refusal
    from classifiers.ml.evaluate import (
        KeywordBaseline,
        evaluation_report,
        refusal_baseline_scores,
        tpr_at_fpr,
    )
    from classifiers.ml.input_classifier import score_texts

    keyword = KeywordBaseline.from_constitution(spec)
    reports: dict[str, Any] = {}
    names = [s for s in REPORT_SPLITS if splits.get(s)]
    for index, split in enumerate(names):
        progress.check()
        examples = splits[split]
        texts = [e.prompt_text for e in examples]
        labels = [e.label for e in examples]
        categories = [e.category for e in examples]
        transforms = [e.transform for e in examples]
        scored = score_texts(loaded_model, tokenizer, texts)
        scores = [s.score for s in scored]
        applied = [thresholds.for_category(s.category) for s in scored]
        report = evaluation_report(
            scores=scores, labels=labels, categories=categories,
            transforms=transforms, threshold=applied, name=f"input classifier / {split}",
        )  # fmt: skip
        report["threshold"] = thresholds.global_threshold
        report["target_fpr"] = target_fpr
        report["tpr_at_target_fpr"] = _finite(tpr_at_fpr(scores, labels, target_fpr))
        baselines = {
            "keyword": evaluation_report(
                scores=keyword.score(texts), labels=labels, categories=categories,
                transforms=transforms, threshold=0.5, name=f"keyword blocklist / {split}",
            ),
        }  # fmt: skip
        if any(e.response for e in examples):
            refusal = refusal_baseline_scores([e.response for e in examples], is_refusal)
            baselines["refusal"] = evaluation_report(
                scores=refusal, labels=labels, categories=categories,
                transforms=transforms, threshold=0.5,
                name=f"generator's own refusals / {split}",
            )  # fmt: skip
        reports[split] = {"classifier": report, "baselines": baselines}
        progress.report("evaluate input", index + 1, len(names))
    return reports


def _output_reports(
    *,
    model: Any,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    thresholds: Any,
    target_fpr: float,
    max_length: int,
    progress: _Progress,
    predict_categories: Callable[[Sequence[Example]], list[str]] | None = None,
) -> dict[str, Any]:
    """Each report split at the thresholds the guard applies: per category (by the
    input classifier's category of the prompt) where a category has its own."""
    from classifiers.ml.evaluate import evaluation_report, tpr_at_fpr
    from classifiers.ml.output_classifier import (
        final_scores,
        halting_positions,
        score_responses,
    )

    reports: dict[str, Any] = {}
    names = [s for s in REPORT_SPLITS if splits.get(s)]
    for index, split in enumerate(names):
        progress.check()
        examples = splits[split]
        per_token = score_responses(model, tokenizer, examples, max_length=max_length)
        scores = final_scores(per_token)
        labels = [e.label for e in examples]
        applied = [thresholds.global_threshold] * len(examples)
        if predict_categories is not None:
            applied = [thresholds.for_category(c) for c in predict_categories(examples)]
        report = evaluation_report(
            scores=scores, labels=labels, categories=[e.category for e in examples],
            transforms=[e.transform for e in examples], threshold=applied,
            name=f"output classifier / {split}",
        )  # fmt: skip
        report["threshold"] = thresholds.global_threshold
        report["per_category_thresholds"] = predict_categories is not None
        report["target_fpr"] = target_fpr
        report["tpr_at_target_fpr"] = _finite(tpr_at_fpr(scores, labels, target_fpr))
        report["halting"] = _halting_histogram(
            halting_positions(per_token, applied), [len(s) for s in per_token], labels
        )
        reports[split] = {"classifier": report, "baselines": {}}
        progress.report("evaluate output", index + 1, len(names))
    return reports


def _headline(reports: dict[str, Any], thresholds: dict[str, Any]) -> dict[str, Any]:
    test = reports.get("test", {}).get("classifier", {})
    heldout = reports.get("heldout_transforms", {}).get("classifier", {})
    keyword = reports.get("test", {}).get("baselines", {}).get("keyword", {})
    return {
        "auroc": test.get("auroc"),
        "tpr_at_threshold": test.get("tpr_at_threshold"),
        "fpr_at_threshold": test.get("fpr_at_threshold"),
        "tpr_at_target_fpr": test.get("tpr_at_target_fpr"),
        "target_fpr": thresholds.get("target_fpr"),
        "threshold": thresholds.get("global_threshold"),
        "heldout_tpr_at_threshold": heldout.get("tpr_at_threshold"),
        "keyword_tpr": keyword.get("tpr_at_threshold"),
        "n_test": test.get("n"),
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
    from classifiers.ml import registry
    from classifiers.ml.calibrate import calibrate_thresholds
    from classifiers.ml.data import correction_weights, is_correction
    from classifiers.ml.input_classifier import (
        InputClassifierConfig,
        save_input_classifier,
        score_texts,
        train_input_classifier,
    )

    cfg = normalize_config(run.config)
    dataset = run.dataset
    version = dataset.constitution_version
    constitution = version.constitution
    spec = version.to_spec()
    tracker = _Progress(run, progress, should_cancel, echo)
    if set_history is not None:
        set_history(tracker.history_snapshot)
    device = registry.pick_device()
    target_fpr = cfg["target_fpr"]

    tracker.report("load", 0, 1)
    splits = examples_by_split(dataset)
    if not splits.get("train"):
        raise TrainingError(f"dataset #{dataset.pk} has no training examples")
    calibration = splits.get("calibration", [])
    if not any(e.label == 0 for e in calibration):
        raise TrainingError(
            f"dataset #{dataset.pk} has no benign examples in its calibration split; "
            "thresholds cannot be calibrated"
        )
    tracker.report("load", 1, 1)

    # --- input classifier -------------------------------------------------------
    encoder = registry.encoder_dir(getattr(settings, "ENCODER_MODEL_DIR", "") or None)
    input_cfg = InputClassifierConfig(
        backbone_dir=str(encoder),
        categories=[c.name for c in spec.categories],
        mode=cfg["input_mode"],
        epochs=cfg["input_epochs"],
        seed=cfg["seed"],
    )
    weights = correction_weights(splits["train"], cfg["correction_weight"])
    trained = train_input_classifier(
        input_cfg, splits["train"], splits.get("validation", []), device=device,
        on_progress=tracker.callback("input", {"train": "train input"}),
        should_cancel=should_cancel, weights=weights,
    )  # fmt: skip
    tracker.check()
    tracker.report("calibrate input", 0, 1)
    calibration_scores = score_texts(
        trained.model, trained.tokenizer, [e.prompt_text for e in calibration]
    )
    input_thresholds = calibrate_thresholds(
        [s.score for s in calibration_scores],
        [e.label for e in calibration],
        [e.category for e in calibration],
        target_fpr=target_fpr,
        per_category_fpr=_category_fpr_targets(version),
        predicted_categories=[s.category for s in calibration_scores],
    )
    tracker.report("calibrate input", 1, 1)
    input_reports = _input_reports(
        loaded_model=trained.model, tokenizer=trained.tokenizer, splits=splits,
        thresholds=input_thresholds, spec=spec, target_fpr=target_fpr, progress=tracker,
    )  # fmt: skip
    input_threshold_doc = input_thresholds.to_dict()
    input_metrics = _headline(input_reports, input_threshold_doc)
    input_report = {
        "kind": "input",
        "splits": input_reports,
        "thresholds": input_threshold_doc,
        "history": tracker.history_snapshot()["input"],
        "training": {
            "mode": cfg["input_mode"],
            "epochs": cfg["input_epochs"],
            "best_epoch": trained.best_epoch,
            "examples_per_second": trained.examples_per_second,
            "train_seconds": trained.train_seconds,
            "embed_seconds": trained.embed_seconds,
            "n_train": len(splits["train"]),
            "n_corrected": sum(is_correction(e) for e in splits["train"]),
            "correction_weight": cfg["correction_weight"],
            "device": str(device),
        },
    }

    # --- output classifier ------------------------------------------------------
    output_result = None
    output_threshold_doc: dict[str, Any] = {}
    output_report: dict[str, Any] = {}
    output_train = _with_response_label(splits["train"])
    output_calibration = _with_response_label(calibration)
    if cfg["train_output"] and output_train and any(
        e.label == 0 for e in output_calibration
    ):
        # The guard picks the output threshold by the input classifier's category
        # of the prompt: per-category output thresholds are calibrated, and reported,
        # by this run's input classifier's categories.
        def predict_categories(examples: Sequence[Example]) -> list[str]:
            texts = [e.prompt_text for e in examples]
            return [s.category for s in score_texts(trained.model, trained.tokenizer, texts)]

        output_result, output_threshold_doc, output_report = _train_output(
            cfg, splits, output_train, output_calibration, version, device, tracker,
            should_cancel, predict_categories,
        )  # fmt: skip
    elif cfg["train_output"]:
        logger.warning("run %s: no responses to train the output classifier on", run.pk)

    # --- save artifacts, then rows (and activation) in one transaction ---------
    tracker.check()
    tracker.report("save", 0, 2)
    version_tag = code_version()
    base = Path(settings.ARTIFACTS_DIR) / constitution.slug
    input_rel = f"{constitution.slug}/{run.pk}-input"
    output_rel = f"{constitution.slug}/{run.pk}-output"
    written: list[Path] = []

    def claim(path: Path) -> None:
        # Never delete (on failure) a folder this run did not create.
        if path.exists():
            raise TrainingError(f"artifact folder {path} already exists")
        written.append(path)

    try:
        base.mkdir(parents=True, exist_ok=True)
        claim(base / f"{run.pk}-input")
        input_checksum = save_input_classifier(
            trained.model, encoder, Path(settings.ARTIFACTS_DIR) / input_rel,
            thresholds=input_thresholds, metrics=input_metrics, code_version=version_tag,
        )  # fmt: skip
        tracker.report("save", 1, 2)
        output_checksum = ""
        if output_result is not None:
            from classifiers.ml.output_classifier import save_output_classifier

            claim(base / f"{run.pk}-output")
            output_checksum = save_output_classifier(
                output_result.model, Path(settings.ARTIFACTS_DIR) / output_rel,
                thresholds=output_threshold_doc,
                metrics=_headline(output_report["splits"], output_threshold_doc),
                code_version=version_tag, config=output_result.config,
            )  # fmt: skip
        tracker.report("save", 2, 2)
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
                            "classifier": _jsonable(trained.config)},
                    thresholds=input_threshold_doc, metrics=input_metrics,
                    report=input_report, **common,
                )
            ]  # fmt: skip
            if output_result is not None:
                created.append(
                    ModelVersion.objects.create(
                        kind="output", path=output_rel, checksum=output_checksum,
                        config={"mode": cfg["output_mode"], "run": cfg,
                                "classifier": output_result.config.to_dict()},
                        thresholds=output_threshold_doc,
                        metrics=_headline(output_report["splits"], output_threshold_doc),
                        report=output_report, **common,
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
        # No orphans: whatever this run wrote goes (rows rolled back with the
        # transaction above).
        for path in written:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return created


def _jsonable(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


def _train_output(
    cfg: dict[str, Any],
    splits: dict[str, list[Example]],
    train: list[Example],
    calibration: list[Example],
    version: Any,
    device: str,
    tracker: _Progress,
    should_cancel: Callable[[], bool] | None,
    predict_categories: Callable[[Sequence[Example]], list[str]],
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    from classifiers.ml import registry
    from classifiers.ml.calibrate import calibrate_thresholds
    from classifiers.ml.output_classifier import (
        OutputClassifierConfig,
        final_scores,
        score_responses,
        train_output_classifier,
    )

    backbone = registry.generator_dir(
        getattr(settings, "GENERATOR_MODEL_DIR", "") or None, data_dir=settings.DATA_DIR
    )
    output_cfg = OutputClassifierConfig(
        backbone_dir=str(backbone),
        mode=cfg["output_mode"],
        layers=tuple(cfg["probe_layers"]),
        loss=cfg["output_loss"],
        epochs=cfg["output_epochs"],
        seed=cfg["seed"],
        max_length=cfg["output_max_length"],
        batch_size=8,
    )
    result = train_output_classifier(
        output_cfg, train, _with_response_label(splits.get("validation", [])),
        device=device,
        on_progress=tracker.callback(
            "output", {"train": "train output", "encode": "encode"}
        ),
        should_cancel=should_cancel,
    )  # fmt: skip
    tracker.check()
    tracker.report("calibrate output", 0, 1)
    per_token = score_responses(
        result.model, result.tokenizer, calibration, max_length=output_cfg.max_length
    )
    category_targets = _category_fpr_targets(version)
    thresholds = calibrate_thresholds(
        final_scores(per_token),
        [e.label for e in calibration],
        [e.category for e in calibration],
        target_fpr=cfg["target_fpr"],
        per_category_fpr=category_targets,
        predicted_categories=predict_categories(calibration) if category_targets else None,
    )
    threshold_doc = thresholds.to_dict()
    threshold_doc["aggregator"] = output_cfg.aggregator
    tracker.report("calibrate output", 1, 1)
    labelled = {
        split: _with_response_label(splits.get(split, [])) for split in REPORT_SPLITS
    }
    reports = _output_reports(
        model=result.model, tokenizer=result.tokenizer, splits=labelled,
        thresholds=thresholds, target_fpr=cfg["target_fpr"],
        predict_categories=predict_categories if thresholds.per_category else None,
        max_length=output_cfg.max_length, progress=tracker,
    )  # fmt: skip
    report = {
        "kind": "output",
        "splits": reports,
        "thresholds": threshold_doc,
        "history": tracker.history_snapshot()["output"],
        "epochs": [{k: _finite(v) for k, v in h.items()} for h in result.history],
        "training": {
            "mode": output_cfg.mode,
            "loss": output_cfg.loss,
            "layers": list(output_cfg.layers),
            "epochs": output_cfg.epochs,
            "tokens_per_second": result.tokens_per_s,
            "n_train": len(train),
            "device": str(device),
        },
    }
    return result, threshold_doc, report







logger = logging.getLogger(__name__)


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
