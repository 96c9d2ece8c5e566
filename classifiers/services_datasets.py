"""Synthetic datasets: start a run, do the run, store templates, export.

The Celery task and `manage.py generate` both call `run_dataset`, so there is one
implementation of the work: load the constitution version, build the generator,
optionally red-team new jailbreak templates, `data.build_dataset`, then save every
example and the counts in ONE transaction (a failed, cancelled or killed run never
leaves half a dataset behind).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count

from classifiers.ml import data as ml_data
from classifiers.ml import redteam
from classifiers.ml.types import RESTRICTED, ChatGenerator, Example
from classifiers.models import (
    Dataset,
    DatasetExample,
    GeneratorEndpoint,
    JailbreakTemplate,
)
from classifiers.progress import JobRunner
from classifiers.review import feedback_for_dataset

logger = logging.getLogger(__name__)

LOCAL = "local"
SAVE_BATCH = 500  # rows per bulk_create
DEFAULT_REDTEAM_TEMPLATES = 4  # new templates red-teamed per run that uses them
GENERATE_CONFIG_FIELDS = frozenset(f.name for f in fields(ml_data.GenerateConfig))

# The local model is loaded once per worker process (a few seconds, ~0.5 GB).
_local_lock = threading.Lock()
_local_generator: ChatGenerator | None = None


class StartError(ValueError):
    """A dataset cannot be started with these settings; the message says why."""


# ---------------------------------------------------------------------------- start


def version_problems(version: Any) -> list[str]:
    """Why `version` cannot be used for generation ([] when it can)."""
    categories = version.content.get("categories", [])
    kinds = {c.get("kind") for c in categories}
    if RESTRICTED not in kinds or "permitted" not in kinds:
        return [
            f"{version} needs at least one restricted and one permitted category "
            "(a classifier learns the boundary between the two)"
        ]
    return []


# Configs stored before prefilled openers existed have no opener_share; they meant
# none, whatever GenerateConfig's default is now.
OLD_CONFIG_OPENER_SHARE = 0.0


def ml_generate_config(config: dict[str, Any]) -> ml_data.GenerateConfig:
    """The ml-layer config for a stored dataset config."""
    known = {k: v for k, v in config.items() if k in GENERATE_CONFIG_FIELDS}
    known.setdefault("opener_share", OLD_CONFIG_OPENER_SHARE)
    for name in ("transforms", "heldout_families", "only_categories"):
        known[name] = tuple(known.get(name) or ())
    return ml_data.GenerateConfig(**known)


def generate_config(**options: Any) -> dict[str, Any]:
    """A full GenerateConfig as a JSON-able dict; unknown keys are an error."""
    unknown = set(options) - GENERATE_CONFIG_FIELDS - {"redteam_templates"}
    if unknown:
        raise StartError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
    redteam_templates = int(options.pop("redteam_templates", DEFAULT_REDTEAM_TEMPLATES))
    for name in ("transforms", "heldout_families", "only_categories"):
        options[name] = tuple(options.get(name) or ())
    try:
        cfg = ml_data.GenerateConfig(**options)
    except TypeError as err:
        raise StartError(str(err)) from err
    config = asdict(cfg)
    config["transforms"] = list(cfg.transforms)
    config["heldout_families"] = list(cfg.heldout_families)
    config["only_categories"] = list(cfg.only_categories)
    config["redteam_templates"] = redteam_templates
    return config


def check_config(config: dict[str, Any]) -> list[str]:
    """Problems with transform names, families and sizes ([] when fine)."""
    from classifiers.ml.augment import FAMILIES, TRANSFORMS

    problems = []
    unknown = [t for t in config.get("transforms", []) if t not in TRANSFORMS]
    if unknown:
        problems.append(f"unknown transform(s): {', '.join(unknown)}")
    bad_families = [f for f in config.get("heldout_families", []) if f not in FAMILIES]
    if bad_families:
        problems.append(f"unknown transform family(ies): {', '.join(bad_families)}")
    for family in config.get("heldout_families", []):
        if family in FAMILIES and not set(FAMILIES[family]) & set(config["transforms"]):
            problems.append(
                f"held-out family {family!r} has none of its transforms selected "
                f"({', '.join(FAMILIES[family])})"
            )
    if not 1 <= int(config.get("per_category", 0)) <= 500:
        problems.append("size per category must be between 1 and 500")
    opener_share = config.get("opener_share", OLD_CONFIG_OPENER_SHARE)
    if (
        isinstance(opener_share, bool)
        or not isinstance(opener_share, int | float)
        or not 0 <= opener_share <= 1
    ):
        problems.append("the share of prefilled openers must be between 0 and 1")
    problems += _split_problems(config)
    return problems


def _split_problems(config: dict[str, Any]) -> list[str]:
    fractions = {
        name: config.get(
            f"{name}_fraction", getattr(ml_data.GenerateConfig, f"{name}_fraction")
        )
        for name in ml_data.SPLITS
    }
    try:
        fractions = {name: float(value) for name, value in fractions.items()}
    except (TypeError, ValueError):
        return ["split fractions must be numbers"]
    # Training needs sources; thresholds need the calibration split's benign
    # examples; the report needs the test split. Validation may be empty.
    empty = [
        name for name in ("train", "calibration", "test") if not fractions[name] > 0
    ]
    problems = []
    if any(not 0 <= f <= 1 for f in fractions.values()):
        problems.append("each split fraction must be between 0 and 1")
    elif empty:
        problems.append(f"split fraction(s) must be above 0: {', '.join(empty)}")
    elif abs(sum(fractions.values()) - 1) > 0.001:
        shown = ", ".join(f"{n}={f:g}" for n, f in fractions.items())
        problems.append(f"split fractions must add up to 1 ({shown})")
    return problems


def category_problems(version: Any, config: dict[str, Any]) -> list[str]:
    """Names in only_categories that the version does not have."""
    only = config.get("only_categories") or []
    if not isinstance(only, list | tuple) or not all(isinstance(n, str) for n in only):
        return ["the categories to generate for must be a list of names"]
    names = {c.name for c in version.to_spec().categories}
    unknown = [name for name in only if name not in names]
    if unknown:
        return [
            f"{version} has no categor{'y' if len(unknown) == 1 else 'ies'} "
            + ", ".join(repr(n) for n in unknown)
        ]
    return []


def dataset_start(
    *,
    version: Any,
    config: dict[str, Any],
    user: Any,
    endpoint: GeneratorEndpoint | None = None,
    enqueue: bool = True,
) -> Dataset:
    """Create a queued Dataset and (after commit) hand it to the gpu-queue worker."""
    problems = version_problems(version) + check_config(config)
    problems += category_problems(version, config)
    if problems:
        raise StartError("; ".join(problems))
    if endpoint is not None:  # endpoints get the instruction prompt: nothing to prefill
        config = {**config, "opener_share": 0.0}
    with transaction.atomic():
        dataset = Dataset.objects.create(
            constitution_version=version,
            generator=str(endpoint) if endpoint else LOCAL,
            endpoint=endpoint,
            seed=int(config.get("seed", 0)),
            config=config,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        if enqueue:
            from classifiers.tasks.datasets import generate_dataset

            generate_dataset.delay_on_commit(dataset.pk)
    return dataset


# ------------------------------------------------------------------------ generators


def local_generator() -> ChatGenerator:
    global _local_generator
    with _local_lock:
        if _local_generator is None:
            from classifiers.ml import registry
            from classifiers.ml.generation import LocalGenerator

            _local_generator = LocalGenerator.from_dir(
                registry.generator_dir(data_dir=settings.DATA_DIR),
                device=registry.pick_device(),
            )
        return _local_generator


_embedder: Any = None


def relevance_embedder() -> Any:
    """The input classifier's frozen encoder, for Stage I's relevance filter (cached)."""
    global _embedder
    with _local_lock:
        if _embedder is None:
            from classifiers.ml import registry
            from classifiers.ml.input_classifier import sentence_embedder

            _embedder = sentence_embedder(
                registry.encoder_dir(settings.ENCODER_MODEL_DIR or None),
                device=registry.pick_device(),
            )
        return _embedder


def endpoint_generator(endpoint: GeneratorEndpoint) -> Any:
    from classifiers.ml.generation import OpenAICompatGenerator

    return OpenAICompatGenerator(
        endpoint.base_url,
        endpoint.model,
        endpoint.api_key,
        timeout=endpoint.timeout_seconds,
        max_retries=endpoint.max_retries,
        concurrency=endpoint.concurrency,
    )


def check_endpoint(endpoint: GeneratorEndpoint) -> str:
    """Return "ok", or what is wrong with the endpoint (never raises for its faults)."""
    from classifiers.ml.generation import GeneratorError

    try:
        with endpoint_generator(endpoint) as generator:
            generator.check()
    except GeneratorError as err:
        return str(err)
    return "ok"


def dataset_generator(dataset: Dataset) -> ChatGenerator:
    if dataset.generator != LOCAL:
        if dataset.endpoint is None:
            raise RuntimeError(
                f"the endpoint this dataset used ({dataset.generator}) was deleted"
            )
        return endpoint_generator(dataset.endpoint)
    return local_generator()


# ------------------------------------------------------------------------- templates


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


# ----------------------------------------------------------------------------- run

ProgressLine = Callable[[str, int, int, float | None], None]


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
        store_templates(redteam.SEED_JAILBREAK_TEMPLATES, source="seed")
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
        from classifiers.ml.types import Cancelled

        raise Cancelled("cancelled before saving")
    feedback = feedback_for_dataset(dataset)  # reviewed live traffic, train split
    if feedback:
        built.examples.extend(feedback)
        built.counts = ml_data.count_examples(built.examples)
    counts = dict(built.counts)
    counts["feedback"] = len(feedback)
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


# --------------------------------------------------------------------------- export

EXPORT_FORMATS = {
    "jsonl": "application/x-ndjson",
    "parquet": "application/vnd.apache.parquet",
}


def iter_examples(dataset: Dataset) -> Iterator[Example]:
    for row in dataset.examples.order_by("id").iterator(chunk_size=1000):
        yield row.to_example()


def export_dataset(dataset: Dataset, fmt: str) -> Path:
    """Write every split (with a `split` column) to a temp file under DATA_DIR."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    folder = Path(settings.DATA_DIR) / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=folder, prefix=f"dataset-{dataset.pk}-", suffix=f".{fmt}", delete=False
    )
    handle.close()
    writer = ml_data.write_jsonl if fmt == "jsonl" else ml_data.write_parquet
    return writer(iter_examples(dataset), handle.name)


def category_bars(dataset: Dataset, *, width: int = 340) -> list[dict[str, Any]]:
    """Examples per category, scaled for the page's inline SVG bar chart."""
    rows = list(
        dataset.examples.values("category", "label")
        .annotate(n=Count("id"))
        .order_by("category", "label")
    )
    biggest = max((r["n"] for r in rows), default=0) or 1
    return [
        {**r, "width": max(2, round(width * r["n"] / biggest)), "y": 28 * i}
        for i, r in enumerate(rows)
    ]


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def throttled(echo: ProgressLine, every: float = 1.0) -> ProgressLine:
    """Print at most once per `every` seconds, plus each stage's last step."""
    last = {"at": 0.0, "stage": ""}

    def line(stage: str, done: int, total: int, eta: float | None) -> None:
        now = time.monotonic()
        if stage == last["stage"] and now - last["at"] < every and done < total:
            return
        last["at"], last["stage"] = now, stage
        echo(stage, done, total, eta)

    return line
