"""A dataset's examples out: JSONL/Parquet export, category bars, console progress."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count

from classifiers.ml.data import io as ml_data
from classifiers.ml.types import Example
from classifiers.models import (
    Dataset,
)

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


# What console progress is given: stage, done, total, seconds left (or None).
ProgressLine = Callable[[str, int, int, float | None], None]


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
