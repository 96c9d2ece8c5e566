"""Review decisions as training feedback: the examples they make, curation, and
retraining with them.
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.utils import timezone

from classifiers.datasets.config import StartError, check_config, generate_config
from classifiers.datasets.services import dataset_start
from classifiers.datasets.tasks import generate_dataset
from classifiers.ml.types import PERMITTED, RESTRICTED
from classifiers.models import (
    Conversation,
    Dataset,
    Decision,
    FeedbackExample,
    ReviewItem,
    TrainingRun,
    Turn,
)
from classifiers.training.config import TrainingError, normalize_config
from classifiers.training.tasks import train_classifier

# Which decision makes which kind of training example.
FEEDBACK_KIND = {Decision.FALSE_POSITIVE: PERMITTED, Decision.MISSED_HARM: RESTRICTED}


class RetrainError(ValueError):
    """A retrain cannot start; the message says why."""


_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 2}


def _categories(constitution: Any) -> list[dict[str, Any]]:
    version = constitution.latest_version()
    if version is not None:
        return list(version.content.get("categories", []))
    return [c.to_content() for c in constitution.categories.all()]


def flagged_turn(conversation: Conversation) -> Turn | None:
    """The turn a reviewer should judge: the first flagged one, else the riskiest."""
    turns = list(conversation.turns.filter(variant=Turn.Variant.GUARDED).order_by("index"))
    for turn in turns:
        if turn.flag_reason:
            return turn
    scored = [t for t in turns if t.input_score is not None]
    if scored:
        return max(scored, key=lambda t: t.input_score or 0.0)
    return turns[-1] if turns else None


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
    turn = flagged_turn(conversation)
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
    if not config or check_config(config):
        config = generate_config()
    last_run = (
        TrainingRun.objects.filter(dataset__constitution_version__constitution=constitution)
        .exclude(config={})
        .order_by("-created_at")
        .first()
    )
    try:
        run_config = normalize_config(last_run.config if last_run else None)
    except TrainingError:
        run_config = normalize_config(None)
    with transaction.atomic():
        try:
            dataset = dataset_start(
                version=version, config=config, user=user,
                endpoint=previous.endpoint if previous else None, enqueue=False,
            )  # fmt: skip
        except StartError as err:
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
