"""The input classifier over many seeds and settings, for a GPU worker.

    python -m bench input_sweep --export var/splits --dataset N      # needs the database
    python -m bench input_sweep --splits var/splits --seeds 0-15 \\
        [--epochs 3] [--backbone-lr 6e-5] [--config batch_size=16,32] \\
        [--workers 4] [--device cuda]

`--export` writes a reviewed dataset's splits as JSONL (one Example per line; the
texts stay under the data dir, never in git). The sweep needs no database, so it
runs where only torch and transformers are (a GPU machine): one input classifier
(full mode unless --mode fast) per (epochs, backbone lr, `--config` values, seed),
trained on "train" with "validation" for early stopping as `manage.py train` does
at its default correction weight (1), scored as served (canonical views) on
validation, calibration, test and heldout_transforms. A row gives TPR at 1% FPR
per split (the ROC point) and test recall / FPR at the threshold calibrated on the
calibration split.

Seeds differ a lot on these data (session 11: test 0.784 to 0.942 at one setting),
so the summary also asks whether picking the seed with the best validation score
picks a good test score: for every subset of `--pick-from` seeds of one setting,
the test ROC point of its validation-best member.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "calibration", "test", "heldout_transforms")
SCORED = ("validation", "calibration", "test", "heldout_transforms")


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench input_sweep")
    parser.add_argument("--export", help="write the dataset's splits to this folder")
    parser.add_argument("--dataset", type=int, help="with --export: the dataset id")
    parser.add_argument("--splits", help="a folder written by --export")
    parser.add_argument("--seeds", default="0-3", help="e.g. 0-15 or 0,2,3")
    parser.add_argument("--epochs", default="3", help="comma-separated")
    parser.add_argument("--backbone-lr", default=None,
                        help="comma-separated (default: the product's)")  # fmt: skip
    parser.add_argument("--mode", choices=("fast", "full"), default="full")
    parser.add_argument("--config", action="append", default=[], metavar="FIELD=V1,V2",
                        help="vary another InputClassifierConfig field, e.g. "
                        "batch_size=16,32 (repeatable; every combination is run)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="models trained at once")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: auto)")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--pick-from", type=int, default=4)
    parser.add_argument("--rows", help="append each finished row (with its scores) here")
    parser.add_argument("--analyse", help="rows written by --rows: summarise them again, "
                        "with mean-logit ensembles of --pick-from seeds (needs --splits)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.analyse:
        if not args.splits:
            parser.error("--analyse needs --splits (the labels)")
        return analyse(Path(args.analyse), Path(args.splits), args.pick_from, args.target_fpr)
    if args.export:
        if args.dataset is None:
            parser.error("--export needs --dataset")
        return export_splits(args.dataset, Path(args.export))
    if not args.splits:
        parser.error("give --splits DIR (or --export DIR --dataset N)")
    problem = _split_problem(Path(args.splits))
    if problem:
        parser.error(problem)
    try:
        varied = _config_grid(args.config)
    except ValueError as error:
        parser.error(str(error))
    # Seed-major order: a run cut short still has every setting at the same seeds.
    jobs = [
        {"epochs": e, "backbone_lr": lr, "seed": s, "config": config}
        for s in _seeds(args.seeds)
        for e in _numbers(args.epochs, int)
        for lr in _numbers(args.backbone_lr or str(_default_backbone_lr()), float)
        for config in varied
    ]
    common = {"splits": args.splits, "device": args.device, "mode": args.mode,
              "target_fpr": args.target_fpr}  # fmt: skip
    started = time.perf_counter()
    rows = []
    with mp.get_context("spawn").Pool(max(1, args.workers)) as pool:
        for row in pool.imap_unordered(_run_job, [{**common, **job} for job in jobs]):
            if args.rows:  # written as they finish, so a run cut short keeps them
                with open(args.rows, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
            row.pop("scores")
            print(json.dumps(row), flush=True)
            rows.append(row)
    rows.sort(key=lambda r: (_setting(r), r["seed"]))
    return {
        "splits": args.splits,
        "sizes": _sizes(Path(args.splits)),
        "wall_s": round(time.perf_counter() - started),
        "rows": rows,
        "summary": summarise(rows, args.pick_from),
    }


def _default_backbone_lr() -> float:
    from classifiers.ml.input.model import InputClassifierConfig

    return InputClassifierConfig.backbone_lr


def _config_grid(specs: list[str]) -> list[dict[str, Any]]:
    """Every combination of the `--config FIELD=V1,V2` values, each value parsed as
    the field's default is typed (so a typo or a wrong type fails before training)."""
    from dataclasses import fields

    from classifiers.ml.input.model import InputClassifierConfig

    known = {f.name: f for f in fields(InputClassifierConfig)}
    fixed = {"backbone_dir", "categories", "mode", "epochs", "backbone_lr", "seed"}
    axes: dict[str, list[tuple[str, Any]]] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip()
        if name not in known or name in fixed:
            raise ValueError(f"--config {spec!r}: not a field it can vary "
                             f"(choose from {', '.join(sorted(set(known) - fixed))})")  # fmt: skip
        if name in axes:
            raise ValueError(f"--config {spec!r}: {name} is given twice; list its values "
                             f"once, comma-separated")  # fmt: skip
        kind = type(known[name].default)
        parse = _parse_bool if kind is bool else kind
        try:
            parsed = [parse(v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"--config {spec!r}: {name} takes {kind.__name__} values") from None
        if not parsed:
            raise ValueError(f"--config {spec!r}: give at least one value")
        axes[name] = [(name, value) for value in dict.fromkeys(parsed)]  # repeats run once
    return [dict(combination) for combination in itertools.product(*axes.values())]


def _parse_bool(text: str) -> bool:
    meanings = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    try:
        return meanings[text.lower()]
    except KeyError:
        raise ValueError(text) from None


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def _seeds(text: str) -> list[int]:
    if "-" in text and "," not in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return _numbers(text, int)


def export_splits(dataset_id: int, folder: Path) -> dict[str, Any]:
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    from classifiers.datasets.examples import examples_by_split
    from classifiers.models import Dataset

    dataset = Dataset.objects.get(pk=dataset_id)
    splits = examples_by_split(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    categories = [c.name for c in dataset.constitution_version.to_spec().categories]
    (folder / "categories.json").write_text(json.dumps(categories))
    for split in SPLITS:
        with open(folder / f"{split}.jsonl", "w") as handle:
            for example in splits.get(split, []):
                handle.write(json.dumps(example.to_dict()) + "\n")
    return {"dataset": dataset_id, "folder": str(folder), "sizes": _sizes(folder)}


def _sizes(folder: Path) -> dict[str, dict[str, int]]:
    out = {}
    for split in SPLITS:
        examples = _load(folder, split)
        out[split] = {"harmful": sum(e.label for e in examples),
                      "benign": sum(1 - e.label for e in examples)}  # fmt: skip
    return out


def _split_problem(folder: Path) -> str | None:
    """Why these splits cannot be swept (None when they can)."""
    if not (folder / "categories.json").exists():
        return f"{folder} has no categories.json: write it with --export"
    sizes = _sizes(folder)
    for split in ("train", "validation"):
        if not sum(sizes[split].values()):
            return f"the {split} split in {folder} is empty"
    if not sizes["calibration"]["benign"]:
        return "the calibration split has no benign examples (no threshold)"
    if not (sizes["test"]["benign"] and sizes["test"]["harmful"]):
        return "the test split needs harmful and benign examples"
    return None


def _setting(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["mode"], row["epochs"], row["backbone_lr"],
            tuple(sorted(row.get("config", {}).items())))  # fmt: skip


def _name(setting: tuple[Any, ...]) -> str:
    mode, epochs, backbone_lr, config = setting
    extra = "".join(f" {key}={value:g}" if isinstance(value, float) else f" {key}={value}"
                    for key, value in config)  # fmt: skip
    return f"{mode} epochs={epochs} backbone_lr={backbone_lr:g}{extra}"


def _selection_key(value: float) -> float:
    return -1.0 if value != value else value  # NaN (a class missing) never wins


def _load(folder: Path, split: str) -> list[Any]:
    from classifiers.ml.types import Example

    path = folder / f"{split}.jsonl"
    if not path.exists():
        return []
    return [Example(**json.loads(line)) for line in path.read_text().splitlines() if line]


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from classifiers.ml import registry
    from classifiers.ml.eval.calibrate import threshold_for_fpr
    from classifiers.ml.eval.evaluate import auroc, confusion, tpr_at_fpr
    from classifiers.ml.input.model import InputClassifierConfig
    from classifiers.ml.input.scoring import score_texts
    from classifiers.ml.input.training import train_input_classifier

    torch.set_num_threads(2)  # several workers share the machine's cores
    folder = Path(job["splits"])
    splits = {split: _load(folder, split) for split in SPLITS}
    cfg = InputClassifierConfig(
        backbone_dir=str(registry.encoder_dir()),
        categories=json.loads((folder / "categories.json").read_text()),
        mode=job["mode"], epochs=job["epochs"], backbone_lr=job["backbone_lr"], seed=job["seed"],
        **job.get("config", {}),
    )  # fmt: skip
    started = time.perf_counter()
    trained = train_input_classifier(cfg, splits["train"], splits["validation"],
                                     device=job["device"])  # fmt: skip
    row: dict[str, Any] = {"mode": job["mode"], "epochs": job["epochs"],
                           "backbone_lr": job["backbone_lr"], "seed": job["seed"],
                           "target_fpr": job["target_fpr"], "best_epoch": trained.best_epoch}  # fmt: skip
    if job.get("config"):  # what the trained model's config says it used
        row["config"] = {key: getattr(trained.config, key) for key in job["config"]}
    scored = {}
    for split in SCORED:
        examples = splits[split]
        if not examples:
            continue
        scores = [s.score for s in score_texts(trained.model, trained.tokenizer,
                                               [e.prompt_text for e in examples])]  # fmt: skip
        labels = [e.label for e in examples]
        scored[split] = (scores, labels)
        row.setdefault("scores", {})[split] = scores
        row[f"{split}_tpr"] = tpr_at_fpr(scores, labels, job["target_fpr"])
        row[f"{split}_auroc"] = round(auroc(scores, labels), 4)
    benign_calibration = [s for s, y in zip(*scored["calibration"], strict=True) if y == 0]
    threshold = threshold_for_fpr(benign_calibration, job["target_fpr"])
    counts = confusion(*scored["test"], threshold)
    row["test_deployed_tpr"] = round(counts["tp"] / (counts["tp"] + counts["fn"]), 3)
    row["test_deployed_fpr"] = round(counts["fp"] / (counts["fp"] + counts["tn"]), 4)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def summarise(rows: list[dict[str, Any]], pick_from: int) -> dict[str, Any]:
    """Per setting: mean/min/max test ROC point over seeds, and what choosing the
    validation-best of `pick_from` seeds gives on test (every subset counted; ties
    go to calibration, then to the lower seed; test is never looked at)."""
    out: dict[str, Any] = {}
    ordered = sorted(rows, key=lambda r: (_setting(r), r["seed"]))
    for setting, group in itertools.groupby(ordered, key=_setting):
        group = list(group)
        entry: dict[str, Any] = {"seeds": len(group)}
        for split in ("validation", "test", "heldout_transforms"):
            values = [r[f"{split}_tpr"] for r in group if f"{split}_tpr" in r]
            if values:
                entry[split] = {"mean": round(statistics.fmean(values), 3),
                                "min": round(min(values), 3), "max": round(max(values), 3)}  # fmt: skip
        if len(group) >= pick_from > 1:
            picked = [
                max(subset, key=lambda r: (_selection_key(r["validation_tpr"]),
                                           _selection_key(r["calibration_tpr"])))["test_tpr"]
                for subset in itertools.combinations(group, pick_from)
            ]  # fmt: skip
            entry[f"test_of_validation_best_of_{pick_from}"] = _picked_summary(picked)
        out[_name(setting)] = entry
    return out


def _picked_summary(picked: list[float]) -> dict[str, Any]:
    return {
        "mean": round(statistics.fmean(picked), 3),
        "min": round(min(picked), 3),
        "share_at_least_0.9": round(sum(p >= 0.9 for p in picked) / len(picked), 3),
        "subsets": len(picked),
    }


def analyse(rows_path: Path, folder: Path, pick_from: int, target_fpr: float) -> dict[str, Any]:
    """Summaries of saved rows, plus selection on validation and calibration pooled,
    and mean-logit ensembles of `pick_from` seeds of one setting (consecutive seed
    groups, so each seed is used once). A repeated (setting, seed) counts once."""
    import math

    from classifiers.ml.eval.evaluate import tpr_at_fpr

    labels = {split: [e.label for e in _load(folder, split)] for split in SCORED}
    rows, seen = [], set()
    for line in rows_path.read_text().splitlines():
        if not line:
            continue
        row = json.loads(line)
        if row["target_fpr"] != target_fpr:
            raise SystemExit(f"a row was measured at FPR {row['target_fpr']}, not "
                             f"{target_fpr}: pass --target-fpr {row['target_fpr']}")  # fmt: skip
        for split, scores in row["scores"].items():
            if len(scores) != len(labels[split]):
                raise SystemExit(f"{split}: a row has {len(scores)} scores for "
                                 f"{len(labels[split])} examples: not these splits")  # fmt: skip
        if (_setting(row), row["seed"]) not in seen:
            seen.add((_setting(row), row["seed"]))
            rows.append(row)
    result: dict[str, Any] = {"rows": len(rows), "summary": summarise(rows, pick_from)}
    rows.sort(key=lambda r: (_setting(r), r["seed"]))

    def logit(p: float) -> float:
        p = min(max(p, 1e-7), 1 - 1e-7)
        return math.log(p / (1 - p))

    # Selection on validation and calibration pooled: twice the benign examples of
    # validation alone, so one hard benign source moves the 1% point less.
    pooled_labels = labels["validation"] + labels["calibration"]
    for setting, group in itertools.groupby(rows, key=_setting):
        group = list(group)
        for row in group:
            pooled = row["scores"]["validation"] + row["scores"]["calibration"]
            row["pooled_tpr"] = tpr_at_fpr(pooled, pooled_labels, target_fpr)
        if len(group) >= pick_from > 1:
            picked = [max(subset, key=lambda r: _selection_key(r["pooled_tpr"]))["test_tpr"]
                      for subset in itertools.combinations(group, pick_from)]  # fmt: skip
            result.setdefault("pooled_selection", {})[_name(setting)] = _picked_summary(picked)
        ensembles = []
        for start in range(0, len(group) - pick_from + 1, pick_from):
            members = group[start : start + pick_from]
            entry: dict[str, Any] = {"seeds": [m["seed"] for m in members]}
            for split in ("validation", "test", "heldout_transforms"):
                if not labels[split] or split not in members[0]["scores"]:
                    continue
                mean = [
                    statistics.fmean(logit(m["scores"][split][i]) for m in members)
                    for i in range(len(labels[split]))
                ]
                entry[f"{split}_tpr"] = round(tpr_at_fpr(mean, labels[split], target_fpr), 3)
            ensembles.append(entry)
        result.setdefault("ensembles", {})[_name(setting)] = ensembles
    return result
