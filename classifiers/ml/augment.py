"""Stage II augmentation: named, seeded, composable transforms over `Example`s.

Constitutional Classifiers train on synthetic queries pushed through the kinds of
rewrites attackers use (encodings, obfuscations, jailbreak wrappers, multi-turn
splits, paraphrases, translations). Every transform here returns a NEW Example with
the same label/category/source_id, its name appended to `transform`, and the prompt
changed; benign and harmful examples go through exactly the same transforms, so the
classifier has to learn intent rather than "encoded means harmful".

Text transforms rewrite the content of the LAST user message. Encodings and
obfuscations prepend a short instruction ("Decode this and answer:") so the prompt
stays a request; `canonical.py` strips those lines again when it decodes.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from classifiers.ml import canonical, redteam

# The raw encoders live next to their decoders in canonical.py; re-exported here.
from classifiers.ml.canonical import DECODERS as DECODERS
from classifiers.ml.canonical import ENCODERS as ENCODERS
from classifiers.ml.canonical import (
    caesar,
    encode_base64,
    reverse,
    rot13,
)
from classifiers.ml.types import (
    ChatGenerator,
    Example,
    Message,
    check_cancelled,
)

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGES: tuple[str, ...] = ("French", "Spanish", "German", "Chinese")
LLM_BATCH_SIZE = 16  # conversations per llm.chat call in augment_examples
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


def _rewrite_base64(text: str, rng: random.Random) -> tuple[str, dict]:
    return f"{_instruction('base64', rng)}\n{encode_base64(text)}", {}


def _rewrite_rot13(text: str, rng: random.Random) -> tuple[str, dict]:
    return f"{_instruction('rot13', rng)}\n{rot13(text)}", {}


def _make_caesar(shifts: tuple[int, ...]) -> RewriteText:
    def rewrite(text: str, rng: random.Random) -> tuple[str, dict]:
        shift = rng.choice(shifts)
        line = _instruction("caesar", rng, shift=shift)
        return f"{line}\n{caesar(text, shift)}", {"caesar_shift": shift}

    return rewrite


def _rewrite_reverse(text: str, rng: random.Random) -> tuple[str, dict]:
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


def _rewrite_random_case(text: str, rng: random.Random) -> tuple[str, dict]:
    cased = "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in text)
    return f"{_instruction('obfuscation', rng)}\n{cased}", {}


_LEET_TABLE: dict[str, tuple[str, ...]] = canonical.LEET | {
    letter.upper(): subs for letter, subs in canonical.LEET.items()
}


def _rewrite_leetspeak(text: str, rng: random.Random) -> tuple[str, dict]:
    leet = _substitute(text, rng, _LEET_TABLE, rate=0.7)
    return f"{_instruction('leetspeak', rng)}\n{leet}", {}


def _rewrite_homoglyph(text: str, rng: random.Random) -> tuple[str, dict]:
    swapped = _substitute(text, rng, canonical.HOMOGLYPHS, rate=0.6)
    return f"{_instruction('obfuscation', rng)}\n{swapped}", {}


def _rewrite_zero_width(text: str, rng: random.Random) -> tuple[str, dict]:
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


def _rewrite_spacing(text: str, rng: random.Random) -> tuple[str, dict]:
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


def _rewrite_word_split(text: str, rng: random.Random) -> tuple[str, dict]:
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


def _rewrite_many_shot(text: str, rng: random.Random) -> tuple[str, dict]:
    shots = rng.sample(redteam.INNOCUOUS_SHOTS, rng.randint(3, 6))
    lines = ["Here are some example conversations with a helpful assistant:", ""]
    for question, answer in shots:
        lines += [f"User: {question}", f"Assistant: {answer}", ""]
    lines += [f"User: {text}", "Assistant:"]
    return "\n".join(lines), {"many_shot_shots": len(shots)}


def _rewrite_roleplay(text: str, rng: random.Random) -> tuple[str, dict]:
    persona = rng.choice(redteam.PERSONAS)
    frame = rng.choice(redteam.ROLEPLAY_FRAMES)
    wrapped = frame.replace("{persona_cap}", persona[0].upper() + persona[1:])
    return wrapped.replace("{persona}", persona).replace("{request}", text), {}


def _rewrite_dan(text: str, rng: random.Random) -> tuple[str, dict]:
    return rng.choice(redteam.DAN_FRAMES).replace("{request}", text), {}


def _rewrite_system_prompt(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:
    return [
        {"role": "system", "content": rng.choice(redteam.SYSTEM_CLAIMS)},
        *messages,
    ], {}


def _rewrite_redteam_template(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:
    from classifiers.ml.redteam import SEED_JAILBREAK_TEMPLATES, apply_template

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
    last = _last_user_index(messages)
    out = [dict(m) for m in messages]
    out[last]["content"] = apply_template(pool[index], out[last]["content"])
    return out, {"redteam_template_index": index, "redteam_template_source": source}


def _rewrite_split_turns(
    messages: list[Message], rng: random.Random, templates: Sequence[str]
) -> tuple[list[Message], dict]:
    last = _last_user_index(messages)
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
                {"role": "assistant", "content": rng.choice(redteam.ACKNOWLEDGEMENTS)}
            )
    out = (
        [dict(m) for m in messages[:last]]
        + turns
        + [dict(m) for m in messages[last + 1 :]]
    )
    return out, {"split_turns_parts": len(parts)}


# ------------------------------------------------------------------- transforms


def _last_user_index(messages: list[Message]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    raise ValueError("example has no user message to transform")


def _derive(
    example: Example, name: str, messages: list[Message], meta: dict
) -> Example:
    chain = (
        name if example.transform in ("", "original") else f"{example.transform}+{name}"
    )
    return replace(
        example, messages=messages, transform=chain, meta={**example.meta, **meta}
    )


@dataclass(frozen=True, kw_only=True)
class Transform:
    name: str  # registry key; appended to Example.transform
    family: str  # a FAMILIES key; a sampled chain never repeats a family
    needs_llm: bool = False  # True: apply() needs a ChatGenerator
    reversible: bool = False  # True: DECODERS[name] recovers the payload exactly

    def apply(
        self,
        example: Example,
        rng: random.Random,
        *,
        llm: ChatGenerator | None = None,
        templates: Sequence[str] = (),
    ) -> Example:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TextTransform(Transform):
    """Rewrites the content of the last user message."""

    rewrite: RewriteText  # (text, rng) -> (new text, meta to merge)

    def apply(
        self,
        example: Example,
        rng: random.Random,
        *,
        llm: ChatGenerator | None = None,
        templates: Sequence[str] = (),
    ) -> Example:
        last = _last_user_index(example.messages)
        messages = [dict(m) for m in example.messages]
        messages[last]["content"], meta = self.rewrite(messages[last]["content"], rng)
        return _derive(example, self.name, messages, meta)


@dataclass(frozen=True, kw_only=True)
class ConversationTransform(Transform):
    """Rewrites the message list (adds system or extra turns)."""

    rewrite: RewriteConversation  # (messages, rng, templates) -> (messages, meta)

    def apply(
        self,
        example: Example,
        rng: random.Random,
        *,
        llm: ChatGenerator | None = None,
        templates: Sequence[str] = (),
    ) -> Example:
        messages, meta = self.rewrite(example.messages, rng, templates)
        return _derive(example, self.name, messages, meta)


_REFUSAL = re.compile(
    r"\b(?:I can(?:no|')t|I cannot|I'm sorry|I am sorry|As an AI|I won't|I'm unable)\b",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(?:here(?:'s| is)[^:\n]*:|(?:paraphrase|rewritten message|rewrite|translation)"
    r"[^:\n]{0,30}:)\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class LLMTransform(Transform):
    """Asks a ChatGenerator to rewrite the last user message (batched by the caller)."""

    needs_llm: bool = True
    instruction: str  # the rewrite request; "{language}" is filled for translate
    languages: tuple[str, ...] = ()  # translate only: picked per example with rng

    def build_request(
        self, text: str, rng: random.Random
    ) -> tuple[list[Message], dict]:
        meta: dict = {}
        instruction = self.instruction
        if self.languages:
            meta["language"] = rng.choice(self.languages)
            instruction = instruction.replace("{language}", meta["language"])
        prompt = f"{instruction} Output only the result.\n\nMessage: {text}"
        return [{"role": "user", "content": prompt}], meta

    def parse_reply(self, reply: str, original: str) -> str | None:
        """The rewritten text, or None when the model refused/echoed/said nothing."""
        text = _PREAMBLE.sub("", reply.strip()).strip().strip('"“”').strip()
        if not text or _REFUSAL.search(text) or text.casefold() == original.casefold():
            return None
        return text

    def finish(self, example: Example, reply: str, meta: dict) -> Example | None:
        last = _last_user_index(example.messages)
        rewritten = self.parse_reply(reply, example.messages[last]["content"])
        if rewritten is None:
            return None
        messages = [dict(m) for m in example.messages]
        messages[last]["content"] = rewritten
        return _derive(example, self.name, messages, meta)

    def apply(
        self,
        example: Example,
        rng: random.Random,
        *,
        llm: ChatGenerator | None = None,
        templates: Sequence[str] = (),
    ) -> Example:
        if llm is None:
            raise ValueError(f"transform {self.name!r} needs an llm (ChatGenerator)")
        last = _last_user_index(example.messages)
        conversation, meta = self.build_request(example.messages[last]["content"], rng)
        reply = llm.chat([conversation], max_new_tokens=128, temperature=0.7, seed=0)[0]
        result = self.finish(example, reply, meta)
        if result is None:
            raise ValueError(f"{self.name}: unusable llm reply {reply[:80]!r}")
        return result


def _text(
    name: str, family: str, rewrite: RewriteText, reversible: bool = False
) -> Transform:
    return TextTransform(
        name=name, family=family, rewrite=rewrite, reversible=reversible
    )


def _conv(name: str, family: str, rewrite: RewriteConversation) -> Transform:
    return ConversationTransform(name=name, family=family, rewrite=rewrite)


def make_translate(languages: Sequence[str] = DEFAULT_LANGUAGES) -> LLMTransform:
    """The `translate` transform for a chosen set of target languages."""
    if not languages:
        raise ValueError("translate needs at least one language")
    return LLMTransform(
        name="translate",
        family="llm",
        instruction="Translate the following message into {language}.",
        languages=tuple(languages),
    )


_ALL: tuple[Transform, ...] = (
    LLMTransform(
        name="paraphrase",
        family="llm",
        instruction="Rewrite the following message in different words, keeping its "
        "meaning and intent exactly.",
    ),
    make_translate(),
    _text("random_case", "obfuscation", _rewrite_random_case),
    _text("leetspeak", "obfuscation", _rewrite_leetspeak),
    _text("homoglyph", "obfuscation", _rewrite_homoglyph),
    _text("zero_width", "obfuscation", _rewrite_zero_width),
    _text("spacing", "obfuscation", _rewrite_spacing),
    _text("word_split", "obfuscation", _rewrite_word_split),
    _text("base64", "encoding", _rewrite_base64, reversible=True),
    _text("rot13", "encoding", _rewrite_rot13, reversible=True),
    _text("caesar", "encoding", _make_caesar((1,)), reversible=True),
    _text("reverse", "encoding", _rewrite_reverse, reversible=True),
    _text("many_shot", "jailbreak", _rewrite_many_shot),
    _text("roleplay_wrapper", "jailbreak", _rewrite_roleplay),
    _text("dan_wrapper", "jailbreak", _rewrite_dan),
    _conv("system_prompt_wrapper", "jailbreak", _rewrite_system_prompt),
    _conv("redteam_template", "jailbreak", _rewrite_redteam_template),
    _conv("split_turns", "multiturn", _rewrite_split_turns),
)
TRANSFORMS: dict[str, Transform] = {t.name: t for t in _ALL}
FAMILIES: dict[str, tuple[str, ...]] = {
    family: tuple(t.name for t in _ALL if t.family == family)
    for family in ("llm", "obfuscation", "encoding", "jailbreak", "multiturn")
}
# Chain order: LLM rewrites need readable text; obfuscating an encoded payload would
# make it undecodable for the target model too; turn splitting comes last. Encoding
# and jailbreak keep their sampled order (base64 of a DAN prompt, or DAN of base64).
_FAMILY_ORDER = {
    "llm": 0,
    "obfuscation": 1,
    "encoding": 2,
    "jailbreak": 2,
    "multiturn": 3,
}


def transform_family(name: str) -> str:
    """The family of one transform name ("original" is its own family)."""
    if name == "original":
        return "original"
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name].family


def _resolve(
    names: Sequence[str], llm: ChatGenerator | None, languages: Sequence[str] | None
) -> list[Transform]:
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(
            f"unknown transform(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(TRANSFORMS)}"
        )
    resolved = [
        make_translate(languages) if n == "translate" and languages else TRANSFORMS[n]
        for n in names
    ]
    needing = [t.name for t in resolved if t.needs_llm]
    if needing and llm is None:
        raise ValueError(
            f"transform(s) {', '.join(needing)} need an llm (ChatGenerator)"
        )
    return resolved


def apply_transforms(
    example: Example,
    names: Sequence[str],
    *,
    rng: random.Random,
    llm: ChatGenerator | None = None,
    templates: Sequence[str] = (),
    languages: Sequence[str] | None = None,
) -> Example:
    """Apply `names` in order to one example (unbatched; see augment_examples)."""
    for transform in _resolve(names, llm, languages):
        example = transform.apply(example, rng, llm=llm, templates=templates)
    return example


def sample_chain(
    transforms: Sequence[str], rng: random.Random, max_chain: int
) -> list[str]:
    """1..max_chain distinct-family transforms, LLM first and multiturn last."""
    families = {transform_family(n) for n in transforms}
    length = min(rng.randint(1, max(1, max_chain)), len(families))
    pool = list(dict.fromkeys(transforms))
    rng.shuffle(pool)
    chain: list[str] = []
    used: set[str] = set()
    for name in pool:
        if len(chain) == length:
            break
        if transform_family(name) not in used:
            chain.append(name)
            used.add(transform_family(name))
    return sorted(chain, key=lambda n: _FAMILY_ORDER[transform_family(n)])


@dataclass
class _Variant:
    """One variant under construction: where it is in its chain, its own rng."""

    example: Example
    chain: list[str]
    rng: random.Random
    position: int = 0
    pending_meta: dict = field(default_factory=dict)
    failed: bool = False


def _run_llm_batch(
    batch: list[_Variant],
    resolved: dict[str, Transform],
    llm: ChatGenerator,
    *,
    seed: int,
) -> None:
    """One llm.chat call for the next (LLM) step of every variant in `batch`."""
    steps: list[LLMTransform] = []
    conversations: list[list[Message]] = []
    for variant in batch:
        transform = resolved[variant.chain[variant.position]]
        assert isinstance(transform, LLMTransform)
        last = _last_user_index(variant.example.messages)
        conversation, variant.pending_meta = transform.build_request(
            variant.example.messages[last]["content"], variant.rng
        )
        steps.append(transform)
        conversations.append(conversation)
    replies = llm.chat(conversations, max_new_tokens=128, temperature=0.7, seed=seed)
    for variant, transform, reply in zip(batch, steps, replies, strict=True):
        result = transform.finish(variant.example, reply, variant.pending_meta)
        if result is None:
            variant.failed = True
            logger.info(
                "dropping %s variant: unusable reply %r", transform.name, reply[:80]
            )
            continue
        variant.example = result
        variant.position += 1


def augment_examples(
    examples: Sequence[Example],
    *,
    transforms: Sequence[str],
    variants_per_example: int,
    seed: int,
    llm: ChatGenerator | None = None,
    templates: Sequence[str] = (),
    max_chain: int = 2,
    languages: Sequence[str] | None = None,
    llm_batch_size: int = LLM_BATCH_SIZE,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[Example]:
    """`variants_per_example` new variants per example (originals not included).

    Each variant is a seeded random chain of 1..max_chain transforms, never two of
    one family. Rule-based steps run immediately; LLM steps of all variants are
    gathered and sent to `llm.chat` in batches of `llm_batch_size`. Variants whose
    LLM reply is unusable (refusal, echo, empty) are dropped and logged. The same
    inputs and seed always give the same list.
    """
    if not transforms:
        raise ValueError("augment_examples needs at least one transform name")
    resolved = {
        t.name: t for t in _resolve(list(dict.fromkeys(transforms)), llm, languages)
    }
    rng = random.Random(seed)
    variants = [
        _Variant(
            example,
            sample_chain(transforms, rng, max_chain),
            random.Random(rng.getrandbits(64)),
        )
        for example in examples
        for _ in range(variants_per_example)
    ]
    total = len(variants)
    batch_index = 0

    def check_cancel() -> None:
        check_cancelled(should_cancel, "augmentation cancelled")

    while True:
        # Advance every variant through rule-based steps up to its next LLM step.
        for variant in variants:
            while not variant.failed and variant.position < len(variant.chain):
                transform = resolved[variant.chain[variant.position]]
                if transform.needs_llm:
                    break
                variant.example = transform.apply(
                    variant.example, variant.rng, templates=templates
                )
                variant.position += 1
        waiting = [v for v in variants if not v.failed and v.position < len(v.chain)]
        done = total - len(waiting)
        if on_progress is not None:
            on_progress(stage="augment", done=done, total=total)
        if not waiting:
            break
        check_cancel()
        for start in range(0, len(waiting), llm_batch_size):
            assert llm is not None  # _resolve guarantees it when an LLM step exists
            batch = waiting[start : start + llm_batch_size]
            _run_llm_batch(batch, resolved, llm, seed=seed + batch_index)
            batch_index += 1
            check_cancel()
    out = [v.example for v in variants if not v.failed]
    if len(out) < total:
        logger.info(
            "augment_examples: %d of %d variants dropped", total - len(out), total
        )
    return out
