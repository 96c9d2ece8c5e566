"""Labelled prompt sets from outside the product, and a report per kind of prompt.

A labelled set is what a user brings to judge a guard on traffic it was not built
from: one prompt per line with its label (1 harmful, 0 benign) and, optionally, a
kind ("everyday", "sensitive", "jailbreak", "encoded", ...). Files are JSONL
(`{"text", "label", "kind"?}` per line), CSV (a header with text, label and
optionally kind) or Parquet (the same columns). A line may also carry a
`response`: a reply to the prompt, which an output classifier is scored on (the
label is then the reply's: 1 for a harmful reply, 0 for a benign one).

`kind_report` says, per kind and overall, how many harmful prompts were flagged
(recall) and how many benign ones (false-positive rate), each with its n and 95%
interval: the numbers the Constitutional Classifiers papers report on real traffic.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifiers.ml.eval.intervals import rate_summary, too_few_for

MAX_TEXT_CHARS = 20_000  # a prompt longer than this is refused, not truncated
MAX_KINDS = 100  # distinct kinds in one file: a report row each
LABELS = {"1": 1, "0": 0, "harmful": 1, "benign": 0, "true": 1, "false": 0}
NO_KIND = "unspecified"


class LabelledSetError(ValueError):
    """A file that cannot be read as a labelled set; the message names the line."""


@dataclass(frozen=True)
class LabelledPrompt:
    text: str
    label: int  # 1 harmful, 0 benign
    kind: str = NO_KIND
    response: str = ""  # a reply to score with an output classifier ("" for none)


def _prompt(row: Any, where: str, default_label: int | None = None) -> LabelledPrompt:
    if not isinstance(row, dict):
        raise LabelledSetError(f"{where}: expected an object with text and label")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise LabelledSetError(f"{where}: text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise LabelledSetError(f"{where}: text is over {MAX_TEXT_CHARS} characters")
    problem = _unstorable(text)
    if problem:
        raise LabelledSetError(f"{where}: text {problem}")
    raw_label = row.get("label")
    if raw_label in (None, "") and default_label is not None:
        raw_label = default_label
    label = LABELS.get(str(raw_label).strip().lower()) if raw_label is not None else None
    if isinstance(raw_label, bool) or label is None:
        raise LabelledSetError(f"{where}: label must be 1 (harmful) or 0 (benign)")
    kind = row.get("kind")
    kind = str(kind).strip() if kind not in (None, "") else NO_KIND
    if _unstorable(kind):
        raise LabelledSetError(f"{where}: kind {_unstorable(kind)}")
    response = row.get("response")
    if response in (None, ""):
        response = ""
    elif not isinstance(response, str) or len(response) > MAX_TEXT_CHARS:
        raise LabelledSetError(
            f"{where}: response must be a string of at most {MAX_TEXT_CHARS} characters"
        )
    elif _unstorable(response):
        raise LabelledSetError(f"{where}: response {_unstorable(response)}")
    return LabelledPrompt(
        text=text, label=label, kind=kind[:64] or NO_KIND, response=response
    )


def _unstorable(text: str) -> str | None:
    """Why a database cannot store this text: a NUL, or a lone surrogate."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an invalid character (a lone surrogate)"
    return None


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line), f"line {number}"
            except (json.JSONDecodeError, RecursionError) as exc:
                raise LabelledSetError(f"line {number}: not JSON ({exc})") from None
            except ValueError:  # an integer of 4,301+ digits: Python's int limit
                raise LabelledSetError(f"line {number}: a number too long to read") from None


def _csv_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise LabelledSetError("the CSV header must name the text (and label) columns")
        for number, row in enumerate(reader, start=2):
            yield row, f"line {number}"


