"""Canonical views of a prompt: undo cheap obfuscations before the input classifier.

Attackers hide a request behind encodings (base64, ROT13, Caesar shifts, reversed
text) and obfuscations (homoglyphs, zero-width characters, leetspeak, spaced-out
letters). The input classifier scores every view returned by `canonical_views` and
takes the maximum, so a request it would block in plain text is blocked encoded too.

Design constraints:
- Pure Python, no model: this runs on every request, so the plain-English path is a
  handful of regex scans (tens of microseconds) and the decoders only run on lines
  that do not already read as English.
- Views are extra evidence: the original text is always the first view and is
  scored too, except where a view decodes it (base64, a letter shift, a reversal).
  An encoded surface means nothing to a sentence encoder, so it is left out of the
  max; the decoders only fire on lines that do not read as English, and decoded
  views keep the lines that did.

The tables here (confusables, leetspeak, zero-width characters) are shared with
`augment.py`, so every obfuscation the augmenter produces is folded back here.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import logging
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from classifiers.ml.frames import strip_known_frame

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- tables

# Characters that render as nothing; attackers sprinkle them inside words to break
# tokenisation. U+00AD (soft hyphen) and U+FEFF (BOM) behave the same way.
ZERO_WIDTH_CHARS: tuple[str, ...] = (
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
    "\u180e",
)

# Latin letter -> visually identical non-Latin letters (Cyrillic, Greek). The augmenter
# draws from this table; the fold map below is its exact inverse plus a few extras.
HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    "a": ("\u0430",),  # Cyrillic a
    "c": ("\u0441",),  # Cyrillic es
    "e": ("\u0435",),  # Cyrillic ie
    "i": ("\u0456",),  # Ukrainian i
    "j": ("\u0458",),  # Cyrillic je
    "o": ("\u043e", "\u03bf"),  # Cyrillic o, Greek omicron
    "p": ("\u0440",),  # Cyrillic er
    "s": ("\u0455",),  # Cyrillic dze
    "x": ("\u0445",),  # Cyrillic ha
    "y": ("\u0443",),  # Cyrillic u
    "A": ("\u0410", "\u0391"),
    "B": ("\u0412", "\u0392"),
    "C": ("\u0421",),
    "E": ("\u0415", "\u0395"),
    "H": ("\u041d", "\u0397"),
    "I": ("\u0406", "\u0399"),
    "K": ("\u041a", "\u039a"),
    "M": ("\u041c", "\u039c"),
    "O": ("\u041e", "\u039f"),
    "P": ("\u0420", "\u03a1"),
    "T": ("\u0422", "\u03a4"),
    "X": ("\u0425", "\u03a7"),
}

_EXTRA_CONFUSABLES: dict[str, str] = {
    "\u0501": "d",  # Cyrillic komi de
    "\u04bb": "h",  # Cyrillic shha
    "\u0261": "g",  # Latin script g
    "\u03bd": "v",  # Greek nu
    "\u0391": "A",
    "\u03b9": "i",  # Greek iota
    "\u03ba": "k",  # Greek kappa
    "\u0432": "b",  # Cyrillic ve (small caps B look)
    "\u043c": "m",
    "\u043d": "h",
    "\u0442": "t",
}

CONFUSABLE_FOLD: dict[str, str] = {
    glyph: latin for latin, glyphs in HOMOGLYPHS.items() for glyph in glyphs
} | _EXTRA_CONFUSABLES

# Letter -> leetspeak substitutes used by the augmenter. Kept injective (no letter
# shares a digit with another) so folding back is exact.
LEET: dict[str, tuple[str, ...]] = {
    "a": ("4", "@"),
    "b": ("8",),
    "e": ("3",),
    "g": ("9",),
    "i": ("1",),
    "o": ("0",),
    "s": ("5", "$"),
    "t": ("7",),
}
LEET_FOLD: dict[str, str] = {
    sub: letter for letter, subs in LEET.items() for sub in subs
}

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
_ANY_WORD = re.compile(r"\w+")
_BASE64_SEGMENT = re.compile(
    r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{12,}={0,2}(?![A-Za-z0-9+/=_-])"
)
_MIXED_CASE_TOKEN = re.compile(r"\b[A-Za-z]*[a-z][A-Z][A-Za-z]*\b")
_LEET_CHARS = "".join(LEET_FOLD)
_LEETY_TOKEN = re.compile(rf"(?=\S*[A-Za-z])(?=\S*[{re.escape(_LEET_CHARS)}])\S+")
# A run of >=3 single characters separated by one repeated separator ("w i d g e t",
# "w-i-d-g-e-t"): the output of the `spacing` transform.
_SPACED_LETTERS = re.compile(
    r"(?<![\w.\-*|/~·])\w(?:([ .\-_*|/~·])\w)(?:\1\w)+(?![\w.\-*|/~·])"
)
# A separator squeezed between two letters inside a word ("wid-get", "forb_idden").
_IN_WORD_SEPARATOR = re.compile(r"(?<=[A-Za-z])[-_·~*|/](?=[A-Za-z])")
_MULTI_SPACE = re.compile(r"[ \t]{2,}")
_ZERO_WIDTH_TABLE = {ord(c): None for c in ZERO_WIDTH_CHARS}
_CONFUSABLE_TABLE = str.maketrans(CONFUSABLE_FOLD)
_LEET_TABLE = str.maketrans(LEET_FOLD)
_SCORING_FOLD_TABLE = str.maketrans(CONFUSABLE_FOLD | LEET_FOLD)

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


# ------------------------------------------------------------------ single decoders


def remove_zero_width(text: str) -> str:
    return text.translate(_ZERO_WIDTH_TABLE)


def fold_confusables(text: str) -> str:
    """NFKC (fullwidth, math letters, ligatures) then fold Cyrillic/Greek lookalikes.

    A token is folded only if it already contains a Latin letter or consists solely of
    foldable lookalikes, so genuine Cyrillic or Greek words are left alone.
    """
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    out: list[str] = []
    for token in re.split(r"(\s+)", text):
        if token.isascii() or token.isspace():
            out.append(token)
            continue
        folded = token.translate(_CONFUSABLE_TABLE)
        has_latin = any("a" <= ch.lower() <= "z" for ch in token)
        all_foldable = all(ch.isascii() or not ch.isalpha() for ch in folded)
        out.append(folded if has_latin or all_foldable else token)
    return "".join(out)


def fold_case(text: str) -> str:
    """Lower-case text whose words have random internal capitals ("hOw dO i")."""
    mixed = len(_MIXED_CASE_TOKEN.findall(text))
    if mixed >= 2 or (mixed == 1 and len(text.split()) <= 3):
        return text.lower()
    return text


def _looks_base64(token: str) -> bool:
    return len(token) >= 16 and _BASE64_SEGMENT.fullmatch(token) is not None


def fold_leetspeak(text: str) -> str:
    """Map 4->a, 3->e, 0->o, ... when the text looks like leetspeak.

    Decided line by line (a leetspeak payload may sit inside an English wrapper).
    A line looks like leetspeak when a fifth of its tokens mix letters with leet
    characters; then every token with a letter and every all-leet token ("4" for
    "a", "8357" for "best") is folded. Numbers with other digits stay numbers.
    """
    if "\n" in text:
        return "\n".join(fold_leetspeak(line) for line in text.split("\n"))
    tokens = text.split()
    leety = sum(
        bool(_LEETY_TOKEN.fullmatch(t)) and not _looks_base64(t) for t in tokens
    )
    if leety == 0 or leety < 0.2 * len(tokens):
        return text

    def fold(match: re.Match[str]) -> str:
        token = match.group(0)
        if _looks_base64(token):
            return token  # folding digits would corrupt an encoded payload
        has_letter = any(ch.isalpha() for ch in token)
        all_leet = all(ch in LEET_FOLD for ch in token)
        return token.translate(_LEET_TABLE) if has_letter or all_leet else token

    return re.sub(r"\S+", fold, text)


def join_split_letters(text: str) -> str:
    """Join "w i d g e t" / "w-i-d-g-e-t" runs and in-word separators ("wid-get")."""
    joined = _SPACED_LETTERS.sub(lambda m: m.group(0).replace(m.group(1), ""), text)
    # Several in-word separators, relative to the word count, mean split words;
    # one "well-known" or "and/or" in a sentence does not.
    lines = joined.split("\n")
    for i, line in enumerate(lines):
        separators = len(_IN_WORD_SEPARATOR.findall(line))
        if separators >= 2 and separators >= 0.15 * len(line.split()):
            lines[i] = _IN_WORD_SEPARATOR.sub("", line)
    return _MULTI_SPACE.sub(" ", "\n".join(lines))


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


def _only_instructions(line: str) -> bool:
    words = _ANY_WORD.findall(line.casefold())
    return all(w in _INSTRUCTION_WORDS or w.isdigit() for w in words)


def strip_instructions(text: str) -> str:
    """Drop "Decode this and answer:"-style lines; keep the rest."""
    stripped = _INSTRUCTION_LINE.sub(
        lambda m: "" if _only_instructions(m.group(0)) else m.group(0), text
    )
    return stripped.strip() if stripped.strip() else text


def deobfuscate(text: str) -> str:
    """Case, leetspeak and split-letter folding (after confusables are folded)."""
    return join_split_letters(fold_leetspeak(fold_case(text)))


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

    out = _BASE64_SEGMENT.sub(decode, text)
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
            score = english_score(candidate.translate(_SCORING_FOLD_TABLE))
        else:
            score = 0.6 * word_hit_rate(candidate) + 0.4 * _letter_cosine(rotated)
        if score > best_score:
            best, best_score = candidate, score
    reversed_line = line[::-1]
    reversed_score = english_score(
        reversed_line.translate(_SCORING_FOLD_TABLE) if has_leet else reversed_line
    )
    if reversed_score > best_score:
        best, best_score = reversed_line, reversed_score
    best_words = best.translate(_SCORING_FOLD_TABLE) if has_leet else best
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


# ------------------------------------------------------------------------ the API


def _clean_decoded(decoded: str) -> str:
    """A decoded payload may itself be obfuscated (homoglyphs, then base64)."""
    if not decoded.isascii():
        decoded = fold_confusables(remove_zero_width(decoded))
    return deobfuscate(strip_instructions(decoded))


# Where a framed request starts: after the last colon or line break.
_FRAME_BREAK = re.compile(r":\s+|\n\s*")


def framed_request(
    text: str, *, min_frame_words: int = 8, min_request_words: int = 3
) -> str | None:
    """The request at the end of a "<long framing>: <request>" prompt, else None.

    Most jailbreak wrappers have that shape (a persona or "you have no rules"
    preamble, then the request after a colon or on its own last line). A
    mean-pooled sentence embedding of the whole prompt dilutes a short request in
    a long frame; scored alone, the request scores as it would unwrapped.
    """
    breaks = list(_FRAME_BREAK.finditer(text.strip()))
    if not breaks:
        return None
    last = breaks[-1]
    frame, request = text.strip()[: last.start()], text.strip()[last.end() :].strip()
    if len(_ANY_WORD.findall(frame)) < min_frame_words:
        return None
    if len(_ANY_WORD.findall(request)) < min_request_words or _only_instructions(request):
        return None
    return request


@dataclass(frozen=True)
class PromptViews:
    """A prompt's canonical views, and which of them are worth scoring."""

    texts: tuple[str, ...]  # the original first, then distinct views
    # Views that decode into another view (base64, a letter shift, a reversal):
    # their surface form is an encoding, which means nothing to a sentence encoder
    # and scores as noise (benign base64 scored 0.93-0.97 on cbrn-demo, above the
    # 1% FPR threshold). What they decode to is scored instead.
    encoded: frozenset[int] = frozenset()
    # Views that are one of the augmenter's known jailbreak frames around another
    # view (frames.strip_known_frame). The frame is fixed text with no content of
    # its own, and scoring it scored the frame: benign questions in such frames
    # set cbrn-demo's deployment threshold. The request taken out of the frame is
    # scored instead of the framed surface.
    framed: frozenset[int] = frozenset()

    @property
    def scored(self) -> list[int]:
        """Indexes of the views to score (all of them if none is plain)."""
        skipped = self.encoded | self.framed
        plain = [i for i in range(len(self.texts)) if i not in skipped]
        return plain or list(range(len(self.texts)))


