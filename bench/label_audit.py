"""Input classifiers before and after a label audit, each scored on each dataset:
`python -m bench label_audit --models 1,2 --datasets 1,2`.

A label audit (classifiers.ml.eval.label_audit) changes two things at once: the labels
a model trains on, and the labels it is measured on. Scoring every model on every
dataset's test and held-out-transform splits separates them: model(raw) on the
audited splits is the effect of cleaner evaluation labels alone; model(audited) on
the audited splits adds cleaner training labels. Each model's own calibrated
threshold is used as served (with canonical views), and TPR at 1% FPR is measured
with the deployment threshold rule on each split's benign scores.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

SPLITS = ("test", "heldout_transforms")


def _metrics(scores: list[float], labels: list[int], threshold: float) -> dict[str, Any]:
    from classifiers.ml.eval.evaluate import auroc, tpr_at_fpr

    harmful = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    benign = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    return {
        "n": len(labels),
        "n_benign": len(benign),
        "auroc": auroc(scores, labels),
        "tpr_at_1pct_fpr": tpr_at_fpr(scores, labels, 0.01),
        "tpr_at_threshold": sum(s >= threshold for s in harmful) / max(len(harmful), 1),
        "fpr_at_threshold": sum(s >= threshold for s in benign) / max(len(benign), 1),
        "false_positives_at_threshold": sum(s >= threshold for s in benign),
        "mean_benign_score": sum(benign) / len(benign) if benign else None,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench label_audit")
    parser.add_argument("--models", required=True, help="comma-separated input model ids")
    parser.add_argument("--datasets", required=True, help="comma-separated dataset ids")
    parser.add_argument(
        "--by-opener", action="store_true",
        help="also split the test split's generated examples by whether Stage I "
        "prefilled an opener for their source",
    )  # fmt: skip
    parser.add_argument(
        "--by-run", action="store_true",
        help="also split the test split's harmful examples by the generation run "
        "their source came from (its dataset and seed), each against all benign ones",
    )  # fmt: skip
    parser.add_argument(
        "--frames-ablation", action="store_true",
        help="also score with the augmenter's known jailbreak frames scored as they "
        "are (canonical.prompt_views(known_frames=False), the rule before session 9) "
        "beside the served rule (frames taken off), each with its own threshold",
    )  # fmt: skip
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    from classifiers.guard.engines import input_guard_for
    from classifiers.models import Dataset, ModelVersion

    models = [ModelVersion.objects.get(pk=int(m), kind="input") for m in args.models.split(",")]
    datasets = [Dataset.objects.get(pk=int(d)) for d in args.datasets.split(",")]
    result: dict[str, Any] = {"rows": []}
    for model in models:
        guard = input_guard_for(model)
        threshold = guard.thresholds.global_threshold
        for dataset in datasets:
            for split in SPLITS:
                rows = list(dataset.examples.filter(split=split).values_list("prompt_text", "label"))
                if split == "heldout_transforms":
                    # Also the held-out transforms of test sources alone: a reviewed
                    # test split gives them people's labels too.
                    of_test = dataset.examples.filter(split=split, meta__source_split="test")
                    _row(result, model, dataset, "heldout_of_test_sources", threshold, guard,
                         list(of_test.values_list("prompt_text", "label")))  # fmt: skip
                _row(result, model, dataset, split, threshold, guard, rows)
            if args.by_opener:
                _opener_rows(result, model, dataset, threshold, guard)
            if args.by_run:
                _run_rows(result, model, dataset, threshold, guard)
            if args.frames_ablation:
                _frame_rows(result, model, dataset, threshold, guard)
    return result


def _opener_rows(result: dict[str, Any], model: Any, dataset: Any, threshold: float,
                 guard: Any) -> None:  # fmt: skip
    """The test split's generated sources split by whether Stage I prefilled an
    opener (meta["opener"]): harmful ones against all the split's benign examples,
    and benign ones on their own (false positives at the threshold). Does the
    classifier lean on the openers?"""
    test = dataset.examples.filter(split="test", meta__source="generated")
    rows = list(test.values_list("prompt_text", "label", "meta__opener"))
    benign = [(t, y) for t, y, _ in rows if y == 0]
    for kind, prefilled in (("prefilled", True), ("free", False)):
        harmful = [(t, y) for t, y, o in rows if y == 1 and bool(o) == prefilled]
        _row(result, model, dataset, f"test_harmful_{kind}", threshold, guard,
             benign + harmful)  # fmt: skip
        own = [(t, y) for t, y, o in rows if y == 0 and bool(o) == prefilled]
        _row(result, model, dataset, f"test_benign_{kind}", threshold, guard, own)
    # Benign examples (originals and augmented copies) whose source opens like a
    # restricted category's examples ("Help me design", "Which supplier is") against
    # those that do not: does the opener alone raise their scores?
    restricted = _restricted_openers(dataset)
    for kind, inside in (("restricted_opener", True), ("other_opener", False)):
        own = [(t, y) for t, y, o in rows if y == 0 and bool(o) and (o in restricted) == inside]
        _row(result, model, dataset, f"test_benign_{kind}", threshold, guard, own)


def _run_rows(result: dict[str, Any], model: Any, dataset: Any, threshold: float,
              guard: Any) -> None:  # fmt: skip
    """The test split's harmful examples grouped by the generation run of their
    source, each group against all the split's benign examples: does the model miss
    one run's phrasings, e.g. a top-up whose prompts nothing before it resembled?
    The split is scored once; each group's row is computed from those scores."""
    from classifiers.ml.input.scoring import score_texts
    from classifiers.models import Dataset

    rows = list(dataset.examples.filter(split="test").values_list(
        "prompt_text", "label", "source_id", "meta__source"))  # fmt: skip
    runs = {_run_of(sid) for _, _, sid, _ in rows} - {0}
    seeds = dict(Dataset.objects.filter(pk__in=runs).values_list("pk", "seed"))
    seeds[0] = dataset.seed  # unprefixed sources: the dataset is its own run
    groups = harmful_by_run([(y, sid, src) for _, y, sid, src in rows], dataset.pk, seeds)
    scores = [s.score for s in score_texts(guard.model, guard.tokenizer,
                                           [t for t, *_ in rows])]  # fmt: skip
    benign = [i for i, (_, y, _, _) in enumerate(rows) if y == 0]
    for name, harmful in groups.items():
        chosen = benign + harmful
        _scored_row(result, model, dataset, f"test_harmful_{name}", threshold,
                    [scores[i] for i in chosen], [rows[i][1] for i in chosen])  # fmt: skip


