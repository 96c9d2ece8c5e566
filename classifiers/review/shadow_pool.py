"""Shadow traffic as a traffic pool: what users sent while a constitution ran in shadow
mode, labelled by the reviewers' decisions, in one action.

CC++ ran its classifiers in shadow mode on live traffic before enforcing; those
prompts are the most realistic negatives (and reviewed positives) there are. Each
guarded turn's user message becomes one prompt:
- a conversation nobody flagged: every message, benign ("shadow: passed");
- reviewed as a false positive: every message, benign ("shadow: false_positive");
- reviewed as a correct block or a missed harm: the reviewed message (the flagged
  one, else the riskiest), harmful; its other messages are left out (which of them
  carried the harm is not known);
- flagged but not decided yet, or escalated: left out until someone decides.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from classifiers.datasets.traffic import TrafficError, add_prompts
from classifiers.ml.eval.labelled_sets import LabelledPrompt
from classifiers.models import Conversation, Decision, TrafficPool, Turn

HARMFUL_DECISIONS = (Decision.CORRECT_BLOCK, Decision.MISSED_HARM)
# The newest ones, when there are more: the action runs in the request.
MAX_CONVERSATIONS = 20_000


def reviewed_turn(turns: list[Turn]) -> Turn:
    """The turn a reviewer judged (review.feedback.flagged_turn's rule, on turns
    already loaded): the first flagged one, else the riskiest, else the last."""
    flagged = [t for t in turns if t.flag_reason]
    if flagged:
        return flagged[0]
    scored = [t for t in turns if t.input_score is not None]
    return max(scored, key=lambda t: t.input_score or 0.0) if scored else turns[-1]


def shadow_prompts(constitution: Any) -> tuple[list[LabelledPrompt], dict[str, int]]:
    """The labelled prompts of a constitution's shadow conversations, and how many
    conversations were used or left out, and why."""
    counts: Counter[str] = Counter()
    prompts: list[LabelledPrompt] = []
    conversations = (
        Conversation.objects.filter(constitution=constitution, mode="shadow")
        .select_related("review_item")
        .prefetch_related("turns")
        .order_by("-created_at")[:MAX_CONVERSATIONS]
    )
    for conversation in conversations:
        item = getattr(conversation, "review_item", None)
        decision = item.decision if item is not None else ""
        turns = sorted(
            (t for t in conversation.turns.all() if t.variant == Turn.Variant.GUARDED),
            key=lambda t: t.index,
        )
        if not turns:
            continue
        if decision in HARMFUL_DECISIONS:
            turn = reviewed_turn(turns)
            prompts.append(LabelledPrompt(turn.user_content, 1, f"shadow: {decision}"))
        elif decision == Decision.FALSE_POSITIVE:
            prompts += [LabelledPrompt(t.user_content, 0, "shadow: false_positive") for t in turns]
        elif conversation.flagged or decision == Decision.ESCALATE:
            counts["left out: flagged, not decided"] += 1
            continue
        else:
            prompts += [LabelledPrompt(t.user_content, 0, "shadow: passed") for t in turns]
        counts["used"] += 1
    return [p for p in prompts if p.text.strip()], dict(counts)


def pool_from_shadow(*, constitution: Any, name: str, user: Any) -> tuple[TrafficPool, dict]:
    """Add the shadow traffic to the pool `name` (created if new; prompts it holds
    are not added twice). Raises TrafficError when there is nothing to add."""
    prompts, counts = shadow_prompts(constitution)
    if not prompts:
        raise TrafficError(
            f"{constitution.slug} has no usable shadow conversations yet: set its guard "
            "to shadow mode, let traffic through, and review what was flagged"
        )
    pool = add_prompts(
        name=" ".join(name.split())[:100] or f"shadow: {constitution.slug}", prompts=prompts,
        user=user, source=TrafficPool.Source.SHADOW,
        description=f"Shadow-mode traffic of {constitution.slug}, labelled by review",
    )  # fmt: skip
    return pool, counts
