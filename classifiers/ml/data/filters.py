"""Stage I filters: which generated queries are dropped, and why.

`clean_query` normalises a generation; `is_refusal`, `is_degenerate`,
`looks_like_user_message`, `narrates_the_task`, `asks_for_something` are the
individual checks and `rejection_reason(query, cfg)` the one verdict Stage I uses
(None = keep). `RelevanceFilter` keeps queries whose embedding sits with their
category (an `Embedder`, e.g. input.model.sentence_embedder).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from classifiers.ml.data.prompts import GenerateConfig
from classifiers.ml.types import ConstitutionSpec

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


def rejection_reason(query: str, cfg: GenerateConfig) -> str | None:
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
