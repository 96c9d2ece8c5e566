"""A training run's settings: defaults and checks, and the code version stamped on
its artifacts.
"""

from __future__ import annotations

import math
import subprocess
from typing import Any

from django.conf import settings

MODES = ("fast", "full")


OUTPUT_LOSSES = ("running_max", "window")


DEFAULT_CONFIG: dict[str, Any] = {
    "input_mode": "fast",
    "output_mode": "fast",
    "input_epochs": 20,
    "output_epochs": 3,
    "seed": 0,
    "target_fpr": 0.01,
    "output_loss": "running_max",
    "probe_layers": [-1],
    "output_max_length": 256,
    # Calibration and reports score replies this long (ml/pipeline.py says why).
    "output_calibration_max_length": 512,
    "train_output": True,
    # Loss weight of training examples whose label a person corrected (a label
    # audit's flips, review-queue feedback): the hard negatives and positives that
    # generation got wrong, few and the most informative (docs/BENCHMARKS.md).
    "correction_weight": 1.0,
}


MAX_CORRECTION_WEIGHT = 100.0
MAX_SCORED_TOKENS = 4096  # bounds a calibration forward's memory


class TrainingError(ValueError):
    """Bad input for a training run (shown to the user as it is)."""


def normalize_config(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and every value checked; raises TrainingError."""
    cfg = {**DEFAULT_CONFIG, **{k: v for k, v in (raw or {}).items() if v is not None}}
    for key in ("input_mode", "output_mode"):
        if cfg[key] not in MODES:
            raise TrainingError(f"{key} must be one of {', '.join(MODES)}")
    if cfg["output_loss"] not in OUTPUT_LOSSES:
        raise TrainingError(f"output_loss must be one of {', '.join(OUTPUT_LOSSES)}")
    for key, high in (("input_epochs", 500), ("output_epochs", 100)):
        try:
            cfg[key] = int(cfg[key])
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"{key} must be a whole number") from exc
        if not 1 <= cfg[key] <= high:
            raise TrainingError(f"{key} must be between 1 and {high}")
    try:
        cfg["seed"] = int(cfg["seed"])
        cfg["target_fpr"] = float(cfg["target_fpr"])
        cfg["output_max_length"] = int(cfg["output_max_length"])
        cfg["output_calibration_max_length"] = int(cfg["output_calibration_max_length"])
    except (TypeError, ValueError) as exc:
        raise TrainingError(
            "seed, target_fpr, output_max_length and output_calibration_max_length "
            "must be numbers"
        ) from exc
    if not 32 <= cfg["output_calibration_max_length"] <= MAX_SCORED_TOKENS:
        raise TrainingError(
            f"output_calibration_max_length must be between 32 and {MAX_SCORED_TOKENS}"
        )
    if not 0.0 < cfg["target_fpr"] < 1.0 or not math.isfinite(cfg["target_fpr"]):
        raise TrainingError("target_fpr must be between 0 and 1 (exclusive)")
    try:
        cfg["correction_weight"] = float(cfg["correction_weight"])
    except (TypeError, ValueError) as exc:
        raise TrainingError("correction_weight must be a number") from exc
    if not 1.0 <= cfg["correction_weight"] <= MAX_CORRECTION_WEIGHT:  # NaN fails too
        raise TrainingError(
            f"correction_weight must be between 1 and {MAX_CORRECTION_WEIGHT:g}"
        )
    layers = cfg["probe_layers"]
    if isinstance(layers, str):
        layers = [part for part in layers.replace(" ", "").split(",") if part]
    try:
        layers = [int(layer) for layer in layers]
    except (TypeError, ValueError) as exc:
        raise TrainingError("probe_layers must be integers such as -1 or 6,-1") from exc
    if not layers or len(layers) > 4:
        raise TrainingError("give one to four probe layers")
    cfg["probe_layers"] = layers
    cfg["train_output"] = bool(cfg["train_output"])
    return cfg


def code_version() -> str:
    """The git commit of the code (short), else the package version."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        if result.stdout.strip():
            return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("guardweb")
    except Exception:  # not installed as a distribution
        return "0.1.0"
