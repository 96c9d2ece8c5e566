"""One training run of the guard, as a plain function: train -> calibrate -> evaluate.

    train_guard(config, splits, spec, ...)            -> TrainedGuard
        input classifier: train, calibrate on the calibration split, evaluate on
            test + heldout_transforms beside the keyword and refusal baselines
        output classifier (when there are responses): train, per-token scores,
            calibrate, evaluate, where in the reply it halts
    save_guard(trained, input_dir=..., output_dir=...) -> checksums
        both artifacts, or neither: a failure removes what this call wrote

Progress and cancel come in as callbacks (`on_progress(stage=, done=, total=)`,
`should_cancel()`); the Django side (classifiers.training.run) only loads the rows
and saves the results. Nothing here imports Django.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classifiers.ml.data.filters import is_refusal
from classifiers.ml.data.prompts import correction_weights, is_correction
from classifiers.ml.data.stage1 import response_label
from classifiers.ml.eval.calibrate import Thresholds, calibrate_thresholds
from classifiers.ml.eval.evaluate import (
    KeywordBaseline,
    evaluation_report,
    refusal_baseline_scores,
    tpr_at_fpr,
)
from classifiers.ml.input.model import InputClassifierConfig
from classifiers.ml.input.persistence import save_input_classifier
from classifiers.ml.input.scoring import score_texts
from classifiers.ml.input.training import train_input_classifier
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.output.persistence import save_output_classifier
from classifiers.ml.output.scoring import (
    final_scores,
    halting_positions,
    score_responses,
)
from classifiers.ml.output.training import train_output_classifier
from classifiers.ml.types import Cancelled, ConstitutionSpec, Example

REPORT_SPLITS = ("test", "heldout_transforms")
HALTING_BINS = 10
HISTORY_POINTS = 300  # the live loss chart needs at most a few hundred points


@dataclass
class PipelineConfig:
    """A training run's settings (checked by the caller; see training.config)."""

    input_mode: str = "fast"  # "fast": frozen encoder + heads; "full": fine-tune it
    output_mode: str = "fast"  # "fast": a probe on the frozen generator; "full": fine-tune
    input_epochs: int = 20
    output_epochs: int = 3
    seed: int = 0
    target_fpr: float = 0.01  # thresholds are calibrated to this false-positive rate
    output_loss: str = "running_max"  # or "window"
    probe_layers: tuple[int, ...] = (-1,)  # generator layers the value head reads
    output_max_length: int = 256  # tokens of prompt + response trained on per example
    # Tokens of prompt + response scored when calibrating and reporting. The guard
    # scores whole replies and its running maximum only grows with length: a
    # threshold set on replies cut at the training length let cbrn-demo's output
    # classifier halt 2.7% of real (longer) everyday replies at a 1% target
    # (docs/BENCHMARKS.md, session 17). It costs forwards only (no backward).
    output_calibration_max_length: int = 512
    train_output: bool = True
    # Loss weight of examples whose label a person corrected (see data.is_correction).
    correction_weight: float = 1.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PipelineConfig:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in raw.items() if k in known}
        if "probe_layers" in values:
            values["probe_layers"] = tuple(values["probe_layers"])
        return cls(**values)


class PipelineError(ValueError):
    """The splits cannot make a guard (shown to the user as it is)."""


def with_response_label(examples: Sequence[Example]) -> list[Example]:
    """Examples that have a response, labelled for the OUTPUT classifier."""
    out = []
    for example in examples:
        label = response_label(example)
        if label is not None:
            out.append(replace(example, label=label))
    return out


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: those become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def thin(points: list[dict[str, Any]], limit: int = HISTORY_POINTS) -> list[dict[str, Any]]:
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    # Keep every epoch-end point (they carry val_auroc) and every stride-th step.
    return [p for i, p in enumerate(points) if i % stride == 0 or "val_auroc" in p]