def harmful_by_run(rows: list[tuple[int, str, str | None]], dataset_pk: int,
                   seeds: dict[int, int]) -> dict[str, list[int]]:  # fmt: skip
    """Indices of the harmful rows (label, source_id, meta source) per generation
    run, named "run_d<run>_seed<seed>". The constitution's own example queries are
    a group of their own ("author_examples"): every run starts from them, and
    combining keeps the first run's copy, so they would otherwise count as its."""
    groups: dict[str, list[int]] = {}
    for index, (label, source_id, source) in enumerate(rows):
        if label != 1:
            continue
        if source == "author":
            name = "author_examples"
        else:
            run = _run_of(source_id)
            name = f"run_d{run or dataset_pk}_seed{seeds.get(run, '?')}"
        groups.setdefault(name, []).append(index)
    return dict(sorted(groups.items()))


def _run_of(source_id: str) -> int:
    """The generation run of a source: combining prefixes each part's source ids
    with "d<part's dataset id>:", so in a dataset combined from #5 and #6,
    "d5:d2:category-0012" came into #5 from #2, and the innermost prefix names the
    run it was generated in (or that run's reviewed copy, which keeps its seed).
    0 when there is no prefix: the dataset was never combined, and every source is
    its own run's."""
    runs = [part[1:] for part in source_id.split(":")[:-1]
            if part[:1] == "d" and part[1:].isdigit()]  # fmt: skip
    return int(runs[-1]) if runs else 0