def prompt_views(
    text: str, *, max_views: int = 8, known_frames: bool = True
) -> PromptViews:
    """The original text, then distinct de-obfuscated / decoded views of it.

    Plain text gives just itself. Decoded views have the encoder's instruction line
    stripped, so a base64-encoded request yields the request itself as a view; a
    request inside a long jailbreak frame yields the request alone as a view, and
    its decodings too when the request alone was encoded. With known_frames, a view
    that is one of the augmenter's own frames is replaced by its request (see
    PromptViews.framed); known_frames=False scores the framed text too (the max
    over it and its request), the rule before session 9, which `bench label_audit
    --frames-ablation` compares.
    """
    views: list[str] = [text]
    encoded: set[int] = set()
    framed: dict[int, str] = {}  # framed view's index -> the request inside it

    def add(view: str | None) -> None:
        if view is not None and view.strip() and view not in views:
            views.append(view)

    def decode(source: str) -> None:
        surfaces = _add_decodings(source, add)
        encoded.update(views.index(v) for v in surfaces if v in views)

    decode(text)
    # Jailbreak frames, on the original, its foldings and every decoding; last, so
    # decodings win the view budget. A view that still folds (leetspeak, homoglyphs)
    # is framed through its folded form only: a raw leetspeak request alone reads
    # unlike any training text and scored 0.98 for a benign physics question.
    for view in list(views):
        known = _known_request(view) if known_frames else None
        folds = _fold(view) != view
        if known is not None:
            # A view that still folds is framed through its folded form (a view
            # of its own, visited in this loop): its raw request is not added.
            if not folds:
                framed[views.index(view)] = known
                # Decoded even when an earlier decoding already added it as a view:
                # that one was not decoded further (rot13 in base64 in a frame).
                add(known)
                decode(known)
                continue
            inner = _known_request(_fold(view))
            if inner is not None:
                framed[views.index(view)] = inner
            continue
        if folds:
            continue
        request = framed_request(view)
        if request is None or request in views:
            continue
        add(request)
        decode(request)
    kept = views[:max_views]
    # A frame counts as taken off only when its request made the view budget.
    unframed = {i for i, request in framed.items() if request in kept}
    return PromptViews(
        tuple(kept),
        frozenset(i for i in encoded if i < len(kept)),
        frozenset(i for i in unframed if i < len(kept)),
    )


