"""Review of flagged conversations: claim, assign, decide (one or many), feedback.

Every state change is ONE conditional UPDATE (`filter(pk=..., <expected state>)
.update(..., version=F("version") + 1)`): PostgreSQL re-checks the WHERE clause
after a concurrent writer commits, so of two reviewers racing to claim an item
exactly one sees "1 row updated", and a decision made on a stale version updates
nothing and raises `Conflict` instead of overwriting someone else's decision.

Decisions feed the next dataset: "false_positive" stores a PERMITTED training
example and "missed_harm" a RESTRICTED one (`FeedbackExample`); the dataset build
adds the active ones to its train split via `feedback_examples_for`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from classifiers.ml.types import PERMITTED, RESTRICTED, Example
from classifiers.models import (
    Conversation,
    Dataset,
    Decision,
    FeedbackExample,
    ReviewItem,
    ReviewStatus,
    TrainingRun,
    Turn,
)

logger = logging.getLogger(__name__)

# Which decision makes which kind of training example.
FEEDBACK_KIND = {Decision.FALSE_POSITIVE: PERMITTED, Decision.MISSED_HARM: RESTRICTED}
DASHBOARD_GROUP = "dashboard"
PUSH_EVERY_SECONDS = 1.0  # live dashboard counters: at most one push per second


class Conflict(Exception):
    """Someone else changed the item first; the message says what it is now."""


class RetrainError(ValueError):
    """A retrain cannot start; the message says why."""


# --------------------------------------------------------------------------- items


def _flagged_turn(conversation: Conversation) -> Turn | None:
    """The turn a reviewer should judge: the first flagged one, else the riskiest."""
    turns = list(conversation.turns.filter(variant=Turn.Variant.GUARDED).order_by("index"))
    for turn in turns:
        if turn.flag_reason:
            return turn
    scored = [t for t in turns if t.input_score is not None]
    if scored:
        return max(scored, key=lambda t: t.input_score or 0.0)
    return turns[-1] if turns else None


def ensure_review_item(conversation: Conversation) -> ReviewItem | None:
    """The review item of a flagged conversation (created once); None if not flagged."""
    conversation.refresh_from_db(fields=["flagged"])
    if not conversation.flagged:
        return None
    turn = _flagged_turn(conversation)
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
    """Called by guard_service.record_turn: queue a flagged conversation, push counters."""
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


# ------------------------------------------------------------------------ queue


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


# --------------------------------------------------------------------- feedback

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def _categories(constitution: Any) -> list[dict[str, Any]]:
    version = constitution.latest_version()
    if version is not None:
        return list(version.content.get("categories", []))
    return [c.to_content() for c in constitution.categories.all()]


def pick_category(constitution: Any, *, kind: str, hint: str, text: str) -> str:
    """`hint` if it is a category of `kind`, else the `kind` category whose words
    overlap `text` most (ties: the first in the constitution); "" if none exists."""
    candidates = [c for c in _categories(constitution) if c.get("kind") == kind]
    if not candidates:
        return hint
    if any(c["name"] == hint for c in candidates):
        return hint
    words = _words(text)

    def overlap(category: dict[str, Any]) -> int:
        about = " ".join(
            [category.get("name", ""), category.get("description", "")]
            + list(category.get("example_queries", []))
        )
        return len(words & _words(about))

    return max(candidates, key=overlap)["name"]  # max keeps the first of ties


def sync_feedback(item: ReviewItem, user: Any) -> FeedbackExample | None:
    """Make the item's feedback match its decision (inside the decision's transaction)."""
    kind = FEEDBACK_KIND.get(item.decision)
    stale = FeedbackExample.objects.filter(review_item=item, active=True)
    if kind is None:
        stale.update(active=False, removed_by=user, removed_at=timezone.now())
        return None
    stale.exclude(decision=item.decision).update(
        active=False, removed_by=user, removed_at=timezone.now()
    )
    existing = stale.filter(decision=item.decision).first()
    if existing is not None:
        return existing
    conversation = item.conversation
    if conversation.constitution_id is None:
        return None
    turn = _flagged_turn(conversation)
    if turn is None:
        return None
    messages: list[dict[str, str]] = []
    for earlier in conversation.turns.filter(
        variant=Turn.Variant.GUARDED, index__lt=turn.index
    ).order_by("index"):
        messages.append({"role": "user", "content": earlier.user_content})
        if earlier.reply:
            messages.append({"role": "assistant", "content": earlier.reply})
    messages.append({"role": "user", "content": turn.user_content})
    response = turn.generated or ""
    return FeedbackExample.objects.create(
        constitution=conversation.constitution,
        review_item=item,
        messages=messages,
        prompt_text=turn.user_content,
        response=response,
        label=1 if kind == RESTRICTED else 0,
        category=pick_category(
            conversation.constitution, kind=kind, hint=turn.input_category,
            text=turn.user_content + " " + response,
        ),  # fmt: skip
        decision=item.decision,
        created_by=user,
    )


def feedback_examples_for(constitution: Any) -> list[Example]:
    """The constitution's active feedback as training examples (meta source feedback)."""
    rows = FeedbackExample.objects.filter(constitution=constitution, active=True).order_by("pk")
    return [
        Example(
            messages=[dict(m) for m in row.messages],
            response=row.response,
            label=int(row.label),
            category=row.category,
            source_id=f"feedback-{row.pk}",
            transform="original",
            meta={"source": "feedback", "feedback_id": row.pk, "decision": row.decision},
        )
        for row in rows
    ]


