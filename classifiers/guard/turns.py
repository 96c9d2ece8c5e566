"""Store a guarded turn (and flag its conversation for review)."""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from classifiers.ml.serving.engine import GuardResult
from classifiers.models import (
    Conversation,
    Turn,
)
from classifiers.review.services import after_turn_recorded


def record_turn(
    *,
    conversation: Conversation,
    user_content: str,
    result: GuardResult,
    variant: str = Turn.Variant.GUARDED,
    latency_ms: float | None = None,
    first_token_ms: float | None = None,
    shadow: dict[str, Any] | None = None,
) -> Turn:
    """Store one turn and update the conversation's flag, in one transaction."""
    tokens = [[t.text, None if t.score != t.score else round(t.score, 5)] for t in result.tokens]
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        index = locked.turns.filter(variant=variant).count()
        turn = Turn.objects.create(
            conversation=locked,
            index=index,
            variant=variant,
            user_content=user_content,
            reply=result.text,
            generated=result.generated,
            input_score=result.input.score if result.input else None,
            input_category=result.input.category if result.input else "",
            input_threshold=result.input.threshold if result.input else None,
            output_threshold=result.output_threshold,
            token_scores=tokens,
            finish_reason=result.finish_reason,
            halted_at=result.halted_at,
            cascaded=result.cascaded,
            escalated_at=result.escalated_at,
            would_block=result.would_block,
            flag_reason=result.flag_reason or "",
            shadow=shadow or {},
            latency_ms=latency_ms,
            first_token_ms=first_token_ms,
        )
        if variant == Turn.Variant.GUARDED:
            scores = [s for s in (locked.max_score, result.max_output_score,
                                  result.input.score if result.input else None) if s is not None]
            updates: dict[str, Any] = {"max_score": max(scores) if scores else None}
            reason = result.flag_reason
            if reason and not locked.flagged:
                updates.update(flagged=True, flag_reason=reason)
            Conversation.objects.filter(pk=locked.pk).update(**updates)
        after_turn_recorded(locked)  # review queue item + live dashboard push
    return turn


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None

    def mark_first(self) -> None:
        if self.first is None:
            self.first = (time.perf_counter() - self.started) * 1000

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