def _restricted_openers(dataset: Any) -> set[str]:
    from classifiers.ml.data.prompts import opener_starts
    from classifiers.ml.types import RESTRICTED

    spec = dataset.constitution_version.to_spec()
    return set(opener_starts([c for c in spec.categories if c.kind == RESTRICTED]))


def _frame_rows(result: dict[str, Any], model: Any, dataset: Any, threshold: float,
                guard: Any) -> None:  # fmt: skip
    """Both frame rules side by side. Each rule gets its own threshold, calibrated
    on the calibration split's benign scores under that rule (as training would
    store it), then: validation and calibration together, test, held-out
    transforms; and on the test split the harmful examples of each transform family
    against all of its benign ones (each family's recall at the split's own
    1%-FPR point)."""
    from classifiers.ml.data.transforms import transform_family
    from classifiers.ml.eval.calibrate import threshold_for_fpr

    def split_rows(*splits: str) -> list[tuple[str, int, str]]:
        return list(dataset.examples.filter(split__in=splits)
                    .values_list("prompt_text", "label", "transform"))  # fmt: skip

    target = float(guard.thresholds.target_fpr)
    calibration = split_rows("calibration")
    for known_frames, rule in ((False, "frames_scored"), (True, "frames_taken_off")):
        cal_scores = _row(result, model, dataset, f"calibration:{rule}", threshold, guard,
                          [(t, y) for t, y, _ in calibration], known_frames=known_frames)  # fmt: skip
        own = threshold_for_fpr(
            [s for s, (_, y, _) in zip(cal_scores, calibration, strict=True) if y == 0], target
        )
        for name, splits in (("validation+calibration", ("validation", "calibration")),
                             ("test", ("test",)),
                             ("heldout_transforms", ("heldout_transforms",))):  # fmt: skip
            rows = split_rows(*splits)
            scores = _row(result, model, dataset, f"{name}:{rule}", own, guard,
                          [(t, y) for t, y, _ in rows], known_frames=known_frames)  # fmt: skip
            if name != "test":
                continue
            families = [
                "+".join(sorted({transform_family(t or "original") for t in tr.split("+")}))
                for _, _, tr in rows
            ]
            benign = [(sc, 0) for sc, (_, y, _) in zip(scores, rows, strict=True) if y == 0]
            for family in sorted(set(families)):
                harmful = [
                    (sc, 1)
                    for sc, (_, y, _), f in zip(scores, rows, families, strict=True)
                    if y == 1 and f == family
                ]
                if not harmful:
                    continue
                pairs = benign + harmful
                _scored_row(result, model, dataset, f"test:{rule}:harmful_{family}", own,
                            [p[0] for p in pairs], [p[1] for p in pairs])  # fmt: skip


def _scored_row(result: dict[str, Any], model: Any, dataset: Any, split: str,
                threshold: float, scores: list[float], labels: list[int],
                seconds: float = 0.0) -> None:  # fmt: skip
    """One result row from scores already computed."""
    result["rows"].append({
        "model": model.pk, "trained_on": model.dataset_id, "dataset": dataset.pk,
        "split": split, "threshold": threshold, "seconds": seconds,
        **_metrics(scores, labels, threshold),
    })  # fmt: skip


def _row(result: dict[str, Any], model: Any, dataset: Any, split: str, threshold: float,
         guard: Any, rows: list[tuple[str, int]], *,
         known_frames: bool = True) -> list[float]:  # fmt: skip
    from classifiers.ml.input.scoring import score_texts

    if not rows:
        return []
    started = time.perf_counter()
    scored = score_texts(guard.model, guard.tokenizer, [text for text, _ in rows],
                         known_frames=known_frames)  # fmt: skip
    scores = [s.score for s in scored]
    _scored_row(result, model, dataset, split, threshold, scores, [y for _, y in rows],
                seconds=time.perf_counter() - started)  # fmt: skip
    return scores