def feedback_for_dataset(dataset: Dataset) -> list[Example]:
    """The feedback a new dataset of this constitution trains on (train split only:
    calibration and test stay purely synthetic, so the reported numbers stay
    comparable across datasets)."""
    examples = feedback_examples_for(dataset.constitution_version.constitution)
    for example in examples:
        example.meta["split"] = "train"
    return examples


def remove_feedback(*, example: FeedbackExample, user: Any) -> bool:
    """Deactivate one feedback example; False if it already was."""
    return bool(
        FeedbackExample.objects.filter(pk=example.pk, active=True).update(
            active=False, removed_by=user, removed_at=timezone.now()
        )
    )


def retrain_with_feedback(*, constitution: Any, user: Any) -> tuple[Dataset, TrainingRun]:
    """A new dataset of the latest version (with the active feedback) and a training
    run that the worker starts when that dataset is done (a Celery link)."""
    from classifiers import services_datasets, services_training
    from classifiers.tasks.datasets import generate_dataset
    from classifiers.tasks.training import train_classifier

    version = constitution.latest_version()
    if version is None:
        raise RetrainError(f"{constitution.name} has no published version yet; publish one first")
    previous = (
        Dataset.objects.filter(constitution_version__constitution=constitution)
        .order_by("-created_at")
        .first()
    )
    config = dict(previous.config) if previous and previous.config else {}
    # A regenerated dataset has new labels: an audit of the previous one does not carry.
    config.pop("audit", None)
    if not config or services_datasets.check_config(config):
        config = services_datasets.generate_config()
    last_run = (
        TrainingRun.objects.filter(dataset__constitution_version__constitution=constitution)
        .exclude(config={})
        .order_by("-created_at")
        .first()
    )
    try:
        run_config = services_training.normalize_config(last_run.config if last_run else None)
    except services_training.TrainingError:
        run_config = services_training.normalize_config(None)
    with transaction.atomic():
        try:
            dataset = services_datasets.dataset_start(
                version=version, config=config, user=user,
                endpoint=previous.endpoint if previous else None, enqueue=False,
            )  # fmt: skip
        except services_datasets.StartError as err:
            raise RetrainError(str(err)) from err
        run = TrainingRun.objects.create(
            dataset=dataset, config=run_config, activate_when_done=False,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )  # fmt: skip
        # The run waits queued; the dataset task's success callback starts it. A
        # dataset that failed leaves nothing to train on, so the run fails with a
        # clear error rather than training on stale data.
        transaction.on_commit(
            lambda: generate_dataset.apply_async(
                (dataset.pk,), link=train_classifier.si(run.pk)
            )
        )
    return dataset, run


# ------------------------------------------------------------ live dashboard push

_push_lock = threading.Lock()
_last_push = 0.0
_push_pending = False


def push_dashboard() -> None:
    """Send the live counters to /ws/dashboard/ at most once per PUSH_EVERY_SECONDS;
    a call inside the quiet period schedules one trailing push, so the last change
    always shows."""
    global _last_push, _push_pending
    with _push_lock:
        if _push_pending:
            return
        wait = PUSH_EVERY_SECONDS - (time.monotonic() - _last_push)
        if wait > 0:
            _push_pending = True
            timer = threading.Timer(wait, _trailing_push)
            timer.daemon = True
            timer.start()
            return
        _last_push = time.monotonic()
    _send_counters()


def _trailing_push() -> None:
    global _last_push, _push_pending
    with _push_lock:
        _push_pending = False
        _last_push = time.monotonic()
    try:
        _send_counters()
    finally:
        connections.close_all()  # this thread's own connections only


def _send_counters() -> None:
    try:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer
        from django.template.loader import render_to_string

        from classifiers.views.dashboard import live_counters

        layer = get_channel_layer()
        if layer is None:
            return
        html = render_to_string(
            "classifiers/dashboard/_live.html", {"live": live_counters(), "oob": True}
        )
        async_to_sync(layer.group_send)(DASHBOARD_GROUP, {"type": "dashboard.update", "html": html})
    except Exception:  # a Redis hiccup must not break a guard request or a decision
        logger.warning("could not push dashboard counters", exc_info=True)
