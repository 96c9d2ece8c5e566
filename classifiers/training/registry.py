"""The model registry: activate (and roll back), the active model of a kind, its
artifact folder, and classifying texts with the active input classifier.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from classifiers.models import (
    ActiveModel,
    ModelVersion,
)
from classifiers.training.config import TrainingError
from constitutions.models import record

logger = logging.getLogger(__name__)


CLASSIFY_BATCH = 64


def activate_model(*, model_version: ModelVersion, user: Any) -> None:
    """Switch the live model of this kind for its constitution (rollback = older)."""
    model_version.activate(user=user)
    try:

        # A savepoint: a failed audit insert must not abort the caller's
        # transaction (activation happens inside the run's final one).
        with transaction.atomic():
            record(
                model_version.constitution, user, "activate",
                f"activated {model_version.kind} model #{model_version.pk}",
                model_version=model_version.pk,
            )  # fmt: skip
    except Exception:  # the audit log is nice to have, never a reason to fail
        logger.warning("could not record activation", exc_info=True)


def active_model(constitution: Any, kind: str) -> ModelVersion | None:
    row = (
        ActiveModel.objects.filter(constitution=constitution, kind=kind)
        .select_related("model_version")
        .first()
    )
    return row.model_version if row else None


def artifact_dir(model_version: ModelVersion) -> Path:
    return Path(settings.ARTIFACTS_DIR) / model_version.path


_LOADED: dict[tuple[str, str], Any] = {}


_LOADED_LOCK = threading.Lock()


def load_model(model_version: ModelVersion) -> Any:
    """The loaded input classifier of a ModelVersion (cached by path + checksum)."""
    from classifiers.ml.input.persistence import load_input_classifier

    key = (model_version.path, model_version.checksum)
    with _LOADED_LOCK:
        if key not in _LOADED:
            loaded = load_input_classifier(artifact_dir(model_version))
            if loaded.checksum != model_version.checksum:
                raise TrainingError(
                    f"artifact of model #{model_version.pk} does not match its checksum"
                )
            _LOADED.clear()  # keep one model in memory
            _LOADED[key] = loaded
        return _LOADED[key]


def classify_texts(
    *, constitution: Any, texts: Sequence[str], batch_size: int = CLASSIFY_BATCH,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Score texts with the ACTIVE input classifier of `constitution`; a blocked text
    names the restricted category it is closest to. `on_progress(done, total)` after
    each batch."""
    from classifiers.ml.eval.calibrate import Thresholds
    from classifiers.ml.input.scoring import score_texts

    model_version = active_model(constitution, "input")
    if model_version is None:
        raise TrainingError(f"constitution {constitution.slug!r} has no active input model")
    loaded = load_model(model_version)
    thresholds = Thresholds.from_dict(model_version.thresholds)
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        for scored in score_texts(loaded.model, loaded.tokenizer, chunk):
            blocked = bool(thresholds.is_flagged(scored.score, scored.category))
            results.append({
                "input_score": round(float(scored.score), 6),
                "blocked": blocked,
                "category": scored.flagged_as()[0] if blocked else scored.category,
            })  # fmt: skip
        if on_progress is not None:
            on_progress(len(results), len(texts))
    return results


MAX_EVALUATIONS = 50  # labelled-set results kept per model (oldest dropped first)


def record_evaluation(*, model_version: ModelVersion, report: dict[str, Any]) -> None:
    """Keep a labelled-set result in the model's report, under its name (a re-run
    replaces it). Row-locked, so two saves never lose each other's results."""
    with transaction.atomic():
        locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        full = dict(locked.report or {})
        evaluations = dict(full.get("evaluations") or {})
        evaluations.pop(report["name"], None)
        evaluations[report["name"]] = report
        while len(evaluations) > MAX_EVALUATIONS:
            evaluations.pop(next(iter(evaluations)))
        full["evaluations"] = evaluations
        ModelVersion.objects.filter(pk=locked.pk).update(report=full)
    model_version.report = full
