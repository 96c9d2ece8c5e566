"""The worker side of a generation run: build the examples with classifiers.ml and
save them in batches, with progress and cancel.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from classifiers.core.jobs import JobRunner
from classifiers.core.model_cache import relevance_embedder
from classifiers.datasets.config import (
    DEFAULT_REDTEAM_TEMPLATES,
    SAVE_BATCH,
    ml_generate_config,
)
from classifiers.datasets.examples import feedback_for_dataset
from classifiers.datasets.export import ProgressLine
from classifiers.datasets.generators import dataset_generator
from classifiers.datasets.traffic import traffic_examples_for
from classifiers.ml.data import assemble as ml_data
from classifiers.ml.data import redteam
from classifiers.ml.text.frames import SEED_JAILBREAK_TEMPLATES
from classifiers.ml.types import Cancelled, Example
from classifiers.models import (
    Dataset,
    DatasetExample,
    JailbreakTemplate,
)

logger = logging.getLogger(__name__)


def template_hash(text: str) -> str:
    return hashlib.sha256(redteam.normalise_template(text).encode()).hexdigest()


def store_templates(
    texts: list[str] | tuple[str, ...], *, source: str, dataset: Dataset | None = None
) -> int:
    """Insert the templates not stored yet (by normalised hash); returns how many."""
    rows: dict[str, str] = {}
    for text in texts:  # the first spelling of a template wins
        rows.setdefault(template_hash(text), text)
    existing = set(
        JailbreakTemplate.objects.filter(normalized_hash__in=rows).values_list(
            "normalized_hash", flat=True
        )
    )
    new = [
        JailbreakTemplate(text=text, normalized_hash=h, source=source, dataset=dataset)
        for h, text in rows.items()
        if h not in existing
    ]
    JailbreakTemplate.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


def all_templates() -> list[str]:
    return list(JailbreakTemplate.objects.order_by("id").values_list("text", flat=True))


def run_dataset(dataset_id: int, *, echo: ProgressLine | None = None) -> Dataset:
    """Build dataset `dataset_id` (must be queued); the status says how it ended."""
    dataset = Dataset.objects.select_related(
        "constitution_version__constitution", "endpoint"
    ).get(pk=dataset_id)
    with JobRunner(dataset) as runner:
        if runner.skip:
            return dataset

        def progress(*, stage: str, done: int, total: int, **extra: Any) -> None:
            runner.progress(stage=stage, done=done, total=total, **extra)
            if echo is not None:
                echo(stage, int(done), int(total), runner.job.eta_seconds)

        _build_and_save(dataset, runner, progress)
    dataset.refresh_from_db()
    return dataset


def _build_and_save(
    dataset: Dataset, runner: JobRunner, progress: Callable[..., None]
) -> None:
    config = dict(dataset.config)
    n_templates = int(config.pop("redteam_templates", DEFAULT_REDTEAM_TEMPLATES))
    cfg = ml_generate_config(config)
    spec = dataset.constitution_version.to_spec()
    generator = dataset_generator(dataset)

    templates: list[str] = []
    if "redteam_template" in cfg.transforms:
        store_templates(SEED_JAILBREAK_TEMPLATES, source="seed")
        new = redteam.generate_jailbreak_templates(
            generator,
            seed_templates=all_templates(),
            n=n_templates,
            seed=cfg.seed,
            max_new_tokens=min(160, max(cfg.max_new_tokens_query, 48)),
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            on_progress=progress,
            should_cancel=runner.should_cancel,
        )
        store_templates(new, source="generated", dataset=dataset)
        templates = all_templates()

    built = ml_data.build_dataset(
        spec,
        generator,
        cfg,
        templates=templates,
        on_progress=progress,
        should_cancel=runner.should_cancel,
        embed=relevance_embedder() if cfg.min_relevance > 0 else None,
    )
    if runner.should_cancel():
        raise Cancelled("cancelled before saving")
    feedback = feedback_for_dataset(dataset)  # reviewed live traffic, train split
    # Everyday prompts from the chosen traffic pools: benign negatives in every
    # split, above all calibration (thresholds rest on them).
    traffic = traffic_examples_for(
        dataset, generator, cfg, on_progress=progress, should_cancel=runner.should_cancel
    )
    if feedback or traffic:
        built.examples.extend(feedback + traffic)
        built.counts = ml_data.count_examples(built.examples)
    counts = dict(built.counts)
    counts["feedback"] = len(feedback)
    counts["traffic"] = len(traffic)
    counts["stats"] = dict(built.stats)
    total = len(built.examples)
    with transaction.atomic():
        for start in range(0, total, SAVE_BATCH):
            chunk = built.examples[start : start + SAVE_BATCH]
            DatasetExample.objects.bulk_create(
                [_example_row(dataset, ex) for ex in chunk]
            )
            progress(stage="saving", done=start + len(chunk), total=total)
        runner.finish(counts=counts, feedback_included=len(feedback))


def _example_row(dataset: Dataset, ex: Example) -> DatasetExample:
    meta = {k: v for k, v in ex.meta.items() if k != "split"}
    return DatasetExample(
        dataset=dataset,
        messages=ex.messages,
        prompt_text=ex.prompt_text,
        response=ex.response,
        label=int(ex.label),
        category=ex.category,
        source_id=ex.source_id,
        transform=ex.transform,
        split=str(ex.meta.get("split", "")),
        meta=meta,
    )
