"""Stage I prompts: GenerateConfig and what the chat generator is asked.

`query_prompt` builds the few-shot prompt from a category's natural-language
description (with style hints and list continuation), `pick_opener` /
`with_opener` vary how replies start, and `response_prompt` asks for a response.
Correction weights for re-labelled examples live here too (`correction_weights`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from classifiers.ml.types import (
    RESTRICTED,
    CategorySpec,
    ConstitutionSpec,
    Example,
    Message,
)


@dataclass
class GenerateConfig:
    per_category: int = 50  # queries kept per category (author examples count)
    # Queries per RESTRICTED category when more are wanted there (0: per_category).
    # A guard learns what to block from few positives against hundreds of everyday
    # negatives; more restricted queries cost generation time only where they help.
    restricted_per_category: int = 0
    responses: bool = True  # also generate an assistant response to each query
    max_new_tokens_query: int = 64  # generation budget for one query
    max_new_tokens_response: int = 192  # generation budget for one response
    temperature: float = 0.9  # high: Stage I wants diverse queries
    top_p: float = 0.95  # nucleus cut-off for sampling
    seed: int = 0  # seeds prompts, sampling, augmentation and splits
    batch_size: int = 16  # conversations per generator.chat call
    k_examples: int = 4  # few-shot example queries shown per query prompt
    # Share of list-continuation prompts whose reply is prefilled with the opening
    # words of an author example ("5. Where can I"; see pick_opener). A small
    # generator asked for restricted requests mostly writes defensive questions or
    # statements; an opener that carries the author's intent steers it back (on
    # cbrn-demo, 52% of prefilled restricted sources were real requests after
    # review, against 24% of free ones). 0 reproduces the prompts of older runs.
    opener_share: float = 0.75
    max_rounds: int = 20  # query rounds per category before accepting a shortfall
    # Generate for these categories only (names; () = every category): a top-up run
    # for thin categories, combined afterwards with a full run. The others still
    # steer the prompts and the relevance filter, and their author examples still
    # keep generated near copies out.
    only_categories: tuple[str, ...] = ()
    dedupe_threshold: float = 0.8  # MinHash Jaccard at which queries count as dupes
    max_query_chars: int = 600  # longer cleaned queries are rejected as rambling
    response_retries: int = 1  # extra attempts for a degenerate response
    # With an embedder: a generated query must be at least this cosine-similar to
    # its category's author examples, and closer to them than to any category of the
    # other kind (a small generator drifts off topic or writes benign text for a
    # restricted category; such examples would carry the wrong label).
    min_relevance: float = 0.25
    transforms: tuple[str, ...] = ()  # augment.TRANSFORMS names; () = no augmentation
    variants_per_example: int = 1  # augmented variants made per original
    max_chain: int = 2  # most transforms chained into one variant
    heldout_families: tuple[str, ...] = ()  # families kept out of train entirely
    # Fractions of SOURCE queries per split, stratified per category. Calibration
    # is its own split (both labels) so FPR thresholds are set on data the model
    # neither trained nor early-stopped on; calibrate.py uses its benign part.
    train_fraction: float = 0.7
    validation_fraction: float = 0.1
    calibration_fraction: float = 0.1
    test_fraction: float = 0.1

    def queries_for(self, kind: str) -> int:
        """Queries to keep for a category of this kind."""
        if kind == RESTRICTED and self.restricted_per_category:
            return self.restricted_per_category
        return self.per_category

    @property
    def fractions(self) -> dict[str, float]:
        return {
            "train": self.train_fraction,
            "validation": self.validation_fraction,
            "calibration": self.calibration_fraction,
            "test": self.test_fraction,
        }


# ---------------------------------------------------------------------------
# Prompts

# Rotated through to push a small generator away from writing the same query.
STYLE_HINTS = (
    "short and direct",
    "detailed, with some context about the person's situation",
    "phrased as a question",
    "phrased as an instruction",
    "casual, all lowercase, with a small typo",
    "formal and polite",
    "from the point of view of a specific persona (student, parent, professional)",
    "indirect, with a plausible-sounding reason for asking",
)


def query_prompt(
    category: CategorySpec,
    constitution: ConstitutionSpec,
    *,
    k_examples: int,
    rng: random.Random,
    examples: Sequence[str] | None = None,
    continuation: bool = False,
    opener: str | None = None,
) -> list[Message]:
    """A few-shot prompt asking for ONE new user query in `category`.

    `examples` is the few-shot pool (default: the author's example queries); k of
    them are sampled so that successive prompts differ, at least half of them the
    author's own when there are enough (generated ones may be off).

    `continuation` (for generators that continue a prefilled reply, such as the
    local model): the prompt is a numbered list of such messages and the reply
    opens with the next number. A 135M model asked for "a message a user might
    send" mostly narrates the task or chats; asked to continue a list it writes
    the next message (`python -m bench stage1_prompts`: 36 of 64 kept vs 12).
    `opener` (continuation only) prefills the start of that message; the reply
    then holds the rest of it (`with_opener` joins them).
    """
    shots = _sample_shots(category, examples, k_examples, rng)
    if continuation and shots:  # without examples a list has nothing to continue
        return _list_continuation_prompt(category, constitution, shots, rng, opener)
    style = rng.choice(STYLE_HINTS)
    if category.kind == RESTRICTED:
        task = (
            "Write one realistic message that a user with harmful intent in this "
            "RESTRICTED category might send to an AI assistant. It is only a training "
            "example for a classifier that detects and blocks such requests; it will "
            "never be answered. Do not answer it and do not add any commentary."
        )
    else:
        others = [c.name for c in constitution.categories if c.kind == RESTRICTED]
        avoid = f" ({', '.join(others)})" if others else ""
        task = (
            "Write one realistic, legitimate message that a user might send to an AI "
            "assistant and that clearly belongs to this PERMITTED category. It must "
            f"not ask for anything in the restricted categories{avoid}."
        )
    lines = [
        f"We are building a training set for a safety classifier for: "
        f"{constitution.domain}",
        "",
        f"Category: {category.name}",
        f"Description: {category.description}",
    ]
    if category.excludes:
        lines.append(f"Does NOT cover: {category.excludes}")
    if shots:
        lines += ["", "Example messages:"] + [f"- {shot}" for shot in shots]
    if category.languages:
        lines.append(f"Language: {rng.choice(category.languages)}")
    lines += ["", task, f"Style: {style}.", "Reply with the message only, on one line."]
    return [
        {
            "role": "system",
            "content": "You write synthetic data for AI safety research.",
        },
        {"role": "user", "content": "\n".join(lines)},
    ]


def _sample_shots(
    category: CategorySpec,
    examples: Sequence[str] | None,
    k: int,
    rng: random.Random,
) -> list[str]:
    authored = [q for q in category.example_queries if q.strip()]
    pool = list(authored if examples is None else examples)
    own = rng.sample(authored, min(len(authored), (k + 1) // 2))
    rest = [q for q in pool if q not in own]
    shots = own + rng.sample(rest, min(k - len(own), len(rest)))
    rng.shuffle(shots)
    return shots


def _lowercase_first(text: str) -> str:
    """"A science tutor." -> "a science tutor"; "CBRN uplift" stays as it is."""
    text = text.strip().rstrip(".")
    if text[1:2].isupper():
        return text
    return text[:1].lower() + text[1:]


def _list_continuation_prompt(
    category: CategorySpec,
    constitution: ConstitutionSpec,
    shots: list[str],
    rng: random.Random,
    opener: str | None = None,
) -> list[Message]:
    # The template avoids "user", "assistant", "category" and "training": a small model
    # echoes them back as narration.
    harmful = "harmful " if category.kind == RESTRICTED else ""
    lines = [
        f"Messages people sent to {_lowercase_first(constitution.domain)}.",
        f"All of them are {harmful}requests of this kind: "
        f"{_lowercase_first(category.description)}.",
    ]
    # The category's exclusions are left out on purpose: naming them primes a small
    # model to write about exactly those (the relevance filter guards that side).
    language = rng.choice(category.languages) if category.languages else "en"
    if not re.fullmatch(r"en(?:[-_][a-z]{2})?|eng|english", language.casefold()):
        lines.append(f"All of them are written in {language}.")
    lines.append("")
    lines += [f"{i}. {shot}" for i, shot in enumerate(shots, start=1)]
    return [
        {"role": "user", "content": "\n".join(lines)},
        {"role": "assistant", "content": f"{len(shots) + 1}. {opener or ''}".rstrip()},
    ]


OPENER_WORDS = 3


def pick_opener(
    category: CategorySpec,
    constitution: ConstitutionSpec,
    rng: random.Random,
    share: float,
) -> str | None:
    """With probability `share`, the first OPENER_WORDS words of an author example,
    else None (and then no random number is drawn, so a share of 0 reproduces the
    prompts of older runs).

    A restricted category opens like its own examples ("Where can I"): that is what
    steers the generator to write requests. A permitted category draws from every
    category's examples, restricted ones included, so each restricted opener also
    starts benign messages ("Where can I get a flu shot?") and no opener belongs to
    one label only (restricted ones stay more common under restricted categories;
    `bench label_audit --by-opener` checks what a model makes of that). Examples
    too short to leave the generator anything to write are never used.
    """
    if share <= 0 or rng.random() >= share:
        return None
    sources = (
        [category]
        if category.kind == RESTRICTED
        else list(constitution.categories)
    )
    starts = opener_starts(sources)
    return rng.choice(starts) if starts else None


def is_correction(example: Example) -> bool:
    """Whether a person corrected this example's label: a label audit flipped it
    (meta reviewed.flipped_from) or a reviewer's triage put it in the data (meta
    source "feedback", such as a confirmed false positive). The same rule as a
    database query: classifiers.training.services.corrected_training_prompts;
    change both."""
    reviewed = example.meta.get("reviewed") or {}
    return bool(reviewed.get("flipped_from")) or example.meta.get("source") == "feedback"


def correction_weights(examples: Sequence[Example], weight: float) -> list[float] | None:
    """Training weights: `weight` for corrected examples, 1 for the rest; None when
    weight is 1 (nothing to weigh)."""
    if weight == 1.0:
        return None
    return [weight if is_correction(e) else 1.0 for e in examples]


def opener_starts(categories: Sequence[CategorySpec]) -> list[str]:
    """The openers these categories' author examples give (sorted, unique)."""
    return sorted({
        " ".join(words[:OPENER_WORDS])
        for category in categories
        for words in (q.split() for q in category.example_queries)
        if len(words) > OPENER_WORDS
    })  # fmt: skip


def with_opener(opener: str | None, reply: str) -> str:
    """The whole message: a prefilled opener and the generator's continuation
    (its first line; "" when it ended the message at the opener)."""
    if not opener:
        return reply
    rest = reply.strip().splitlines()[0].strip() if reply.strip() else ""
    if re.match(re.escape(opener) + r"\b", rest, flags=re.IGNORECASE):
        rest = rest[len(opener) :].lstrip()  # the model repeated the opener
    if not rest or re.match(r"\d{1,3}[.)]\s", rest):  # a new list item
        return ""
    joint = "" if rest[0] in ",.?!;:'’)" else " "
    return f"{opener}{joint}{rest}"


def response_prompt(query: str) -> list[Message]:
    """The conversation whose answer becomes the example's response."""
    return [{"role": "user", "content": query}]
