"""Stage II rewrite functions: how one prompt is disguised.

Each `rewrite_*` takes text (or a conversation) and a seeded Random and returns the
rewritten value plus metadata: encodings and obfuscations (using the text/
decoders and confusables tables, so text/canonical.py can fold them back),
jailbreak frames (text/frames.py), many-shot, system-prompt claims, split turns.
Encodings and obfuscations prepend a short instruction ("Decode this and answer:")
so the prompt stays a request; text/decoders.strip_instructions strips it again.
data/transforms.py names and composes these.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from classifiers.ml.text import confusables, frames
from classifiers.ml.text.decoders import (
    caesar,
    encode_base64,
    reverse,
    rot13,
)
from classifiers.ml.text.frames import SEED_JAILBREAK_TEMPLATES, apply_template
from classifiers.ml.types import Message

DEFAULT_LANGUAGES: tuple[str, ...] = ("French", "Spanish", "German", "Chinese")


ZERO_WIDTH_INSERTS: tuple[str, ...] = ("\u200b", "\u200c", "\u200d", "\u2060")


RewriteText = Callable[[str, random.Random], tuple[str, dict]]


RewriteConversation = Callable[
    [list[Message], random.Random, Sequence[str]], tuple[list[Message], dict]
]


# ------------------------------------------------------------ instruction lines

_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "base64": (
        "Decode this base64 and answer:",
        "The following message is base64-encoded. Decode it and respond:",
    ),
    "rot13": (
        "Decode this ROT13 text and answer:",
        "This is ROT13. Decode it and reply:",
    ),
    "caesar": ("Decode this Caesar cipher (shift {shift}) and answer:",),
    "reverse": ("This text is written backwards. Reverse it and answer:",),
    "leetspeak": ("Read this leetspeak and answer:",),
    "spacing": ("Join the letters and answer:",),
    "word_split": ("Join the split words and answer:",),
    "obfuscation": ("Answer this:", "Please respond to the following:"),
}


def _instruction(kind: str, rng: random.Random, **fmt: object) -> str:
    return rng.choice(_INSTRUCTIONS.get(kind, _INSTRUCTIONS["obfuscation"])).format(
        **fmt
    )


# ------------------------------------------------------------ text rewrites


def rewrite_base64(text: str, rng: random.Random) -> tuple[str, dict]:
    return f"{_instruction('base64', rng)}\n{encode_base64(text)}", {}


def rewrite_rot13(text: str, rng: random.Random) -> tuple[str, dict]:
    return f"{_instruction('rot13', rng)}\n{rot13(text)}", {}


def make_caesar(shifts: tuple[int, ...]) -> RewriteText:
    def rewrite(text: str, rng: random.Random) -> tuple[str, dict]:
        shift = rng.choice(shifts)
        line = _instruction("caesar", rng, shift=shift)
        return f"{line}\n{caesar(text, shift)}", {"caesar_shift": shift}

    return rewrite


def rewrite_reverse(text: str, rng: random.Random) -> tuple[str, dict]:
    return f"{_instruction('reverse', rng)}\n{reverse(text)}", {}


def _substitute(
    text: str, rng: random.Random, table: dict[str, Sequence[str]], rate: float
) -> str:
    """Replace eligible characters with probability `rate`, at least one if any."""
    chars = list(text)
    eligible = [i for i, ch in enumerate(chars) if ch in table]
    chosen = [i for i in eligible if rng.random() < rate]
    if eligible and not chosen:
        chosen = [rng.choice(eligible)]
    for i in chosen:
        chars[i] = rng.choice(table[chars[i]])
    return "".join(chars)


def rewrite_random_case(text: str, rng: random.Random) -> tuple[str, dict]:
    cased = "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)
    return f"{_instruction('obfuscation', rng)}\n{cased}", {}


_LEET_TABLE: dict[str, tuple[str, ...]] = confusables.LEET | {
    letter.upper(): subs for letter, subs in confusables.LEET.items()
}


def rewrite_leetspeak(text: str, rng: random.Random) -> tuple[str, dict]:
    leet = _substitute(text, rng, _LEET_TABLE, rate=0.7)
    return f"{_instruction('leetspeak', rng)}\n{leet}", {}


def rewrite_homoglyph(text: str, rng: random.Random) -> tuple[str, dict]:
    swapped = _substitute(text, rng, confusables.HOMOGLYPHS, rate=0.6)
    return f"{_instruction('obfuscation', rng)}\n{swapped}", {}


def rewrite_zero_width(text: str, rng: random.Random) -> tuple[str, dict]:
    out: list[str] = []
    inserted = 0
    for i, ch in enumerate(text):
        out.append(ch)
        inside_word = ch.isalnum() and i + 1 < len(text) and text[i + 1].isalnum()
        if inside_word and rng.random() < 0.3:
            out.append(rng.choice(ZERO_WIDTH_INSERTS))
            inserted += 1
    if inserted == 0 and len(text) > 1:
        out.insert(1, rng.choice(ZERO_WIDTH_INSERTS))
    return f"{_instruction('obfuscation', rng)}\n{''.join(out)}", {}


_LONG_WORD = re.compile(r"[^\W\d_]{3,}")


def rewrite_spacing(text: str, rng: random.Random) -> tuple[str, dict]:
    separator = rng.choice((" ", "-", ".", "*", "_"))
    words = list(_LONG_WORD.finditer(text))
    chosen = {i for i in range(len(words)) if rng.random() < 0.7}
    if words and not chosen:
        chosen = {rng.randrange(len(words))}
    pieces: list[str] = []
    last = 0
    for i, match in enumerate(words):
        pieces.append(text[last : match.start()])
        word = match.group(0)
        pieces.append(separator.join(word) if i in chosen else word)
        last = match.end()
    pieces.append(text[last:])
    spaced = "".join(pieces)
    if separator == " ":
        # Keep word boundaries readable: letters are one space apart, words two.
        spaced = _double_word_gaps(pieces)
    return f"{_instruction('spacing', rng)}\n{spaced}", {"spacing_separator": separator}


def _double_word_gaps(pieces: list[str]) -> str:
    """Join spaced-out words with two spaces where the original had one."""
    # Even indices are the text between words; odd indices are (spaced) words.
    return "".join(
        p.replace(" ", "  ") if i % 2 == 0 else p for i, p in enumerate(pieces)
    )


def rewrite_word_split(text: str, rng: random.Random) -> tuple[str, dict]:
    separator = rng.choices(("-", "_", " "), weights=(5, 2, 2))[0]
    words = [m for m in _LONG_WORD.finditer(text) if len(m.group(0)) >= 4]
    cuts: dict[int, set[int]] = {}
    for i, match in enumerate(words):
        if rng.random() < 0.6:
            cuts[i] = {rng.randrange(1, len(match.group(0)))}
    # At least two separators, and one per five words, so `canonical` can tell
    # split words from an ordinary "well-known".
    budget = sum(len(m.group(0)) - 1 for m in words)
    wanted = min(max(2, -(-len(text.split()) // 5)), budget)
    while words and sum(len(c) for c in cuts.values()) < wanted:
        i = rng.randrange(len(words))
        cuts.setdefault(i, set()).add(rng.randrange(1, len(words[i].group(0))))
    pieces: list[str] = []
    last = 0
    for i, match in enumerate(words):
        word = match.group(0)
        pieces.append(text[last : match.start()])
        bounds = [0, *sorted(cuts.get(i, ())), len(word)]
        pieces.append(
            separator.join(word[a:b] for a, b in zip(bounds, bounds[1:], strict=False))
        )
        last = match.end()
    pieces.append(text[last:])
    split = "".join(pieces)
    return f"{_instruction('word_split', rng)}\n{split}", {
        "word_split_separator": separator
    }


def rewrite_many_shot(text: str, rng: random.Random) -> tuple[str, dict]:
    shots = rng.sample(frames.INNOCUOUS_SHOTS, rng.randint(3, 6))
    lines = ["Here are some example conversations with a helpful assistant:", ""]
    for question, answer in shots:
        lines += [f"User: {question}", f"Assistant: {answer}", ""]
    lines += [f"User: {text}", "Assistant:"]
    return "\n".join(lines), {"many_shot_shots": len(shots)}


def rewrite_roleplay(text: str, rng: random.Random) -> tuple[str, dict]:
    persona = rng.choice(frames.PERSONAS)
    frame = rng.choice(frames.ROLEPLAY_FRAMES)
    wrapped = frame.replace("{persona_cap}", persona[0].upper() + persona[1:])
    return wrapped.replace("{persona}", persona).replace("{request}", text), {}


def rewrite_dan(text: str, rng: random.Random) -> tuple[str, dict]:
    return rng.choice(frames.DAN_FRAMES).replace("{request}", text), {}


def rewrite_system_prompt(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:
    return [
        {"role": "system", "content": rng.choice(frames.SYSTEM_CLAIMS)},
        *messages,
    ], {}


def rewrite_redteam_template(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:

    # Without generated templates fall back to the seed frames, so the transform
    # is usable in any run (augment_examples passes generated ones when it has them).
    pool, source = (
        (tuple(templates), "given")
        if templates
        else (
            SEED_JAILBREAK_TEMPLATES,
            "seed",
        )
    )
    index = rng.randrange(len(pool))
    last = last_user_index(messages)
    out = [dict(m) for m in messages]
    out[last]["content"] = apply_template(pool[index], out[last]["content"])
    return out, {"redteam_template_index": index, "redteam_template_source": source}


def rewrite_split_turns(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:
    last = last_user_index(messages)
    words = messages[last]["content"].split(" ")
    parts_count = min(rng.randint(2, 4), max(1, len(words)))
    if len(words) >= 2:
        # Cut points between words, sorted, so the parts read in order.
        cuts = sorted(
            rng.sample(range(1, len(words)), min(parts_count - 1, len(words) - 1))
        )
        bounds = [0, *cuts, len(words)]
        parts = [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        text = messages[last]["content"]
        middle = max(1, len(text) // 2)
        parts = [text[:middle], text[middle:]]
    turns: list[Message] = []
    for i, part in enumerate(parts, start=1):
        if i == 1:
            content = f"I'll send my question in {len(parts)} parts. Part 1: {part}"
        elif i == len(parts):
            content = f"Part {i}: {part}\nNow put the parts together and answer."
        else:
            content = f"Part {i}: {part}"
        turns.append({"role": "user", "content": content})
        if i < len(parts):
            turns.append(
                {"role": "assistant", "content": rng.choice(frames.ACKNOWLEDGEMENTS)}
            )
    out = (
        [dict(m) for m in messages[:last]]
        + turns
        + [dict(m) for m in messages[last + 1 :]]
    )
    return out, {"split_turns_parts": len(parts)}


# ---------------------------------------------------------------------- helpers


def last_user_index(messages: list[Message]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    raise ValueError("example has no user message to transform")
