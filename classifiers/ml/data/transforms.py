"""Stage II transforms: named, seeded, composable rewrites over `Example`s.

Constitutional Classifiers train on synthetic queries pushed through the kinds of
rewrites attackers use (encodings, obfuscations, jailbreak wrappers, multi-turn
splits, paraphrases, translations). Every transform here returns a NEW Example with
the same label/category/source_id, its name appended to `transform`, and the prompt
changed; benign and harmful examples go through exactly the same transforms, so the
classifier has to learn intent rather than "encoded means harmful".

Text transforms rewrite the content of the LAST user message (data/rewrites.py);
LLM transforms (paraphrase, translate) call a `types.ChatGenerator`. TRANSFORMS and
FAMILIES are the registry; `apply_transforms` runs a chain, `sample_chain` picks one.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from classifiers.ml.data.rewrites import (
    DEFAULT_LANGUAGES,
    RewriteConversation,
    RewriteText,
    last_user_index,
    make_caesar,
    rewrite_base64,
    rewrite_dan,
    rewrite_homoglyph,
    rewrite_leetspeak,
    rewrite_many_shot,
    rewrite_random_case,
    rewrite_redteam_template,
    rewrite_reverse,
    rewrite_roleplay,
    rewrite_rot13,
    rewrite_spacing,
    rewrite_split_turns,
    rewrite_system_prompt,
    rewrite_word_split,
    rewrite_zero_width,
)
from classifiers.ml.types import ChatGenerator, Example, Message


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
        last = last_user_index(example.messages)
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
        last = last_user_index(example.messages)
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
        last = last_user_index(example.messages)
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
    _text("random_case", "obfuscation", rewrite_random_case),
    _text("leetspeak", "obfuscation", rewrite_leetspeak),
    _text("homoglyph", "obfuscation", rewrite_homoglyph),
    _text("zero_width", "obfuscation", rewrite_zero_width),
    _text("spacing", "obfuscation", rewrite_spacing),
    _text("word_split", "obfuscation", rewrite_word_split),
    _text("base64", "encoding", rewrite_base64, reversible=True),
    _text("rot13", "encoding", rewrite_rot13, reversible=True),
    _text("caesar", "encoding", make_caesar((1,)), reversible=True),
    _text("reverse", "encoding", rewrite_reverse, reversible=True),
    _text("many_shot", "jailbreak", rewrite_many_shot),
    _text("roleplay_wrapper", "jailbreak", rewrite_roleplay),
    _text("dan_wrapper", "jailbreak", rewrite_dan),
    _conv("system_prompt_wrapper", "jailbreak", rewrite_system_prompt),
    _conv("redteam_template", "jailbreak", rewrite_redteam_template),
    _conv("split_turns", "multiturn", rewrite_split_turns),
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


def resolve_transforms(
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
    for transform in resolve_transforms(names, llm, languages):
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
