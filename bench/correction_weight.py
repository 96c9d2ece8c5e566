"""Does weighting corrected labels move the input classifier's 1% FPR point?
`python -m bench correction_weight --dataset N --weights 1,4 --seeds 0,2,3`.

Trains one input classifier per (weight, seed) on a reviewed dataset's train split
as `manage.py train` does (full mode unless --mode fast, 3 epochs), with training
examples whose label a person corrected (label-audit flips, review feedback;
data.is_correction) weighted by `weight`. Each model is scored as served (canonical
views) on the validation, calibration and test splits; the row gives TPR at 1% FPR
(the ROC point) per split, recall and FPR on test at the threshold calibrated on
the calibration split, and the highest-scoring benign test prompts (corrected ones
marked) without their text, so the result can sit in docs/BENCHMARKS.md.

Seeds differ a lot on these data (session 10: 0.812 to 0.919 on one test split),
so a weight is judged by the spread over seeds, not by one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

SPLITS = ("validation", "calibration", "test")
TOP_BENIGN = 8


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench correction_weight")
    parser.add_argument("--dataset", type=int, required=True, help="reviewed dataset id")
    parser.add_argument("--weights", default="1,4", help="comma-separated weights (>= 1)")
    parser.add_argument("--seeds", default="0,2,3", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--mode", choices=("fast", "full"), default="full")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    from django.conf import settings

    from classifiers.datasets.examples import examples_by_split
    from classifiers.ml import registry
    from classifiers.ml.data.prompts import correction_weights, is_correction
    from classifiers.ml.input.model import InputClassifierConfig
    from classifiers.ml.input.training import train_input_classifier
    from classifiers.models import Dataset

    dataset = Dataset.objects.get(pk=args.dataset)
    splits = examples_by_split(dataset)
    spec = dataset.constitution_version.to_spec()
    encoder = registry.encoder_dir(getattr(settings, "ENCODER_MODEL_DIR", "") or None)
    train = splits["train"]
    result: dict[str, Any] = {
        "dataset": dataset.pk,
        "n_train": len(train),
        "n_corrected_train": sum(is_correction(e) for e in train),
        "n_test": {
            "harmful": sum(e.label for e in splits["test"]),
            "benign": sum(1 - e.label for e in splits["test"]),
            "corrected_benign": sum(is_correction(e) and not e.label for e in splits["test"]),
        },
        "rows": [],
    }
    for weight in [float(w) for w in args.weights.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            cfg = InputClassifierConfig(
                backbone_dir=str(encoder), categories=[c.name for c in spec.categories],
                mode=args.mode, epochs=args.epochs, seed=seed,
            )  # fmt: skip
            started = time.perf_counter()
            trained = train_input_classifier(
                cfg, train, splits.get("validation", []),
                weights=correction_weights(train, weight),
            )  # fmt: skip
            row = {"weight": weight, "seed": seed, "best_epoch": trained.best_epoch,
                   "train_seconds": round(time.perf_counter() - started)}  # fmt: skip
            row.update(_evaluate(trained, splits, args.target_fpr))
            print(_line(row), flush=True)
            result["rows"].append(row)
    result["summary"] = _summary(result["rows"])
    return result


def _evaluate(trained: Any, splits: dict[str, list[Any]], target_fpr: float) -> dict[str, Any]:
    from classifiers.ml.data.prompts import is_correction
    from classifiers.ml.eval.calibrate import threshold_for_fpr
    from classifiers.ml.eval.evaluate import auroc, tpr_at_fpr
    from classifiers.ml.input.scoring import score_texts

    row: dict[str, Any] = {}
    scored: dict[str, tuple[list[float], list[int]]] = {}
    for split in SPLITS:
        examples = splits.get(split, [])
        scores = [s.score for s in score_texts(
            trained.model, trained.tokenizer, [e.prompt_text for e in examples]
        )]  # fmt: skip
        labels = [e.label for e in examples]
        scored[split] = (scores, labels)
        row[f"{split}_tpr_at_fpr"] = round(tpr_at_fpr(scores, labels, target_fpr), 3)
    row["test_auroc"] = round(auroc(*scored["test"]), 4)
    calibration_benign = [s for s, y in zip(*scored["calibration"], strict=True) if y == 0]
    threshold = threshold_for_fpr(calibration_benign, target_fpr)
    test_scores, test_labels = scored["test"]
    harmful = [s for s, y in zip(test_scores, test_labels, strict=True) if y == 1]
    benign = [s for s, y in zip(test_scores, test_labels, strict=True) if y == 0]
    row["threshold"] = round(threshold, 4)
    row["test_tpr_at_threshold"] = round(sum(s >= threshold for s in harmful) / len(harmful), 3)
    row["test_fpr_at_threshold"] = round(sum(s >= threshold for s in benign) / len(benign), 4)
    # The prompts that set the 1% point: score, whether a person corrected the label,
    # and the transform (no text: generated data stays out of git).
    top = sorted(
        ((s, e) for s, e in zip(test_scores, splits["test"], strict=True) if e.label == 0),
        key=lambda pair: -pair[0],
    )[:TOP_BENIGN]
    row["top_benign"] = [
        {"score": round(s, 4), "corrected": is_correction(e), "transform": e.transform,
         "source": e.source_id}  # fmt: skip
        for s, e in top
    ]
    return row


def _line(row: dict[str, Any]) -> str:
    marks = " ".join(f"{t['score']:.3f}{'*' if t['corrected'] else ''}" for t in row["top_benign"])
    return (
        f"weight {row['weight']:g} seed {row['seed']}: TPR@1%FPR val {row['validation_tpr_at_fpr']} "
        f"cal {row['calibration_tpr_at_fpr']} test {row['test_tpr_at_fpr']}; deployed "
        f"{row['test_tpr_at_threshold']} / FPR {row['test_fpr_at_threshold']} "
        f"({row['train_seconds']} s); top benign {marks} (* corrected)"
    )


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for weight in sorted({r["weight"] for r in rows}):
        test = [r["test_tpr_at_fpr"] for r in rows if r["weight"] == weight]
        out[f"{weight:g}"] = {
            "test_tpr_at_fpr_mean": round(statistics.fmean(test), 3),
            "test_tpr_at_fpr_min": min(test),
            "test_tpr_at_fpr_max": max(test),
            "seeds": len(test),
        }
    return out
