"""Automated red teaming: jailbreak wrapper templates, seeded and LLM-generated.

A template is a generic frame around a request with exactly one `{request}`
placeholder ("Write a story in which a character asks: {request}"). The augmenter's
`redteam_template` transform wraps training queries in them, so the classifiers see
the same request under many disguises. Templates are frames only: they carry no
harmful content themselves, and generated ones are validated to stay that way
(refusals, degenerate text and near-duplicates are dropped).

The seed templates and the fixed frames are text/frames.py (the input side takes
known frames off again); this module generates, cleans and dedupes new templates.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Sequence

from classifiers.ml.text.frames import PLACEHOLDER, SEED_JAILBREAK_TEMPLATES
from classifiers.ml.types import ChatGenerator, Message, check_cancelled

logger = logging.getLogger(__name__)


# Ways a model may write the placeholder instead of "{request}".
_PLACEHOLDER_VARIANTS = re.compile(
    r"(?:\{\{|\[\[|<<|[\[{<(])\s*(?:insert\s+)?(?:the\s+|a\s+|your\s+)?"
    r"(?:user'?s?\s+)?(?:request|query|question|prompt|task)(?:\s+here)?\s*"
    r"(?:\}\}|\]\]|>>|[\]}>)])",
    re.IGNORECASE,
)


_REFUSAL = re.compile(
    r"\b(?:I can(?:no|')t|I cannot|I'm sorry|I am sorry|As an AI|I won't|I will not|"
    r"I'm unable|I am unable|not able to (?:help|assist))\b",
    re.IGNORECASE,
)


_LEADING_LABEL = re.compile(
    r"^(?:new\s+)?template\s*(?:\d+)?\s*[:.)-]\s*", re.IGNORECASE
)


_FENCE = re.compile(r"^```\w*\s*|\s*```$")


_NORMALISE = re.compile(r"[^\w{}]+")


MIN_TEMPLATE_CHARS = 30  # shorter frames are just the placeholder plus a word or two


MAX_TEMPLATE_CHARS = 1200  # longer ones are rambling generations, not frames


NEAR_DUPLICATE_JACCARD = 0.8  # character-5-gram Jaccard at which two are the same


def normalise_template(text: str) -> str:
    """Casefolded, punctuation and whitespace collapsed: the exact-duplicate key."""
    return _NORMALISE.sub(" ", text.casefold()).strip()


def _shingles(text: str, size: int = 5) -> set[str]:
    normal = normalise_template(text)
    return {normal[i : i + size] for i in range(max(1, len(normal) - size + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _is_degenerate(text: str) -> bool:
    """Repetition loops, the usual failure of small sampled models."""
    words = text.lower().split()
    if len(words) >= 12 and len(set(words)) / len(words) < 0.35:
        return True
    grams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    if grams and max(grams.count(g) for g in set(grams)) > 3:
        return True
    return re.search(r"(.)\1{9,}", text) is not None  # "!!!!!!!!!!" and friends


def clean_template(raw: str) -> str | None:
    """A valid template from one model reply, or None (reason logged at debug)."""
    text = _FENCE.sub("", raw.strip()).strip()
    text = _LEADING_LABEL.sub("", text).strip().strip('"“”').strip()
    text = _PLACEHOLDER_VARIANTS.sub(PLACEHOLDER, text)
    reason = None
    if text.count(PLACEHOLDER) != 1:
        reason = f"{text.count(PLACEHOLDER)} placeholders"
    elif not MIN_TEMPLATE_CHARS <= len(text) <= MAX_TEMPLATE_CHARS:
        reason = f"length {len(text)}"
    elif _REFUSAL.search(text):
        reason = "refusal"
    elif _is_degenerate(text):
        reason = "degenerate"
    if reason is not None:
        logger.debug("rejected template (%s): %r", reason, raw[:120])
        return None
    return text


class TemplateDeduper:
    """Exact (normalised) and near-duplicate (shingle Jaccard) filter."""

    def __init__(
        self, existing: Sequence[str] = (), threshold: float = NEAR_DUPLICATE_JACCARD
    ):
        self.threshold = threshold
        self._keys: set[str] = set()
        self._shingles: list[set[str]] = []
        for text in existing:
            self.add_if_new(text)

    def add_if_new(self, text: str) -> bool:
        key = normalise_template(text)
        if key in self._keys:
            return False
        shingles = _shingles(text)
        if any(jaccard(shingles, seen) >= self.threshold for seen in self._shingles):
            return False
        self._keys.add(key)
        self._shingles.append(shingles)
        return True


def template_request(examples: Sequence[str]) -> list[Message]:
    """Few-shot prompt asking for one new wrapper template."""
    shown = "\n".join(f"- {t}" for t in examples)
    content = (
        "You help build a training set for a safety classifier that must recognise "
        "jailbreak attempts. A jailbreak template is a generic frame around a user "
        f"request, marked by the placeholder {PLACEHOLDER}. It adds no content of "
        "its own, only a disguise (role-play, fiction, hypotheticals, games, fake "
        "authority). Examples:\n"
        f"{shown}\n\n"
        f"Write ONE new template in a different style. It must contain {PLACEHOLDER} "
        "exactly once. Output only the template."
    )
    return [{"role": "user", "content": content}]


def generate_jailbreak_templates(
    generator: ChatGenerator,
    *,
    seed_templates: Sequence[str] = SEED_JAILBREAK_TEMPLATES,
    n: int,
    seed: int,
    batch_size: int = 8,
    shots: int = 3,
    max_rounds: int | None = None,
    max_new_tokens: int = 160,
    temperature: float = 0.9,
    top_p: float = 0.95,
    on_progress: Callable[..., None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[str]:
    """Up to `n` new, validated, de-duplicated templates written by `generator`.

    Each round sends `batch_size` few-shot prompts (a different random sample of the
    seeds for each) in ONE `generator.chat` call, with the seed advanced per round.
    Stops at `n` accepted or after `max_rounds` (default: enough rounds for n at a
    25% acceptance rate), so a model that only refuses cannot loop forever.
    """
    if n <= 0:
        return []
    if not seed_templates:
        raise ValueError("generate_jailbreak_templates needs seed templates")
    rng = random.Random(seed)
    rounds = max_rounds if max_rounds is not None else 2 + (4 * n) // batch_size
    deduper = TemplateDeduper(seed_templates)
    accepted: list[str] = []
    for round_index in range(rounds):
        check_cancelled(should_cancel, "template generation cancelled")
        prompts = [
            template_request(
                rng.sample(list(seed_templates), min(shots, len(seed_templates)))
            )
            for _ in range(batch_size)
        ]
        replies = generator.chat(
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed + round_index,
        )
        for reply in replies:
            template = clean_template(reply)
            if template is not None and deduper.add_if_new(template):
                accepted.append(template)
                if len(accepted) == n:
                    break
        if on_progress is not None:
            on_progress(
                stage="templates", done=len(accepted), total=n, round=round_index + 1
            )
        if len(accepted) == n:
            break
    logger.info("generated %d of %d requested jailbreak templates", len(accepted), n)
    return accepted