class PipelineProgress:
    """Adapts the trainers' callbacks: stage names, loss history, cancel, console echo."""

    def __init__(
        self,
        on_progress: Callable[..., None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self._progress = on_progress
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
                    k: finite(extra[k]) for k in
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
            return {kind: thin(points) for kind, points in self.history.items()}


@dataclass
class TrainedClassifier:
    """One trained classifier with what the registry stores beside it."""

    model: Any  # the trained module (input: heads on the encoder; output: LM + value head)
    thresholds: Thresholds
    threshold_doc: dict[str, Any]  # thresholds.to_dict() (+ the output aggregator)
    metrics: dict[str, Any]  # the headline numbers shown in lists
    report: dict[str, Any]  # every split's evaluation, baselines, history, timings
    config: Any  # InputClassifierConfig or OutputClassifierConfig
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainedGuard:
    input: TrainedClassifier
    output: TrainedClassifier | None  # None without responses (or train_output off)
    device: str


def train_guard(
    cfg: PipelineConfig,
    splits: dict[str, list[Example]],
    spec: ConstitutionSpec,
    *,
    encoder_dir: str | Path,
    generator_dir: Callable[[], str | Path],
    device: str,
    category_fpr: dict[str, float] | None = None,
    progress: PipelineProgress | None = None,
    should_cancel: Callable[[], bool] | None = None,
    warn: Callable[[str], None] | None = None,
) -> TrainedGuard:
    """Train, calibrate and evaluate the input (and output) classifier of a guard.

    1. The input classifier trains on `train` (validation picks the best epoch),
       its thresholds come from `calibration` (per category where `category_fpr`
       asks), and each report split is evaluated beside the keyword baseline.
    2. The output classifier does the same on the examples that have a response;
       its per-category thresholds follow the input classifier's category of the
       prompt, as the served guard picks them.
    `generator_dir` is called only when an output classifier is trained.
    """
    tracker = progress or PipelineProgress(should_cancel=should_cancel)
    category_fpr = category_fpr or {}
    train = splits.get("train", [])
    calibration = splits.get("calibration", [])
    if not train:
        raise PipelineError("no training examples")
    if not any(e.label == 0 for e in calibration):
        raise PipelineError("no benign examples in the calibration split")

    input_cfg = InputClassifierConfig(
        backbone_dir=str(encoder_dir),
        categories=[c.name for c in spec.categories],
        mode=cfg.input_mode,
        epochs=cfg.input_epochs,
        seed=cfg.seed,
    )
    trained = train_input_classifier(
        input_cfg, train, splits.get("validation", []), device=device,
        on_progress=tracker.callback("input", {"train": "train input"}),
        should_cancel=should_cancel, weights=correction_weights(train, cfg.correction_weight),
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
        target_fpr=cfg.target_fpr,
        per_category_fpr=category_fpr,
        predicted_categories=[s.category for s in calibration_scores],
    )
    tracker.report("calibrate input", 1, 1)
    input_reports = _input_reports(
        trained.model, trained.tokenizer, splits, input_thresholds, spec, cfg.target_fpr,
        tracker,
    )  # fmt: skip
    input_doc = input_thresholds.to_dict()
    input_result = TrainedClassifier(
        model=trained.model,
        thresholds=input_thresholds,
        threshold_doc=input_doc,
        metrics=headline(input_reports, input_doc),
        report={
            "kind": "input",
            "splits": input_reports,
            "thresholds": input_doc,
            "history": tracker.history_snapshot()["input"],
            "training": {
                "mode": cfg.input_mode,
                "epochs": cfg.input_epochs,
                "best_epoch": trained.best_epoch,
                "examples_per_second": trained.examples_per_second,
                "train_seconds": trained.train_seconds,
                "embed_seconds": trained.embed_seconds,
                "n_train": len(train),
                "n_corrected": sum(is_correction(e) for e in train),
                "correction_weight": cfg.correction_weight,
                "device": str(device),
            },
        },
        config=trained.config,
        extra={"tokenizer": trained.tokenizer},
    )

    output_result = None
    output_train = with_response_label(train)
    output_calibration = with_response_label(calibration)
    if cfg.train_output and output_train and any(e.label == 0 for e in output_calibration):

        def predict_categories(examples: Sequence[Example]) -> list[str]:
            texts = [e.prompt_text for e in examples]
            return [s.category for s in score_texts(trained.model, trained.tokenizer, texts)]

        output_result = _train_output(
            cfg, splits, output_train, output_calibration, category_fpr,
            str(generator_dir()), device, tracker, should_cancel, predict_categories,
        )  # fmt: skip
    elif cfg.train_output and warn is not None:
        warn("no responses to train the output classifier on")
    return TrainedGuard(input=input_result, output=output_result, device=str(device))


def save_guard(
    trained: TrainedGuard,
    *,
    encoder_dir: str | Path,
    input_dir: Path,
    output_dir: Path,
    code_version: str,
    progress: PipelineProgress | None = None,
) -> tuple[str, str]:
    """Write both artifacts; returns their checksums ("" for no output classifier).

    Refuses folders that exist (never overwrites, and never deletes on failure a
    folder it did not create); a failure removes whatever this call wrote. The
    caller removes both folders with `remove_artifacts` if what comes after fails.
    """
    targets = [input_dir] + ([output_dir] if trained.output is not None else [])
    for path in targets:
        if path.exists():
            raise PipelineError(f"artifact folder {path} already exists")
    tracker = progress or PipelineProgress()
    tracker.report("save", 0, 2)
    try:
        input_dir.parent.mkdir(parents=True, exist_ok=True)
        input_checksum = save_input_classifier(
            trained.input.model, encoder_dir, input_dir,
            thresholds=trained.input.thresholds, metrics=trained.input.metrics,
            code_version=code_version,
        )  # fmt: skip
        tracker.report("save", 1, 2)
        output_checksum = ""
        if trained.output is not None:
            output_checksum = save_output_classifier(
                trained.output.model, output_dir,
                thresholds=trained.output.threshold_doc, metrics=trained.output.metrics,
                code_version=code_version, config=trained.output.config,
            )  # fmt: skip
        tracker.report("save", 2, 2)
    except BaseException:
        remove_artifacts(targets)
        raise
    return input_checksum, output_checksum


def remove_artifacts(paths: Sequence[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def headline(reports: dict[str, Any], thresholds: dict[str, Any]) -> dict[str, Any]:
    """The numbers a model list shows: test-split AUROC and rates, held-out TPR."""
    test = reports.get("test", {}).get("classifier", {})
    heldout = reports.get("heldout_transforms", {}).get("classifier", {})
    keyword = reports.get("test", {}).get("baselines", {}).get("keyword", {})
    return {
        "auroc": test.get("auroc"),
        "tpr_at_threshold": test.get("tpr_at_threshold"),
        "fpr_at_threshold": test.get("fpr_at_threshold"),
        "tpr_interval": test.get("tpr_interval"),
        "fpr_interval": test.get("fpr_interval"),
        "tpr_at_target_fpr": test.get("tpr_at_target_fpr"),
        "target_fpr": thresholds.get("target_fpr"),
        "threshold": thresholds.get("global_threshold"),
        "heldout_tpr_at_threshold": heldout.get("tpr_at_threshold"),
        "keyword_tpr": keyword.get("tpr_at_threshold"),
        "n_test": test.get("n"),
    }


def halting_histogram(
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


def _input_reports(
    model: Any,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    thresholds: Thresholds,
    spec: ConstitutionSpec,
    target_fpr: float,
    progress: PipelineProgress,
) -> dict[str, Any]:
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
        scored = score_texts(model, tokenizer, texts)
        scores = [s.score for s in scored]
        applied = [thresholds.for_category(s.category) for s in scored]
        report = evaluation_report(
            scores=scores, labels=labels, categories=categories,
            transforms=transforms, threshold=applied, name=f"input classifier / {split}",
        )  # fmt: skip
        report["threshold"] = thresholds.global_threshold
        report["target_fpr"] = target_fpr
        report["tpr_at_target_fpr"] = finite(tpr_at_fpr(scores, labels, target_fpr))
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
    model: Any,
    tokenizer: Any,
    splits: dict[str, list[Example]],
    thresholds: Thresholds,
    target_fpr: float,
    max_length: int,
    progress: PipelineProgress,
    predict_categories: Callable[[Sequence[Example]], list[str]] | None = None,
) -> dict[str, Any]:
    """Each report split at the thresholds the guard applies: per category (by the
    input classifier's category of the prompt) where a category has its own."""
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
        report["tpr_at_target_fpr"] = finite(tpr_at_fpr(scores, labels, target_fpr))
        report["halting"] = halting_histogram(
            halting_positions(per_token, applied), [len(s) for s in per_token], labels
        )
        reports[split] = {"classifier": report, "baselines": {}}
        progress.report("evaluate output", index + 1, len(names))
    return reports


def _train_output(
    cfg: PipelineConfig,
    splits: dict[str, list[Example]],
    train: list[Example],
    calibration: list[Example],
    category_fpr: dict[str, float],
    backbone: str,
    device: str,
    tracker: PipelineProgress,
    should_cancel: Callable[[], bool] | None,
    predict_categories: Callable[[Sequence[Example]], list[str]],
) -> TrainedClassifier:
    output_cfg = OutputClassifierConfig(
        backbone_dir=backbone,
        mode=cfg.output_mode,
        layers=tuple(cfg.probe_layers),
        loss=cfg.output_loss,
        epochs=cfg.output_epochs,
        seed=cfg.seed,
        max_length=cfg.output_max_length,
        batch_size=8,
    )
    result = train_output_classifier(
        output_cfg, train, with_response_label(splits.get("validation", [])),
        device=device,
        on_progress=tracker.callback(
            "output", {"train": "train output", "encode": "encode"}
        ),
        should_cancel=should_cancel,
    )  # fmt: skip
    tracker.check()
    tracker.report("calibrate output", 0, 1)
    scored_length = max(cfg.output_calibration_max_length, output_cfg.max_length)
    per_token = score_responses(
        result.model, result.tokenizer, calibration, max_length=scored_length
    )
    thresholds = calibrate_thresholds(
        final_scores(per_token),
        [e.label for e in calibration],
        [e.category for e in calibration],
        target_fpr=cfg.target_fpr,
        per_category_fpr=category_fpr,
        predicted_categories=predict_categories(calibration) if category_fpr else None,
    )
    threshold_doc = thresholds.to_dict()
    threshold_doc["aggregator"] = output_cfg.aggregator
    tracker.report("calibrate output", 1, 1)
    labelled = {split: with_response_label(splits.get(split, [])) for split in REPORT_SPLITS}
    reports = _output_reports(
        result.model, result.tokenizer, labelled, thresholds, cfg.target_fpr,
        scored_length, tracker,
        predict_categories=predict_categories if thresholds.per_category else None,
    )  # fmt: skip
    return TrainedClassifier(
        model=result.model,
        thresholds=thresholds,
        threshold_doc=threshold_doc,
        metrics=headline(reports, threshold_doc),
        report={
            "kind": "output",
            "splits": reports,
            "thresholds": threshold_doc,
            "history": tracker.history_snapshot()["output"],
            "epochs": [{k: finite(v) for k, v in h.items()} for h in result.history],
            "training": {
                "mode": output_cfg.mode,
                "loss": output_cfg.loss,
                "layers": list(output_cfg.layers),
                "epochs": output_cfg.epochs,
                "tokens_per_second": result.tokens_per_s,
                "n_train": len(train),
                "device": str(device),
            },
        },
        config=result.config,
    )
