"""Stage I synthetic data, dataset assembly, splits and export.

Pipeline (after Constitutional Classifiers): for every constitution category a chat
generator writes user queries from a few-shot prompt built from the category's
natural-language description; queries are cleaned, filtered (refusals, degenerate
text, near-duplicates) and optionally answered; augment.py then makes variants;
finally examples are split BY SOURCE QUERY so no query's variants straddle splits.

Labels: `Example.label` comes from the category kind and is what the INPUT classifier
learns (a harmful request stays harmful even if the generator refused it). The
OUTPUT classifier judges the response instead, so each example also carries
`meta["response_label"]`: the category label, except that a refusal is benign (0),
because a refusal contains nothing harmful and teaching the output classifier to
flag refusals would make it key on topic words instead of harmful content. Use
`response_label(example)` to read it.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from classifiers.ml.dedupe import MinHashDeduper
from classifiers.ml.types import (
    RESTRICTED,
    CategorySpec,
    ChatGenerator,
    ConstitutionSpec,
    Example,
    Message,
    ProgressCallback,
    ShouldCancel,
    check_cancelled,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "calibration", "test")
HELDOUT_SPLIT = "heldout_transforms"
ALL_SPLITS = (*SPLITS, HELDOUT_SPLIT)


@dataclass
class GenerateConfig:
    per_category: int = 50  # queries kept per category (author examples count)
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
    database query: services_training.corrected_training_prompts; change both."""
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


# ---------------------------------------------------------------------------
# Filters

_REFUSAL = re.compile(
    r"\b(?:"
    r"i\s*(?:can(?:no|')?t|can not|won'?t|will not|am unable to|'m unable to"
    r"|am not able to|'m not able to|must decline to)\s+"
    r"(?:help|assist|provide|comply|create|generate|write|fulfil|fulfill|answer"
    r"|share|support|do that|engage|give|produce)"
    r"|i(?:'m| am) sorry,? but"
    r"|i apologi[sz]e,? but"
    r"|as an ai\b|as a language model|as an ai language model"
    r"|i(?:'m| am) not (?:comfortable|allowed)"
    r"|i don'?t feel comfortable"
    r"|against my (?:guidelines|programming|policies)"
    r"|(?:can(?:no|')?t|unable to) (?:help|assist) with (?:that|this)"
    r")",
    flags=re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,3}[.):]|[-*•]|#+)\s*")
