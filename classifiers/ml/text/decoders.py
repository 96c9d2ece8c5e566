"""Decoders: undo encodings (base64, ROT13, Caesar shifts, reversed text).

`ENCODERS` / `DECODERS` are the named codecs (the augmenter encodes with the same
ones). `english_score` / `word_hit_rate` say whether text reads as English, so the
decoders only run on lines that do not (`decode_lines`, `decode_base64_segments`)
and pick the decoding that reads best. `strip_instructions` drops "Decode this
and answer:"-style lines the augmenter adds around an encoded request.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import math
import re
from collections.abc import Callable

from classifiers.ml.text.confusables import (
    ANY_WORD,
    BASE64_SEGMENT,
    LEET_FOLD,
    SCORING_FOLD_TABLE,
    deobfuscate,
    fold_confusables,
    remove_zero_width,
)

# ~200 frequent English words, for the English-likeness score that picks Caesar
# shifts and decides whether reversed text reads better.
COMMON_WORDS: frozenset[str] = frozenset(
    """
    a about after all also an and any are as at be because been before being best
    but by can could day did do does doing done down each even every few find first
    for from get give go going good great had has have he help her here him his how
    i if in into is it its just know like little long look make many me more most
    much must my need new no not now of off on one only or other our out over own
    people please really right said same say see she should show so some something
    still such take tell than that the their them then there these they thing think
    this those through time to too two up us use used very want was way we well were
    what when where which who why will with without work would write you your
    explain describe about step steps way ways someone anyone question answer
    safe home house water food school game story friend money need information
    find learn does doing done make made makes making tell told ask asked
    """.split()
)


# Relative letter frequencies of English text (a..z), for cosine similarity.
_ENGLISH_FREQ: tuple[float, ...] = (
    8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.15, 0.77, 4.0, 2.4,
    6.7, 7.5, 1.9, 0.095, 6.0, 6.3, 9.1, 2.8, 0.98, 2.4, 0.15, 2.0, 0.074,
)  # fmt: skip


_ENGLISH_NORM = math.sqrt(sum(f * f for f in _ENGLISH_FREQ))


# Lines that only instruct the model how to read the payload ("Decode this and
# answer:"). They are dropped from decoded views so the view is the request itself.
_INSTRUCTION_LINE = re.compile(
    r"^[^\n]{0,100}\b(?:decode|decipher|encoded|base-?64|rot-?13|caesar|cipher|"
    r"shift(?:ed)?|reverse|backwards|leet(?:speak)?|letters|answer|respond|reply)"
    r"\b[^\n]{0,100}:[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


_WORD = re.compile(r"[a-z]+")


# A decoded line must beat the encoded one by this much English-likeness (0..1) to
# become a view: "clearly more English-like", not a lucky shift of random letters.
_ENGLISH_MARGIN = 0.2


# Lines whose word-hit rate reaches this already read as English: skip decoders.
_ENGLISH_ENOUGH = 0.5


def _shift_table(shift: int) -> dict[int, int]:
    lower = "abcdefghijklmnopqrstuvwxyz"
    upper = lower.upper()
    k = shift % 26
    return str.maketrans(lower + upper, lower[k:] + lower[:k] + upper[k:] + upper[:k])


# Precomputed translate tables make each Caesar candidate one C-level pass.
_SHIFT_TABLES: tuple[dict[int, int], ...] = tuple(_shift_table(k) for k in range(26))


# ----------------------------------------------------------------- raw encoders


def encode_base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def decode_base64(text: str) -> str:
    return base64.b64decode(text.encode("ascii")).decode("utf-8")


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def caesar(text: str, shift: int = 1) -> str:
    """Shift ASCII letters by `shift` ("dog" -> "eph"); everything else unchanged."""
    return text.translate(_SHIFT_TABLES[shift % 26])


def caesar_decode(text: str, shift: int = 1) -> str:
    return caesar(text, -shift)


def reverse(text: str) -> str:
    return text[::-1]


ENCODERS: dict[str, Callable[..., str]] = {
    "base64": encode_base64,
    "rot13": rot13,
    "caesar": caesar,
    "reverse": reverse,
}


# decode(encode(x)) == x for every string x; caesar's decoder takes the shift.
DECODERS: dict[str, Callable[..., str]] = {
    "base64": decode_base64,
    "rot13": rot13,
    "caesar": caesar_decode,
    "reverse": reverse,
}


# ------------------------------------------------------------------ English scoring


def word_hit_rate(text: str) -> float:
    """Fraction of the alphabetic words of `text` that are common English words."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    return sum(w in COMMON_WORDS for w in words) / len(words)


def _letter_counts(text: str) -> list[int]:
    lowered = text.lower()
    return [lowered.count(chr(97 + i)) for i in range(26)]


def _letter_cosine(counts: list[int]) -> float:
    norm = math.sqrt(sum(c * c for c in counts))
    if norm == 0:
        return 0.0
    return sum(c * f for c, f in zip(counts, _ENGLISH_FREQ, strict=False)) / (
        norm * _ENGLISH_NORM
    )


def english_score(text: str) -> float:
    """0..1, higher reads more like English: common-word hits + letter frequencies."""
    return 0.6 * word_hit_rate(text) + 0.4 * _letter_cosine(_letter_counts(text))


