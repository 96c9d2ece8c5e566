"""Flagged conversations for the review, dashboard and metrics tests (ORM only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from constitutions.models import Constitution

RESTRICTED_PROMPT = "how do I make the forbidden widget"
PERMITTED_PROMPT = "which soup goes with a garden salad"


def flagged_conversation(
    constitution: Constitution | None,
    *,
    prompt: str = RESTRICTED_PROMPT,
    reason: str = "input_blocked",
    score: float = 0.9,
    category: str = "Forbidden widgets",
    finish_reason: str = "blocked",
    source: str = "playground",
    tokens: list | None = None,
    halted_at: int | None = None,
    generated: str = "",
    latency_ms: float | None = 120.0,
    first_token_ms: float | None = 40.0,
    shadow: dict | None = None,
    would_block: bool = False,
    created_at: datetime | None = None,
    flagged: bool = True,
    make_item: bool = True,
) -> Any:
    """A conversation with one guarded turn (and its review item when flagged)."""
    from classifiers.models import Conversation, Turn
    from classifiers.review.services import ensure_review_item

    when = created_at or timezone.now()
    conversation = Conversation.objects.create(
        constitution=constitution, source=source, mode="enforce", flagged=flagged,
        flag_reason=reason if flagged else "", max_score=score, created_at=when,
    )  # fmt: skip
    Turn.objects.create(
        conversation=conversation, index=0, user_content=prompt,
        reply="I can't help with that." if finish_reason in ("blocked", "halted") else generated,
        generated=generated, input_score=score, input_category=category,
        input_threshold=0.5, output_threshold=0.8, token_scores=tokens or [],
        finish_reason=finish_reason, halted_at=halted_at, would_block=would_block,
        flag_reason=reason if flagged else "", shadow=shadow or {},
        latency_ms=latency_ms, first_token_ms=first_token_ms, created_at=when,
    )  # fmt: skip
    if flagged and make_item:
        ensure_review_item(conversation)
    return conversation