def _known_request(view: str) -> str | None:
    """The request inside a known frame, an encoder's instruction line dropped
    (as every decoded view has it dropped), else None."""
    request = strip_known_frame(view)
    return None if request is None else strip_instructions(request)


def canonical_views(text: str, *, max_views: int = 8) -> list[str]:
    """The original text, then distinct de-obfuscated / decoded views of it."""
    return list(prompt_views(text, max_views=max_views).texts)


def _fold(text: str) -> str:
    return deobfuscate(fold_confusables(remove_zero_width(text)))


def _add_decodings(text: str, add: Callable[[str | None], None]) -> list[str]:
    """Add the folded and decoded views of `text`. Returns the encoded surfaces:
    `text` or those of its foldings that something decoded from."""
    # Lossless-ish folding: invisible characters and lookalike letters.
    visible = remove_zero_width(text)
    light = fold_confusables(visible) if not text.isascii() else text
    deobfuscated = deobfuscate(light)
    # Each base the decoders read, and the views that stand for it.
    surfaces: dict[str, list[str]] = {visible: [text]}
    if light != text:
        add(strip_instructions(light))
        surfaces.setdefault(light, []).append(strip_instructions(light))
    if deobfuscated != light:
        add(strip_instructions(deobfuscated))
        surfaces.setdefault(deobfuscated, []).append(strip_instructions(deobfuscated))
    encoded: list[str] = []

    # base64 first on the case-preserving text: folding would corrupt the payload.
    # Every folding still carries the blob, so all of them are encoded surfaces.
    decoded64 = decode_base64_segments(light)
    if decoded64 is not None:
        encoded += [view for views in surfaces.values() for view in views]
        add(_clean_decoded(decoded64))

    # Shifts and reversal on the unfolded and folded texts: an obfuscation applied
    # before the cipher must be undone after decoding (the cipher leaves homoglyphs
    # alone), one applied after it must be undone before. Only the base a decoding
    # came from is an encoded surface: raw leetspeak can "decode" as a Caesar shift
    # into gibberish while its folded form, the plain request, must stay scored.
    for base in dict.fromkeys((visible, light, deobfuscated)):
        shifted, reversed_view = decode_lines(strip_instructions(base))
        for decoded in (shifted, reversed_view):
            if decoded is not None:
                encoded += surfaces[base]
                add(_clean_decoded(decoded))
    return encoded
