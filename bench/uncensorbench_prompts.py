"""UncensorBench's prompts, and the replies it ships, as a labelled file.

    .venv/bin/pip install --no-deps uncensorbench==0.3.7   (make setup does)
    python -m bench uncensorbench_prompts --out var/eval/uncensorbench.jsonl
    .venv/bin/python manage.py evaluate --model N --file var/eval/uncensorbench.jsonl

    # For an output classifier: each prompt twice, with the package's compliant
    # reply (label 1) and its refusal (label 0); kind = topic plus "reply"/"refusal":
    python -m bench uncensorbench_prompts --replies --out var/eval/uncensorbench-replies.jsonl

UncensorBench (Wisent AI, 2025) is an unreserved outside set: 150 requests models
usually refuse, ten on each of fifteen topics (fraud, weapons, drugs, violence,
cybersecurity, ...), each with a refusal and a compliant answer written by its
authors. Each line's kind is its topic, so the report is recall per topic: read
the row of the constitution's own topic (fraud for fraud-demo; no topic is CBRN,
the nearest are weapons, with explosives, and violence, with poisoning) and the
others as "how much of this the guard also blocks". Nobody on this team wrote or
tuned on them. Read from the installed package; nothing is downloaded; the file is
written under var/ and never committed.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "uncensorbench"


def bench_prompts() -> list[dict[str, Any]]:
    """The package's prompt records; a clear error when it is missing."""
    # Read through the distribution's file list: the package's own import wants
    # optional dependencies for its judge.
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"install the prompts first: .venv/bin/pip install --no-deps {DISTRIBUTION}==0.3.7"
        ) from None
    found = [f for f in files if f.name == "prompts.json" and f.parent.name == "data"]
    if not found:
        raise SystemExit(f"{DISTRIBUTION} is installed without its data/prompts.json")
    return json.loads(found[0].locate().read_text(encoding="utf-8"))["prompts"]


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench uncensorbench_prompts")
    parser.add_argument(
        "--out", required=True, help="where to write the JSONL (under var/)"
    )
    parser.add_argument("--topic", action="append", default=None,
                        help="only this topic (repeatable), e.g. fraud")  # fmt: skip
    parser.add_argument("--replies", action="store_true",
                        help="two lines per prompt: its compliant reply and its refusal")  # fmt: skip
    args = parser.parse_args(argv)
    rows = bench_prompts()
    if args.topic:
        rows = [r for r in rows if r["topic"] in args.topic]
    lines = []
    for row in rows:
        if not args.replies:
            lines.append({"text": row["prompt"], "label": 1, "kind": row["topic"]})
            continue
        lines.append({"text": row["prompt"], "label": 1, "kind": f"{row['topic']} reply",
                      "response": row["uncensored_response"]})  # fmt: skip
        lines.append({"text": row["prompt"], "label": 0, "kind": f"{row['topic']} refusal",
                      "response": row["censored_response"]})  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for line in lines:
            handle.write(json.dumps(line) + "\n")
    return {"written": str(out), "lines": len(lines),
            "kinds": dict(Counter(line["kind"] for line in lines))}  # fmt: skip
