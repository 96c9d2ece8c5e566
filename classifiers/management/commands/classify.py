"""manage.py classify --input IN.jsonl --output OUT.jsonl: score prompts offline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifiers.training.config import TrainingError
from classifiers.training.registry import classify_texts
from constitutions.models import Constitution


class Command(BaseCommand):
    help = (
        "Add input_score, blocked and category to every {\"text\": ...} line, using the "
        "ACTIVE input classifier of a constitution. Nothing is written on any error."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", required=True)
        parser.add_argument("--output", required=True)
        parser.add_argument("--constitution", default=None,
                            help="slug (optional when only one constitution exists)")  # fmt: skip
        parser.add_argument("--batch-size", type=int, default=64)

    def handle(self, *args: Any, **options: Any) -> None:

        constitution = self._constitution(Constitution, options["constitution"])
        rows = self._read(Path(options["input"]))
        try:
            results = classify_texts(
                constitution=constitution, texts=[row["text"] for row in rows],
                batch_size=max(1, options["batch_size"]),
                on_progress=lambda done, total: self.stderr.write(f"scored {done}/{total}"),
            )  # fmt: skip
        except TrainingError as exc:
            raise CommandError(str(exc)) from exc
        output = Path(options["output"])
        temporary = output.with_name(f".{output.name}.tmp")
        # Written beside the target and renamed: readers never see half a file.
        with open(temporary, "w", encoding="utf-8") as handle:
            for row, result in zip(rows, results, strict=True):
                handle.write(json.dumps({**row, **result}, ensure_ascii=False) + "\n")
        os.replace(temporary, output)
        blocked = sum(1 for r in results if r["blocked"])
        self.stdout.write(f"{len(results)} lines scored, {blocked} blocked -> {output}")

    def _constitution(self, model: Any, slug: str | None) -> Any:
        if slug:
            found = model.objects.filter(slug=slug).first()
            if found is None:
                raise CommandError(f"no constitution with slug {slug!r}")
            return found
        candidates = list(model.objects.filter(activemodel__kind="input").distinct()[:2])
        if len(candidates) != 1:
            raise CommandError("give --constitution SLUG (zero or several have a live model)")
        return candidates[0]

    def _read(self, path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise CommandError(f"{path} does not exist")
        rows: list[dict[str, Any]] = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CommandError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise CommandError(f'{path}:{number}: expected an object with a "text" string')
                rows.append(row)
        return rows