_LABEL_PREFIX = re.compile(
    r"^\s*(?:(?:new |example |user )?(?:query|question|message|prompt|request|user"
    r"|example)\s*\d*\s*[:\-–]\s*)",
    flags=re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(?:sure|okay|ok|certainly|here(?:'s| is| are))\b.*:\s*$", flags=re.IGNORECASE
)
_QUOTES = "\"'`“”‘’«»*"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def is_refusal(text: str) -> bool:
    """Pattern-based refusal detector; looks at the opening where refusals live."""
    return bool(_REFUSAL.search(text[:400]))


def is_degenerate(text: str, *, min_chars: int = 10, min_words: int = 2) -> bool:
    """Empty, too short, mostly non-letters, or repetitive text."""
    stripped = text.strip()
    if len(stripped) < min_chars:
        return True
    words = re.findall(r"\w+", stripped.casefold())
    if len(words) < min_words:
        return True
    visible = [ch for ch in stripped if not ch.isspace()]
    if sum(ch.isalpha() for ch in visible) < 0.5 * len(visible):
        return True
    if re.search(r"(.)\1{7,}", stripped):  # "!!!!!!!!", "aaaaaaaa"
        return True
    if len(words) >= 8 and len(set(words)) / len(words) < 0.4:
        return True
    if len(words) >= 9:
        trigrams = Counter(zip(words, words[1:], words[2:], strict=False))
        top = trigrams.most_common(1)[0][1]
        if top >= 3 and 3 * top / len(words) > 0.3:
            return True
    return False


def clean_query(text: str, *, max_chars: int = 600) -> str:
    """Strip numbering, labels and quotes; keep the first real line (or sentences)."""
    for raw in text.strip().splitlines():
        line = raw.strip()
        if not line or _PREAMBLE.match(line):
            continue
        for _ in range(3):  # "1. Query: "..."" has several layers
            before = line
            line = _LABEL_PREFIX.sub("", _LIST_MARKER.sub("", line)).strip()
            line = line.strip(_QUOTES).strip()
            if line == before:
                break
        if not line:
            continue
        if len(line) > max_chars:
            kept = ""
            for sentence in _SENTENCE_END.split(line):
                if len(kept) + len(sentence) + 1 > max_chars:
                    break
                kept = f"{kept} {sentence}".strip()
            line = kept or line[:max_chars].rsplit(" ", 1)[0]
        return line
    return ""


# ---------------------------------------------------------------------------
# Stage I


def _report(
    on_progress: ProgressCallback | None,
    stage: str,
    done: int,
    total: int,
    **extra: Any,
) -> None:
    if on_progress is not None:
        on_progress(stage=stage, done=done, total=total, **extra)


def _derive_seed(*parts: int) -> int:
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % 2**31
    return seed


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.casefold()).strip("-") or "category"


# Openers of assistant-style text: a small generator often answers the prompt or
# greets instead of writing the user's message.
_ASSISTANT_OPENER = re.compile(
    r"^(?:i(?:'m| am) (?:here|happy|glad|ready|delighted)|i(?:'d| would) (?:be|love)"
    r"|sorry|hello|hi\b|hey\b|thank|sure\b|certainly|of course|great|absolutely"
    r"|that(?:'s| is)|yes\b|no problem|as an?\b|re:|dear\b|note:|here(?:'s| is))",
    flags=re.IGNORECASE,
)


# Text about the data-generation task instead of a message written for it: a
# small generator often narrates ("The user asks about ...", "AI assistant: ...")
# or echoes the instructions ("training set", "category"). On the first 40-per-
# category cbrn-demo dataset, 131 of 354 kept queries were such narration, under
# both labels: label noise that capped the classifier's TPR at a strict FPR.
_TASK_NARRATION = re.compile(
    r"\b(?:the|a|an|this|each|every) users?\b|\busers?'s?\b|\bai assistants?\b"
    r"|\bassistant\b|\bcategor(?:y|ies)\b|\bclassifiers?\b|\bsynthetic\b"
    r"|\btraining (?:set|examples?|data)\b|\bexample messages?\b"
    r"|\bthis (?:message|query|request)\b",
    flags=re.IGNORECASE,
)
# A user's message to an assistant asks for something: a question mark, or a
# question word or request verb somewhere. Statements without any ("The treaty of
# 1972 banned ...", "A prestigious school for chemistry.") are generator drift.
_ASKS_FOR_SOMETHING = re.compile(
    r"\?|\b(?:how|what|why|where|which|who|whom|whose|when|can|could|would|will|should"
    r"|is|are|do|does|did|help|tell|explain|give|show|write|describe|list|walk|make"
    r"|build|get|find|need|want|teach|recommend|suggest|compare|summari[sz]e|outline"
    r"|provide|let|please|assist|share|create|design|plan|buy|obtain|acquire|steal"
    r"|produce|prepare|looking)\b",
    flags=re.IGNORECASE,
)


def looks_like_user_message(text: str, *, min_words: int = 4) -> bool:
    """A request or question from a user, not an assistant's greeting or reply."""
    if len(re.findall(r"\w+", text)) < min_words:
        return False
    return not _ASSISTANT_OPENER.match(text.strip())


def narrates_the_task(text: str) -> bool:
    """Talks about users, assistants, categories or training data instead of being
    a user's message (English; other languages pass)."""
    return bool(_TASK_NARRATION.search(text))


def asks_for_something(text: str) -> bool:
    """Has a question mark, a question word or a request verb (English; text with
    no ASCII letters at all passes, since the word list is English)."""
    if not re.search(r"[A-Za-z]", text):
        return True
    return bool(_ASKS_FOR_SOMETHING.search(text))


def _rejection(query: str, cfg: GenerateConfig) -> str | None:
    if not query:
        return "empty"
    if len(query) > cfg.max_query_chars:
        return "too_long"
    if is_refusal(query):
        return "refusal"
    if is_degenerate(query):
        return "degenerate"
    if not looks_like_user_message(query):
        return "not_a_request"
    if narrates_the_task(query):
        return "narration"
    if not asks_for_something(query):
        return "not_a_request"
    return None


Embedder = Callable[[Sequence[str]], Any]  # texts -> (N, E) L2-normalised array


class RelevanceFilter:
    """Keeps generated queries that sit with their own category's author examples.

    Each category is represented by the normalised mean embedding of its author
    examples. A query is kept when its similarity to its own category is at least
    `min_relevance` AND higher than to every category of the other kind.
    """

    def __init__(
        self, constitution: ConstitutionSpec, embed: Embedder, min_relevance: float
    ) -> None:
        import numpy as np

        self._np = np
        self.embed = embed
        self.min_relevance = min_relevance
        self.kinds = [c.kind for c in constitution.categories]
        centroids = []
        for category in constitution.categories:
            texts = [q for q in category.example_queries if q.strip()] or [
                f"{category.name}. {category.description}"
            ]
            mean = np.asarray(embed(texts), dtype=np.float32).mean(axis=0)  # (E,)
            centroids.append(mean / max(float(np.linalg.norm(mean)), 1e-9))
        self.centroids = np.stack(centroids)  # (C, E)

    def reasons(self, queries: Sequence[str], category_index: int) -> list[str | None]:
        """None for a kept query, else "off_topic" or "wrong_side"."""
        if not queries:
            return []
        np = self._np
        sims = np.asarray(self.embed(list(queries)), dtype=np.float32) @ self.centroids.T
        own_kind = self.kinds[category_index]
        other = [i for i, kind in enumerate(self.kinds) if kind != own_kind]
        result: list[str | None] = []
        for row in sims:  # (C,)
            own = float(row[category_index])
            if own < self.min_relevance:
                result.append("off_topic")
            elif other and float(row[other].max()) >= own:
                result.append("wrong_side")
            else:
                result.append(None)
        return result


def generate_stage1(
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    on_progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
    stats: dict[str, int] | None = None,
    embed: Embedder | None = None,
) -> list[Example]:
    """Author examples + generated queries (+ responses) for every category.

    `stats`, when given, is filled with counters (kept, rejected_<reason>, ...).
    `embed` (sentence embeddings) enables the RelevanceFilter.
    """
    stats = stats if stats is not None else {}
    relevance = (
        RelevanceFilter(constitution, embed, cfg.min_relevance) if embed else None
    )
    counter: Counter[str] = Counter()
    rng = random.Random(cfg.seed)
    continuation = bool(getattr(generator, "continues_replies", False))
    # One deduper across ALL categories: the same query under two categories would
    # get two labels, and author examples must never be re-generated as new ones.
    deduper = MinHashDeduper(threshold=cfg.dedupe_threshold)
    # Per category: (query, "author" | "generated", prefilled opener or None).
    kept: list[list[tuple[str, str, str | None]]] = []
    chosen = [
        not cfg.only_categories or c.name in cfg.only_categories
        for c in constitution.categories
    ]
    for category, wanted in zip(constitution.categories, chosen, strict=True):
        authored = [q.strip() for q in category.example_queries if q.strip()]
        for query in authored:
            deduper.add_if_new(query)
        kept.append([(q, "author", None) for q in authored] if wanted else [])
    total = sum(
        max(cfg.per_category, len(k)) for k, wanted in zip(kept, chosen, strict=True) if wanted
    )
    done = sum(len(k) for k in kept)
    _report(on_progress, "queries", done, total)

    for ci, category in enumerate(constitution.categories):
        if not chosen[ci]:
            continue
        queries = kept[ci]
        for round_index in range(cfg.max_rounds):
            need = cfg.per_category - len(queries)
            if need <= 0:
                break
            check_cancelled(should_cancel)
            pool = [q for q, *_ in queries]
            # Ask for more than needed: small generators waste many samples.
            openers = [
                pick_opener(category, constitution, rng, cfg.opener_share)
                if continuation and pool  # no pool: the instruction prompt
                else None
                for _ in range(min(cfg.batch_size, 2 * need))
            ]
            prompts = [
                query_prompt(
                    category,
                    constitution,
                    k_examples=cfg.k_examples,
                    rng=rng,
                    examples=pool,
                    continuation=continuation,
                    opener=opener,
                )
                for opener in openers
            ]
            outputs = generator.chat(
                prompts,
                max_new_tokens=cfg.max_new_tokens_query,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=_derive_seed(cfg.seed, ci, round_index),
            )
            cleaned = [
                clean_query(with_opener(opener, o), max_chars=cfg.max_query_chars)
                for opener, o in zip(openers, outputs, strict=True)
            ]
            reasons = [_rejection(query, cfg) for query in cleaned]
            if relevance is not None:
                candidates = [q for q, r in zip(cleaned, reasons, strict=True) if r is None]
                verdicts = iter(relevance.reasons(candidates, ci))
                reasons = [next(verdicts) if r is None else r for r in reasons]
            for query, reason, opener in zip(cleaned, reasons, openers, strict=True):
                counter["candidates"] += 1
                if opener is not None:
                    counter["candidates_prefilled"] += 1
                if reason is None and not deduper.add_if_new(query):
                    reason = "duplicate"
                if reason is not None:
                    counter[f"rejected_{reason}"] += 1
                    continue
                if len(queries) < cfg.per_category:
                    queries.append((query, "generated", opener))
                    if opener is not None:
                        counter["kept_prefilled"] += 1
                    done += 1
            _report(on_progress, "queries", done, total, category=category.name)
        if len(queries) < cfg.per_category:
            counter["shortfall"] += cfg.per_category - len(queries)
            logger.warning(
                "category %r: only %d of %d queries after %d rounds",
                category.name,
                len(queries),
                cfg.per_category,
                cfg.max_rounds,
            )

    if counter["shortfall"]:  # let the progress bar finish at what was reached
        _report(on_progress, "queries", done, done, shortfall=counter["shortfall"])
    examples = _make_examples(constitution, kept, generator.name)
    counter["kept"] = len(examples)
    if cfg.responses:
        _add_responses(
            examples,
            constitution,
            generator,
            cfg,
            counter,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
    stats.update(counter)
    return examples


def _make_examples(
    constitution: ConstitutionSpec,
    kept: list[list[tuple[str, str, str | None]]],
    generator: str,
) -> list[Example]:
    examples: list[Example] = []
    used_slugs: set[str] = set()
    for ci, (category, queries) in enumerate(
        zip(constitution.categories, kept, strict=True)
    ):
        slug = slugify(category.name)
        if slug in used_slugs:  # two names that slugify alike still get unique ids
            slug = f"{slug}-{ci}"
        used_slugs.add(slug)
        for i, (query, source, opener) in enumerate(queries):
            meta: dict[str, Any] = {"source": source}
            if source == "generated":
                meta["generator"] = generator
            if opener:
                meta["opener"] = opener
            examples.append(
                Example(
                    messages=[{"role": "user", "content": query}],
                    response="",
                    label=category.label,
                    category=category.name,
                    source_id=f"{slug}-{i:04d}",
                    meta=meta,
                )
            )
    return examples


def _add_responses(
    examples: list[Example],
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    counter: Counter[str],
    *,
    on_progress: ProgressCallback | None,
    should_cancel: ShouldCancel | None,
) -> None:
    """Fill `response`; author responses are paired with author queries by index."""
    by_name = {c.name: c for c in constitution.categories}
    author_index: Counter[str] = Counter()
    todo: list[Example] = []
    for ex in examples:
        if ex.meta["source"] == "author":
            i = author_index[ex.category]
            author_index[ex.category] += 1
            responses = by_name[ex.category].example_responses
            if i < len(responses) and responses[i].strip():
                _set_response(ex, responses[i].strip(), "author")
                continue
        todo.append(ex)
    total, done = len(examples), len(examples) - len(todo)
    _report(on_progress, "responses", done, total)
    for attempt in range(cfg.response_retries + 1):
        retry: list[Example] = []
        for start in range(0, len(todo), cfg.batch_size):
            check_cancelled(should_cancel)
            chunk = todo[start : start + cfg.batch_size]
            outputs = generator.chat(
                [response_prompt(ex.messages[-1]["content"]) for ex in chunk],
                max_new_tokens=cfg.max_new_tokens_response,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=_derive_seed(cfg.seed, 7919, attempt, start),
            )
            for ex, text in zip(chunk, outputs, strict=True):
                if is_degenerate(text):
                    retry.append(ex)
                    continue
                _set_response(ex, text.strip(), "generated")
                done += 1
            _report(on_progress, "responses", done, total)
        todo = retry
        if not todo:
            break
    for ex in todo:  # still degenerate: keep the query for the input classifier
        ex.meta["response_dropped"] = "degenerate"
        counter["responses_dropped"] += 1
        done += 1
    counter["refused"] = sum(bool(ex.meta.get("refused")) for ex in examples)
    _report(on_progress, "responses", done, total)


def _set_response(ex: Example, text: str, source: str) -> None:
    ex.response = text
    ex.meta["response_source"] = source
    refused = is_refusal(text)
    ex.meta["refused"] = refused
    # A refusal is benign output whatever the query was (see the module docstring).
    ex.meta["response_label"] = 0 if refused else ex.label


def response_label(example: Example) -> int | None:
    """The output classifier's target for this example; None when no response."""
    if not example.response:
        return None
    return int(example.meta.get("response_label", example.label))


# ---------------------------------------------------------------------------
# Splits


def transform_families(transform: str) -> set[str]:
    """Families of the transforms in a "+"-joined chain ("original" has none)."""
    try:
        from classifiers.ml.augment import transform_family
    except ImportError:  # augment.py not installed yet: fall back to the name stem
        transform_family = None  # type: ignore[assignment]
    families: set[str] = set()
    for name in (part.strip() for part in (transform or "").split("+")):
        if not name or name == "original":
            continue
        family = None
        if transform_family is not None:
            try:
                family = transform_family(name)
            except (KeyError, ValueError):
                family = None
        families.add(family or re.split(r"[:(]", name, maxsplit=1)[0].strip())
    return families


def _normalise_fractions(
    fractions: Mapping[str, float] | Sequence[float],
) -> dict[str, float]:
    if not isinstance(fractions, Mapping):
        # Positional form: (train, validation, test[, calibration]).
        names = ("train", "validation", "test", "calibration")[: len(fractions)]
        fractions = dict(zip(names, fractions, strict=False))
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)}; use {SPLITS}")
    if any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"split fractions must be >= 0 and not all 0: {fractions}")
    total = sum(fractions.values())
    return {name: fractions.get(name, 0.0) / total for name in SPLITS}


