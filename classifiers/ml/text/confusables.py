"""Confusables: zero-width characters, homoglyphs, leetspeak and split letters.

The tables (ZERO_WIDTH_CHARS, HOMOGLYPHS, CONFUSABLE_FOLD, LEET, LEET_FOLD) are
shared with the augmenter (data/rewrites.py), so every obfuscation it produces is
folded back here; the folds (`remove_zero_width`, `fold_confusables`, `fold_case`,
`fold_leetspeak`, `join_split_letters`, and `deobfuscate` chaining the last three)
are what text/canonical.py applies before the input classifier reads a prompt.
"""

from __future__ import annotations

import json
import re
import unicodedata

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


def tr39_letter_fold() -> dict[str, str]:
    """Unicode TR39 confusables that look like one ASCII letter and survive NFKC
    (497 in Unicode's confusables.txt as shipped by confusable_homoglyphs: Greek,
    Cyrillic, Armenian, Cherokee, Latin small capitals, ...). NFKC already folds
    fullwidth and mathematical letters; these it leaves alone."""
    from importlib import resources

    raw = (
        resources.files("confusable_homoglyphs")
        .joinpath("confusables.json")
        .read_text(encoding="utf-8")
    )
    fold = {}
    for char, glyphs in json.loads(raw).items():
        if (
            len(char) != 1
            or char.isascii()
            or unicodedata.normalize("NFKC", char).isascii()
        ):
            continue
        letters = [
            g["c"]
            for g in glyphs
            if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalpha()
        ]
        if letters:
            fold[char] = letters[0]
    return fold


# The augmenter's look-alikes and a few more: the only ones folded in a token of
# another script alone (see fold_confusables).
HAND_FOLD: dict[str, str] = {
    glyph: latin for latin, glyphs in HOMOGLYPHS.items() for glyph in glyphs
} | _EXTRA_CONFUSABLES

# The hand-made table wins where the two differ: TR39 maps Cyrillic and Greek
# capital I to "l" (its prototype for I/l/1), which reads worse than "I".
CONFUSABLE_FOLD: dict[str, str] = tr39_letter_fold() | HAND_FOLD


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


ANY_WORD = re.compile(r"\w+")


BASE64_SEGMENT = re.compile(
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


_HAND_TABLE = str.maketrans(HAND_FOLD)


_LEET_TABLE = str.maketrans(LEET_FOLD)


SCORING_FOLD_TABLE = str.maketrans(CONFUSABLE_FOLD | LEET_FOLD)


# ------------------------------------------------------------------------ folds


def remove_zero_width(text: str) -> str:
    return text.translate(_ZERO_WIDTH_TABLE)


def fold_confusables(text: str) -> str:
    """NFKC (fullwidth, math letters, ligatures) then fold look-alike letters.

    A token with a Latin letter (mixed script: "wid\u0261et") is folded with the
    whole table, Unicode TR39's letter look-alikes included. A token without one is
    folded only when the hand-made table maps every letter of it ("\u0441\u043e\u0440"
    -> "cop"): TR39 maps so many Cyrillic and Greek letters that genuine words
    ("\u0435\u0433\u043e", "\u03b3\u03b9\u03b1") would turn into Latin gibberish.
    """
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    out: list[str] = []
    for token in re.split(r"(\s+)", text):
        if token.isascii() or token.isspace():
            out.append(token)
            continue
        if any("a" <= ch.lower() <= "z" for ch in token):
            out.append(token.translate(_CONFUSABLE_TABLE))
            continue
        folded = token.translate(_HAND_TABLE)
        all_foldable = all(ch.isascii() or not ch.isalpha() for ch in folded)
        out.append(folded if all_foldable else token)
    return "".join(out)


def fold_case(text: str) -> str:
    """Lower-case text whose words have random internal capitals ("hOw dO i")."""
    mixed = len(_MIXED_CASE_TOKEN.findall(text))
    if mixed >= 2 or (mixed == 1 and len(text.split()) <= 3):
        return text.lower()
    return text


def _looks_base64(token: str) -> bool:
    return len(token) >= 16 and BASE64_SEGMENT.fullmatch(token) is not None


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


def deobfuscate(text: str) -> str:
    """Case, leetspeak and split-letter folding (after confusables are folded)."""
    return join_split_letters(fold_leetspeak(fold_case(text)))