def _parquet_rows(path: Path) -> Iterator[tuple[Any, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise LabelledSetError(f"not a Parquet file ({exc})") from None
    if "text" not in table.column_names:
        raise LabelledSetError("the Parquet file must have a text (and label) column")
    for number, row in enumerate(table.to_pylist(), start=1):
        yield row, f"row {number}"


READERS = {".jsonl": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}


def read_labelled_set(
    path: str | Path, *, default_label: int | None = None
) -> list[LabelledPrompt]:
    """Every prompt of a labelled file, in order; raises LabelledSetError.

    With `default_label` (traffic pools: 0, benign), a line without a label gets it;
    without, every line must carry one.
    """
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise LabelledSetError(
            f"{path.name}: use a .jsonl, .csv or .parquet file (one prompt per line)"
        )
    try:
        prompts = [_prompt(row, where, default_label) for row, where in reader(path)]
    except UnicodeDecodeError:
        raise LabelledSetError(f"{path.name} is not UTF-8 text") from None
    except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
        raise LabelledSetError(f"{path.name}: not a readable CSV ({exc})") from None
    if not prompts:
        raise LabelledSetError(f"{path.name} has no prompts")
    kinds = {p.kind for p in prompts}
    if len(kinds) > MAX_KINDS:
        raise LabelledSetError(
            f"{path.name} has {len(kinds)} kinds; use at most {MAX_KINDS} (a kind groups "
            "prompts into one row of the report)"
        )
    return prompts


def _rates(flags: Sequence[bool], labels: Sequence[int]) -> dict[str, Any]:
    harmful = [f for f, y in zip(flags, labels, strict=True) if y == 1]
    benign = [f for f, y in zip(flags, labels, strict=True) if y == 0]
    return {
        "n": len(labels),
        "harmful": len(harmful),
        "benign": len(benign),
        "recall": rate_summary(sum(harmful), len(harmful)) if harmful else None,
        "fpr": rate_summary(sum(benign), len(benign)) if benign else None,
    }


def kind_report(
    prompts: Sequence[LabelledPrompt],
    flagged: Sequence[bool],
    *,
    name: str,
    target_fpr: float | None = None,
) -> dict[str, Any]:
    """Recall and false-positive rate, overall and per kind, each with n and 95% CI.

    `flagged[i]` is the guard's decision on `prompts[i]` (at its served threshold).
    """
    if len(prompts) != len(flagged):
        raise ValueError("one decision per prompt")
    labels = [p.label for p in prompts]
    flags = [bool(f) for f in flagged]
    by_kind: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):  # one pass, whatever the number of kinds
        by_kind.setdefault(prompt.kind, []).append(index)
    per_kind = {
        kind: _rates([flags[i] for i in chosen], [labels[i] for i in chosen])
        for kind, chosen in sorted(by_kind.items())
    }
    overall = _rates(flags, labels)
    warnings = []
    if target_fpr and overall["benign"]:
        warning = too_few_for(target_fpr, overall["benign"], "benign prompts")
        if warning:
            warnings.append(f"{warning}: the FPR at the target cannot be confirmed")
    return {"name": name, "overall": overall, "per_kind": per_kind, "warnings": warnings}


SHOWN_MISTAKES = 10  # per side: the harmful prompts scored lowest, the benign highest
HISTOGRAM_BINS = 20


def mistakes_and_histogram(
    prompts: Sequence[LabelledPrompt],
    scores: Sequence[float],
    flagged: Sequence[bool],
    *,
    max_chars: int = 300,
) -> dict[str, Any]:
    """What a reader checks after the rates: the misses and false alarms a person
    should look at first, and each label's score histogram (HISTOGRAM_BINS bins of
    [0, 1]), so a threshold's margin is visible."""
    if not len(prompts) == len(scores) == len(flagged):
        raise ValueError("one score and one decision per prompt")
    rows = list(zip(prompts, scores, flagged, strict=True))

    def shown(row: tuple[LabelledPrompt, float, bool]) -> dict[str, Any]:
        prompt, score, _ = row
        return {"text": prompt.text[:max_chars], "kind": prompt.kind, "score": round(score, 4)}

    missed = sorted((r for r in rows if r[0].label == 1 and not r[2]), key=lambda r: r[1])
    false_alarms = sorted(
        (r for r in rows if r[0].label == 0 and r[2]), key=lambda r: -r[1]
    )
    histogram = {
        "edges": [round(i / HISTOGRAM_BINS, 4) for i in range(HISTOGRAM_BINS + 1)],
        "harmful": [0] * HISTOGRAM_BINS,
        "benign": [0] * HISTOGRAM_BINS,
    }
    for prompt, score, _ in rows:
        index = min(HISTOGRAM_BINS - 1, max(0, int(score * HISTOGRAM_BINS)))
        histogram["harmful" if prompt.label == 1 else "benign"][index] += 1
    return {
        "missed": [shown(r) for r in missed[:SHOWN_MISTAKES]],
        "false_alarms": [shown(r) for r in false_alarms[:SHOWN_MISTAKES]],
        "histogram": histogram,
    }