def _allocate(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n items over the splits; train never starves."""
    exact = {name: n * frac for name, frac in fractions.items()}
    counts = {name: int(value) for name, value in exact.items()}
    leftovers = sorted(exact, key=lambda s: (counts[s] - exact[s], SPLITS.index(s)))
    for name in leftovers[: n - sum(counts.values())]:
        counts[name] += 1
    if n and counts["train"] == 0 and fractions["train"] > 0:
        donor = max(counts, key=lambda s: counts[s])
        counts[donor] -= 1
        counts["train"] += 1
    return counts


def split_by_source(
    examples: Iterable[Example],
    *,
    fractions: Mapping[str, float] | Sequence[float],
    seed: int,
    heldout_families: Sequence[str] = (),
) -> dict[str, list[Example]]:
    """Split by source_id, stratified per category; returns copies with meta["split"].

    Keys: train, validation, calibration, test, heldout_transforms (always all).
    Every source query gets one split and all its variants follow it, except that
    variants using a held-out transform family go ONLY to heldout_transforms (never
    train); they keep meta["source_split"] so an evaluation can restrict itself to
    sources not seen in training (or measure the transform gap on seen ones).
    """
    examples = list(examples)
    shares = _normalise_fractions(fractions)
    heldout = set(heldout_families)
    sources: dict[str, dict[str, None]] = {}  # category -> ordered set of source ids
    for ex in examples:
        sources.setdefault(ex.category, {}).setdefault(ex.source_id, None)
    split_of: dict[str, str] = {}
    for category in sorted(sources):
        ids = sorted(sources[category])
        random.Random(f"{seed}:{category}").shuffle(ids)
        start = 0
        for name, count in _allocate(len(ids), shares).items():
            for source_id in ids[start : start + count]:
                split_of.setdefault(source_id, name)
            start += count
    out: dict[str, list[Example]] = {name: [] for name in ALL_SPLITS}
    for ex in examples:
        source_split = split_of[ex.source_id]
        meta = dict(ex.meta)
        names = set(ex.transform.split("+"))  # a listed transform name also counts
        if heldout and (transform_families(ex.transform) | names) & heldout:
            meta.update(split=HELDOUT_SPLIT, source_split=source_split)
            out[HELDOUT_SPLIT].append(replace(ex, meta=meta))
        else:
            meta["split"] = source_split
            out[source_split].append(replace(ex, meta=meta))
    return out


# ---------------------------------------------------------------------------
# Assembly


@dataclass
class BuiltDataset:
    examples: list[Example]  # every example, meta["split"] set
    counts: dict[str, Any]  # per category / label / transform / split (count_examples)
    stats: dict[str, int] = field(default_factory=dict)  # Stage I filter counters

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.meta.get("split") == name]


def count_examples(examples: Iterable[Example]) -> dict[str, Any]:
    """Counts per category, label, transform, split and split/label, labels per
    category ("category_label": {category: {label: n}}) and the total, in one pass
    (a generator of examples is fine)."""
    counts: dict[str, Counter[str]] = {
        key: Counter()
        for key in ("category", "label", "transform", "split", "split_label")
    }
    by_category: dict[str, Counter[str]] = {}
    for ex in examples:
        split = str(ex.meta.get("split", ""))
        counts["category"][ex.category] += 1
        counts["label"][str(ex.label)] += 1
        counts["transform"][ex.transform] += 1
        counts["split"][split] += 1
        counts["split_label"][f"{split}/{ex.label}"] += 1
        by_category.setdefault(ex.category, Counter())[str(ex.label)] += 1
    out: dict[str, Any] = {key: dict(sorted(c.items())) for key, c in counts.items()}
    out["category_label"] = {category: dict(c) for category, c in by_category.items()}
    out["total"] = sum(counts["label"].values())
    return out


def build_dataset(
    constitution: ConstitutionSpec,
    generator: ChatGenerator,
    cfg: GenerateConfig,
    *,
    templates: Sequence[str] = (),
    on_progress: ProgressCallback | None = None,
    should_cancel: ShouldCancel | None = None,
    embed: Embedder | None = None,
) -> BuiltDataset:
    """Stage I -> augmentation (LLM transforms use the same generator) -> splits."""
    stats: dict[str, int] = {}
    originals = generate_stage1(
        constitution,
        generator,
        cfg,
        on_progress=on_progress,
        should_cancel=should_cancel,
        stats=stats,
        embed=embed,
    )
    examples = originals
    if cfg.transforms:
        from classifiers.ml.augment import augment_examples

        languages = sorted(
            {lang for c in constitution.categories for lang in c.languages}
        )
        augmented = augment_examples(
            originals,
            transforms=list(cfg.transforms),
            variants_per_example=cfg.variants_per_example,
            seed=cfg.seed,
            llm=generator,
            templates=templates,
            max_chain=cfg.max_chain,
            languages=languages or None,
            llm_batch_size=cfg.batch_size,
            on_progress=on_progress,
            should_cancel=should_cancel,
        )
        # augment_examples may or may not echo the originals; keep each exactly once.
        present = {(ex.source_id, ex.transform) for ex in augmented}
        missing = [
            ex for ex in originals if (ex.source_id, ex.transform) not in present
        ]
        examples = missing + list(augmented)
    check_cancelled(should_cancel)
    splits = split_by_source(
        examples,
        fractions=cfg.fractions,
        seed=cfg.seed,
        heldout_families=cfg.heldout_families,
    )
    final = [ex for name in ALL_SPLITS for ex in splits[name]]
    if cfg.heldout_families and not splits[HELDOUT_SPLIT]:
        logger.warning(
            "held-out families %s produced no examples; add their transforms to "
            "cfg.transforms",
            cfg.heldout_families,
        )
    return BuiltDataset(examples=final, counts=count_examples(final), stats=stats)


# ---------------------------------------------------------------------------
# Export

COLUMNS = (
    "messages",
    "prompt_text",
    "response",
    "label",
    "response_label",
    "category",
    "source_id",
    "transform",
    "split",
    "meta",
)


def example_row(ex: Example) -> dict[str, Any]:
    return {
        "messages": [{"role": m["role"], "content": m["content"]} for m in ex.messages],
        "prompt_text": ex.prompt_text,
        "response": ex.response,
        "label": int(ex.label),
        "response_label": response_label(ex),
        "category": ex.category,
        "source_id": ex.source_id,
        "transform": ex.transform,
        "split": str(ex.meta.get("split", "")),
        "meta": ex.meta,
    }


def example_from_row(row: Mapping[str, Any]) -> Example:
    meta = row.get("meta") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    return Example(
        messages=[dict(m) for m in row["messages"]],
        response=row.get("response") or "",
        label=int(row["label"]),
        category=row["category"],
        source_id=row["source_id"],
        transform=row.get("transform") or "original",
        meta=dict(meta),
    )


def write_jsonl(examples: Iterable[Example], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(example_row(ex), ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[Example]:
    with Path(path).open(encoding="utf-8") as fh:
        return [example_from_row(json.loads(line)) for line in fh if line.strip()]


def _parquet_schema() -> Any:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema(
        [
            ("messages", pa.list_(message)),
            ("prompt_text", pa.string()),
            ("response", pa.string()),
            ("label", pa.int64()),
            ("response_label", pa.int64()),  # null when there is no response
            ("category", pa.string()),
            ("source_id", pa.string()),
            ("transform", pa.string()),
            ("split", pa.string()),
            ("meta", pa.string()),  # JSON: free-form keys would break a fixed schema
        ]
    )


def write_parquet(examples: Iterable[Example], path: str | Path) -> Path:
    """Parquet that pyarrow, pandas and `datasets.load_dataset("parquet")` read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [example_row(ex) for ex in examples]
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in rows:
        for name in COLUMNS:
            value = row[name]
            columns[name].append(
                json.dumps(value, ensure_ascii=False) if name == "meta" else value
            )
    table = pa.Table.from_pydict(columns, schema=_parquet_schema())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_parquet(path: str | Path) -> list[Example]:
    import pyarrow.parquet as pq

    return [example_from_row(row) for row in pq.read_table(path).to_pylist()]