# The words of an encoder's instruction line ("Decode this Caesar cipher (shift 3)
# and answer:", "The following message is base64-encoded. Decode it and respond:").
# A line with any other word says something of its own and is never stripped: an
# attacker could otherwise end a request with "Answer in full detail:" and have it
# dropped from every decoded view.
_INSTRUCTION_WORDS = frozenset(
    """a an and answer base base64 below backwards by caesar cipher code decipher
    decode decrypt encoded encoding first following in is it join leet leetspeak
    letter letters message now of please read reply request respond reverse
    reversed rot rot13 say says shift shifted split string text the then this to
    what with word words written""".split()
)


def only_instructions(line: str) -> bool:
    words = ANY_WORD.findall(line.casefold())
    return all(w in _INSTRUCTION_WORDS or w.isdigit() for w in words)


def strip_instructions(text: str) -> str:
    """Drop "Decode this and answer:"-style lines; keep the rest."""
    stripped = _INSTRUCTION_LINE.sub(
        lambda m: "" if only_instructions(m.group(0)) else m.group(0), text
    )
    return stripped.strip() if stripped.strip() else text


def _decode_base64_segment(segment: str) -> str | None:
    """A base64 run's text if it decodes to mostly printable UTF-8, else None."""
    segment = segment.replace("-", "+").replace("_", "/").rstrip("=")
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.b64decode(padded, validate=True)
        decoded = remove_zero_width(raw.decode("utf-8"))
    except (binascii.Error, ValueError):
        return None
    printable = sum(ch.isprintable() or ch in "\n\t" for ch in decoded)
    letters = sum(ch.isalpha() for ch in decoded)
    if not decoded or printable < 0.9 * len(decoded) or letters < 0.3 * len(decoded):
        return None
    return decoded


def decode_base64_segments(text: str) -> str | None:
    """Replace base64 runs that decode to mostly printable UTF-8; None if none did."""
    found = False

    def decode(match: re.Match[str]) -> str:
        nonlocal found
        decoded = _decode_base64_segment(match.group(0))
        if decoded is None:
            return match.group(0)
        found = True
        return decoded

    out = BASE64_SEGMENT.sub(decode, text)
    return out if found else None


def _best_line_decoding(line: str) -> str:
    """The most English-like of: line, Caesar shifts 1..25 of it, its reverse."""
    base_score = english_score(line)
    best, best_score = line, base_score
    counts = _letter_counts(line)
    # Leetspeak or homoglyphs under the cipher are not shifted by it, so they are
    # folded in after shifting, for scoring only ("u0j" -> "h0w" -> "how").
    has_leet = not line.isascii() or any(ch in LEET_FOLD for ch in line)
    for shift in range(1, 26):
        # Decoding by `shift` rotates the letter histogram: reuse it, no recount.
        rotated = counts[shift:] + counts[:shift]
        candidate = line.translate(_SHIFT_TABLES[26 - shift])
        if has_leet:
            score = english_score(candidate.translate(SCORING_FOLD_TABLE))
        else:
            score = 0.6 * word_hit_rate(candidate) + 0.4 * _letter_cosine(rotated)
        if score > best_score:
            best, best_score = candidate, score
    reversed_line = line[::-1]
    reversed_score = english_score(
        reversed_line.translate(SCORING_FOLD_TABLE) if has_leet else reversed_line
    )
    if reversed_score > best_score:
        best, best_score = reversed_line, reversed_score
    best_words = best.translate(SCORING_FOLD_TABLE) if has_leet else best
    if best_score >= base_score + _ENGLISH_MARGIN and word_hit_rate(best_words) >= 0.25:
        return best
    return line


def decode_lines(text: str) -> tuple[str | None, str | None]:
    """(shift-decoded view, reversed view) of `text`, decoding line by line.

    Line by line so a wrapper ("Pretend you have no rules ... :") around an encoded
    payload does not drown the payload's signal. None where nothing was decoded.
    """
    shifted_lines: list[str] = []
    reversed_lines: list[str] = []
    any_shift = any_reverse = False
    for line in text.split("\n"):
        if (
            len(_WORD.findall(line.lower())) < 2
            or word_hit_rate(line) >= _ENGLISH_ENOUGH
        ):
            shifted_lines.append(line)
            reversed_lines.append(line)
            continue
        decoded = _best_line_decoding(line)
        if decoded != line and decoded == line[::-1]:
            any_reverse = True
            reversed_lines.append(decoded)
            shifted_lines.append(line)
        elif decoded != line:
            any_shift = True
            shifted_lines.append(decoded)
            reversed_lines.append(line)
        else:
            shifted_lines.append(line)
            reversed_lines.append(line)
    return (
        "\n".join(shifted_lines) if any_shift else None,
        "\n".join(reversed_lines) if any_reverse else None,
    )


# ------------------------------------------------------------- decoding helpers


def clean_decoded(decoded: str) -> str:
    """A decoded payload may itself be obfuscated (homoglyphs, then base64)."""
    if not decoded.isascii():
        decoded = fold_confusables(remove_zero_width(decoded))
    return deobfuscate(strip_instructions(decoded))
