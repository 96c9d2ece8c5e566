"""Tiny datasets and trained models for the training tests (on constitutions from
tests.factories.published_constitution).

All text is innocuous placeholder content ("forbidden widgets" vs garden care).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from tests.api_helpers import HARMFUL as HARMFUL_QUERIES

BENIGN_QUERIES = [
    "how often should I water tomato plants",
    "what is the best soil for roses",
    "when do I prune apple trees in my garden",
    "tips for growing basil on a windowsill",
    "how do I compost kitchen scraps",
    "which flowers attract bees to the garden",
    "how deep should I plant tulip bulbs",
    "what vegetables grow well in shade",
    "how do I keep slugs off my lettuce",
    "when is the right time to mow the lawn",
    "how can I grow strawberries in pots",
    "what is mulch and why use it",
]
HARMFUL_RESPONSE = "Sure, the forbidden widget needs the secret part and the hidden step."
REFUSAL_RESPONSE = "I'm sorry, but I can't help with that."
BENIGN_RESPONSE = "Water the plants in the morning and keep the soil moist."


def _split_for(index: int) -> str:
    # 12 queries per label: 5 train, 2 validation, 3 calibration, 2 test.
    if index < 5:
        return "train"
    if index < 7:
        return "validation"
    if index < 10:
        return "calibration"
    return "test"


def make_dataset(
    version: Any,
    *,
    splits: tuple[str, ...] = ("train", "validation", "calibration", "test"),
    heldout: bool = True,
    responses: bool = True,
):
    """A finished Dataset of ~48 short examples across all splits."""
    from classifiers.models import Dataset, DatasetExample

    dataset = Dataset.objects.create(
        constitution_version=version, status="done", finished_at=timezone.now(),
        config={"per_category": 12, "transforms": ["rot13"], "heldout_families": ["rot13"]},
    )  # fmt: skip
    rows = []
    for label, queries, category in (
        (1, HARMFUL_QUERIES, "forbidden widgets"),
        (0, BENIGN_QUERIES, "garden care"),
    ):
        for index, query in enumerate(queries):
            split = _split_for(index)
            if split not in splits:
                continue
            refused = label == 1 and index % 3 == 0
            response = ""
            if responses:
                response = (
                    REFUSAL_RESPONSE if refused
                    else HARMFUL_RESPONSE if label else BENIGN_RESPONSE
                )  # fmt: skip
            meta = {"response_label": 0 if refused else label} if responses else {}
            common = dict(
                dataset=dataset, messages=[{"role": "user", "content": query}],
                prompt_text=query, response=response, label=label, category=category,
                source_id=f"{category[:6]}-{index}", meta=meta,
            )  # fmt: skip
            rows.append(DatasetExample(split=split, **common))
            if heldout and split == "test":
                import codecs

                hidden = codecs.encode(query, "rot13")
                rows.append(DatasetExample(**{
                    **common, "messages": [{"role": "user", "content": hidden}],
                    "prompt_text": hidden, "transform": "rot13",
                    "split": "heldout_transforms",
                }))  # fmt: skip
    DatasetExample.objects.bulk_create(rows)
    return dataset


FAST_CONFIG = {
    "input_mode": "fast",
    "output_mode": "fast",
    "input_epochs": 5,
    "output_epochs": 2,
    "target_fpr": 0.1,
    "output_max_length": 48,
}


def fake_report(kind: str = "input", *, seed: int = 0) -> dict[str, Any]:
    """A real-shaped report from evaluate.evaluation_report on made-up scores."""
    import random

    from classifiers.ml.eval.evaluate import evaluation_report

    rng = random.Random(seed)
    labels = [1] * 10 + [0] * 10
    scores = [min(1.0, max(0.0, rng.gauss(0.75 if y else 0.25, 0.2))) for y in labels]
    categories = ["forbidden widgets" if y else "garden care" for y in labels]
    splits = {}
    for split in ("test", "heldout_transforms"):
        report = evaluation_report(
            scores=scores, labels=labels, categories=categories,
            transforms=["original"] * 10 + ["rot13"] * 10, threshold=0.5, name=split,
        )  # fmt: skip
        report["target_fpr"] = 0.01
        report["tpr_at_target_fpr"] = report["tpr_at_1pct_fpr"]
        baselines = {"keyword": evaluation_report(
            scores=[1.0 if y else 0.0 for y in labels], labels=labels,
            categories=categories, threshold=0.5, name="keyword",
        )}  # fmt: skip
        if kind == "output":
            report["halting"] = {
                "edges": [i / 10 for i in range(11)], "harmful": [3, 2, 1] + [0] * 7,
                "benign": [0] * 10, "halted": 6, "n": 20,
                "harmful_halted_fraction": 0.6, "median_token": 4,
            }  # fmt: skip
        splits[split] = {"classifier": report, "baselines": baselines}
    return {"kind": kind, "splits": splits, "thresholds": {"global_threshold": 0.5}}


def make_model(dataset: Any, kind: str = "input", *, path: str = "", seed: int = 0):
    """A ModelVersion row (no artifact) with a real-shaped report."""
    from classifiers.models import ModelVersion, TrainingRun

    run = TrainingRun.objects.create(dataset=dataset, status="done", config={})
    report = fake_report(kind, seed=seed)
    test = report["splits"]["test"]["classifier"]
    return ModelVersion.objects.create(
        kind=kind, constitution=dataset.constitution_version.constitution,
        constitution_version=dataset.constitution_version, dataset=dataset,
        training_run=run, path=path or f"fake/{run.pk}-{kind}", checksum="0" * 64,
        config={"mode": "fast"},
        thresholds={"global_threshold": 0.5, "target_fpr": 0.01, "per_category": {}},
        metrics={"auroc": test["auroc"], "tpr_at_threshold": test["tpr_at_threshold"],
                 "fpr_at_threshold": test["fpr_at_threshold"], "target_fpr": 0.01},
        report=report,
    )  # fmt: skip


def wait_for_job(job: Any, timeout: float = 150) -> Any:
    """Poll a job row until it leaves queued/running (the real worker runs it)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            return job
        time.sleep(0.3)
    raise AssertionError(f"{job} stuck at {job.status} / {job.stage}")


def train_input_model(version: Any, *, epochs: int = 8) -> str:
    """`manage.py train` an active input model (no output model) on make_dataset's
    rows; returns what the command printed. Set settings.ARTIFACTS_DIR first."""
    from django.core.management import call_command

    out: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            out.append(text)

        def flush(self) -> None:
            pass

    dataset = make_dataset(version)
    call_command("train", dataset=dataset.pk, epochs=epochs, no_output=True, target_fpr=0.1,
                 activate=True, stdout=Sink())  # fmt: skip
    return "".join(out)
