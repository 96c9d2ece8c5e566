"""Dataset files: Example <-> flat rows, JSONL and Parquet.

COLUMNS is the on-disk schema (`example_row` / `example_from_row`); the formats are
unchanged from before the ml/ split, so existing dataset files keep loading.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from classifiers.ml.data.stage1 import response_label
from classifiers.ml.types import Example

# ---------------------------------------------------------------------------
# Export

COLUMNS = (
    "messages",
    "prompt_text",
    "response",
    "label",
    "response_label",
    "category",
    "source_id",
    "transform",
    "split",
    "meta",
)


def example_row(ex: Example) -> dict[str, Any]:
    return {
        "messages": [{"role": m["role"], "content": m["content"]} for m in ex.messages],
        "prompt_text": ex.prompt_text,
        "response": ex.response,
        "label": int(ex.label),
        "response_label": response_label(ex),
        "category": ex.category,
        "source_id": ex.source_id,
        "transform": ex.transform,
        "split": str(ex.meta.get("split", "")),
        "meta": ex.meta,
    }


def example_from_row(row: Mapping[str, Any]) -> Example:
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Example(
        messages=[dict(m) for m in row["messages"]],
        response=row.get("response") or "",
        label=int(row["label"]),
        category=row["category"],
        source_id=row["source_id"],
        transform=row.get("transform") or "original",
        meta=dict(meta),
    )


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(example_row(ex), ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[Example]:
    with Path(path).open(encoding="utf-8") as fh:
        return [example_from_row(json.loads(line)) for line in fh if line.strip()]


def _parquet_schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("messages", pa.list_(message)),
            ("prompt_text", pa.string()),
            ("response", pa.string()),
            ("label", pa.int64()),
            ("response_label", pa.int64()),  # null when there is no response
            ("category", pa.string()),
            ("source_id", pa.string()),
            ("transform", pa.string()),
            ("split", pa.string()),
            ("meta", pa.string()),  # JSON: free-form keys would break a fixed schema
        ]
    )


def write_parquet(examples: Iterable[Example], path: str | Path) -> Path:
    """Parquet that pyarrow, pandas and `datasets.load_dataset("parquet")` read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [example_row(ex) for ex in examples]
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            value = row[name]
            columns[name].append(
                json.dumps(value, ensure_ascii=False) if name == "meta" else value
            )
    table = pa.Table.from_pydict(columns, schema=_parquet_schema())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_parquet(path: str | Path) -> list[Example]:
    import pyarrow.parquet as pq

    return [example_from_row(row) for row in pq.read_table(path).to_pylist()]
