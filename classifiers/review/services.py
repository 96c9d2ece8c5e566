"""The review queue: flagged turns become items; claim, assign, decide, bulk decide."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from classifiers.models import (
    Conversation,
    Decision,
    ReviewItem,
    ReviewStatus,
)
from classifiers.review.dashboard import push_dashboard
from classifiers.review.feedback import flagged_turn, sync_feedback

logger = logging.getLogger(__name__)


class Conflict(Exception):
    """Someone else changed the item first; the message says what it is now."""


def ensure_review_item(conversation: Conversation) -> ReviewItem | None:
    """The review item of a flagged conversation (created once); None if not flagged."""
    conversation.refresh_from_db(fields=["flagged"])
    if not conversation.flagged:
        return None
    turn = flagged_turn(conversation)
    item, created = ReviewItem.objects.get_or_create(
        conversation=conversation,
        # Age counts from the conversation, so backfilled items are not "new".
        defaults={"category": turn.input_category if turn else "",
                  "created_at": conversation.created_at},  # fmt: skip
    )
    if not created and not item.category and turn and turn.input_category:
        ReviewItem.objects.filter(pk=item.pk, category="").update(category=turn.input_category)
    return item


def backfill_review_items() -> int:
    """Create the items of flagged conversations that have none (e.g. older rows)."""
    missing = Conversation.objects.filter(flagged=True, review_item__isnull=True)
    made = 0
    for conversation in missing.iterator(chunk_size=200):
        if ensure_review_item(conversation) is not None:
            made += 1
    return made


def after_turn_recorded(conversation: Conversation) -> None:
    """Called by guard.turns.record_turn: queue a flagged conversation, push counters."""
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the turn saved
            ensure_review_item(conversation)
    except Exception:  # review bookkeeping must never break the guard itself
        logger.warning("could not queue conversation %s for review", conversation.pk, exc_info=True)
    transaction.on_commit(push_dashboard)


def _describe(item_id: int) -> str:
    item = ReviewItem.objects.select_related("assignee", "decided_by").filter(pk=item_id).first()
    if item is None:
        return "the item no longer exists"
    if item.status == ReviewStatus.DECIDED:
        who = item.decided_by.username if item.decided_by else "someone"
        return f"already decided by {who} ({item.get_decision_display()})"
    if item.assignee is not None:
        return f"claimed by {item.assignee.username}"
    return "changed by someone else meanwhile; reload and try again"


def claim(*, item_id: int, user: Any) -> ReviewItem:
    """Take an open item; exactly one of several racing reviewers wins."""
    won = (
        ReviewItem.objects.filter(pk=item_id, assignee__isnull=True, status=ReviewStatus.OPEN)
        .update(assignee=user, status=ReviewStatus.CLAIMED, version=F("version") + 1)
    )
    item = ReviewItem.objects.get(pk=item_id)
    if not won and not (item.assignee_id == user.pk and item.status == ReviewStatus.CLAIMED):
        raise Conflict(f"Item #{item_id} is {_describe(item_id)}.")
    _after_change()
    return item


def release(*, item_id: int, user: Any) -> ReviewItem:
    released = ReviewItem.objects.filter(
        pk=item_id, assignee=user, status=ReviewStatus.CLAIMED
    ).update(assignee=None, status=ReviewStatus.OPEN, version=F("version") + 1)
    if not released:
        raise Conflict(f"Item #{item_id} is not claimed by you: {_describe(item_id)}.")
    _after_change()
    return ReviewItem.objects.get(pk=item_id)


def assign(*, item_id: int, assignee: Any, version: int) -> ReviewItem:
    """Give an undecided item to a reviewer, if nobody changed it since `version`."""
    moved = (
        ReviewItem.objects.filter(pk=item_id, version=version)
        .exclude(status=ReviewStatus.DECIDED)
        .update(assignee=assignee, status=ReviewStatus.CLAIMED, version=F("version") + 1)
    )
    if not moved:
        raise Conflict(f"Item #{item_id} is {_describe(item_id)}.")
    _after_change()
    return ReviewItem.objects.get(pk=item_id)


def decide(
    *, item_id: int, user: Any, decision: str, note: str = "", version: int
) -> ReviewItem:
    """Record a decision made on `version` of the item; Conflict if it moved on.

    The reviewer must hold the item or it must be unassigned (deciding an open item
    claims it). Re-deciding your own decision is allowed (with the current version).
    """
    if decision not in Decision.values:
        raise ValueError(f"unknown decision {decision!r}")
    with transaction.atomic():
        updated = (
            ReviewItem.objects.filter(pk=item_id, version=version)
            .filter(Q(assignee__isnull=True) | Q(assignee=user))
            .update(
                status=ReviewStatus.DECIDED, decision=decision, note=note.strip()[:5000],
                decided_by=user, decided_at=timezone.now(), assignee=user,
                version=F("version") + 1,
            )
        )  # fmt: skip
        if not updated:
            raise Conflict(f"Your decision on item #{item_id} was not saved: it is {_describe(item_id)}.")
        item = ReviewItem.objects.select_related("conversation").get(pk=item_id)
        sync_feedback(item, user)
    _after_change()
    return item


def bulk_decide(
    *, item_ids: Iterable[int], user: Any, decision: str, note: str = ""
) -> tuple[list[int], list[str]]:
    """Decide many undecided items; returns (decided ids, conflict messages)."""
    decided: list[int] = []
    conflicts: list[str] = []
    for item_id in sorted(set(item_ids)):
        current = ReviewItem.objects.filter(pk=item_id).values("version", "status").first()
        if current is None:
            conflicts.append(f"Item #{item_id} does not exist.")
            continue
        if current["status"] == ReviewStatus.DECIDED:
            conflicts.append(f"Item #{item_id} is {_describe(item_id)}.")
            continue
        try:
            decide(item_id=item_id, user=user, decision=decision, note=note,
                   version=current["version"])  # fmt: skip
        except Conflict as err:
            conflicts.append(str(err))
        else:
            decided.append(item_id)
    return decided, conflicts


def _after_change() -> None:
    transaction.on_commit(push_dashboard)


QUEUE_SORTS = {
    "score": "-conversation__max_score",
    "-score": "conversation__max_score",
    "age": "created_at",  # oldest first
    "-age": "-created_at",
}


def queue_items(filters: dict[str, Any]) -> QuerySet[ReviewItem]:
    """Items matching the queue's filters (already cleaned by the form)."""
    items = ReviewItem.objects.select_related(
        "conversation__constitution", "assignee", "decided_by"
    )
    if filters.get("constitution"):
        items = items.filter(conversation__constitution=filters["constitution"])
    if filters.get("category"):
        items = items.filter(category=filters["category"])
    if filters.get("reason"):
        items = items.filter(conversation__flag_reason=filters["reason"])
    if filters.get("status"):
        items = items.filter(status=filters["status"])
    if filters.get("decision"):
        items = items.filter(decision=filters["decision"])
    if filters.get("assignee"):
        items = items.filter(assignee=filters["assignee"])
    if filters.get("since"):
        items = items.filter(conversation__created_at__date__gte=filters["since"])
    if filters.get("until"):
        items = items.filter(conversation__created_at__date__lte=filters["until"])
    order = QUEUE_SORTS.get(filters.get("sort") or "", "-conversation__max_score")
    field = order.lstrip("-")
    if field.endswith("max_score"):
        expr = F(field).desc(nulls_last=True) if order.startswith("-") else F(field).asc(nulls_last=True)
        return items.order_by(expr, "created_at")
    return items.order_by(order, "pk")
