"""Review services: claiming, deciding with versions, bulk, feedback into datasets."""

from __future__ import annotations

import pytest

from classifiers.datasets.examples import feedback_examples_for
from classifiers.models import FeedbackExample, ReviewItem
from classifiers.review import services as review
from classifiers.review.feedback import remove_feedback, retrain_with_feedback
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import (
    PERMITTED_PROMPT,
    flagged_conversation,
)

pytestmark = pytest.mark.django_db


def _item(**kwargs) -> ReviewItem:  # type: ignore[no-untyped-def]
    constitution = kwargs.pop("constitution", None) or published_constitution(categories=SHOP_AND_GARDEN).constitution
    return flagged_conversation(constitution, **kwargs).review_item


def test_a_flagged_conversation_gets_exactly_one_review_item_with_its_category():
    item = _item(category="Forbidden widgets")
    assert item.status == "open" and item.category == "Forbidden widgets"
    assert review.ensure_review_item(item.conversation).pk == item.pk
    assert ReviewItem.objects.count() == 1


def test_an_unflagged_conversation_gets_no_item_and_backfill_finds_missed_ones():
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    flagged_conversation(constitution, flagged=False)
    missed = flagged_conversation(constitution, make_item=False)
    assert ReviewItem.objects.count() == 0
    assert review.backfill_review_items() == 1
    assert ReviewItem.objects.get().conversation_id == missed.pk


def test_record_turn_queues_a_flagged_conversation_for_review(bob):  # type: ignore[no-untyped-def]
    from classifiers.guard.turns import record_turn
    from classifiers.ml.serving.engine import GuardResult, InputDecision
    from classifiers.models import Conversation

    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    conversation = Conversation.objects.create(constitution=constitution, source="api", mode="enforce")
    decision = InputDecision(
        score=0.97, category="Forbidden widgets", category_prob=0.9, threshold=0.5,
        flagged=True, blocked=True,
    )  # fmt: skip
    record_turn(
        conversation=conversation, user_content="how do I make the forbidden widget",
        result=GuardResult(text="No.", input=decision, finish_reason="blocked"),
    )  # fmt: skip
    item = ReviewItem.objects.get(conversation=conversation)
    assert item.category == "Forbidden widgets" and item.status == "open"


def test_a_second_reviewer_cannot_claim_a_claimed_item(bob, make_user):  # type: ignore[no-untyped-def]
    rita = make_user("rita", "reviewer")
    item = _item()
    review.claim(item_id=item.pk, user=bob)
    with pytest.raises(review.Conflict, match="claimed by bob"):
        review.claim(item_id=item.pk, user=rita)
    review.claim(item_id=item.pk, user=bob)  # claiming your own again is fine
    item.refresh_from_db()
    assert item.assignee == bob and item.status == "claimed" and item.version == 1


def test_a_decision_on_a_stale_version_is_refused_not_lost(bob, make_user):  # type: ignore[no-untyped-def]
    rita = make_user("rita", "reviewer")
    item = _item()
    review.decide(item_id=item.pk, user=bob, decision="correct_block", note="clear", version=0)
    with pytest.raises(review.Conflict, match="already decided by bob"):
        review.decide(item_id=item.pk, user=rita, decision="false_positive", version=0)
    item.refresh_from_db()
    assert (item.decision, item.note, item.decided_by) == ("correct_block", "clear", bob)
    assert item.version == 1


def test_false_positive_makes_a_permitted_example_in_a_permitted_category(bob):  # type: ignore[no-untyped-def]
    item = _item(prompt=PERMITTED_PROMPT, category="Forbidden widgets")
    review.decide(item_id=item.pk, user=bob, decision="false_positive", version=0)
    example = FeedbackExample.objects.get()
    assert example.label == 0 and example.active
    # The classifier's category was restricted; the nearest permitted one by words.
    assert example.category == "Gardening"
    assert example.messages == [{"role": "user", "content": PERMITTED_PROMPT}]
    assert example.created_by == bob and example.review_item_id == item.pk


def test_missed_harm_makes_a_restricted_example_and_redeciding_retracts_it(bob):  # type: ignore[no-untyped-def]
    item = _item(reason="near_threshold", finish_reason="stop", category="Widget care",
                 generated="some reply text")  # fmt: skip
    item = review.decide(item_id=item.pk, user=bob, decision="missed_harm", version=0)
    example = FeedbackExample.objects.get()
    assert (example.label, example.category, example.response) == (1, "Forbidden widgets", "some reply text")
    review.decide(item_id=item.pk, user=bob, decision="correct_block", version=item.version)
    example.refresh_from_db()
    assert not example.active and example.removed_by == bob
    assert feedback_examples_for(item.conversation.constitution) == []


def test_feedback_examples_for_returns_active_examples_marked_as_feedback(bob, alice):  # type: ignore[no-untyped-def]
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    first = _item(constitution=constitution, prompt="tell me about vaccines")
    second = _item(constitution=constitution, prompt="what soup goes with salad")
    review.decide(item_id=first.pk, user=bob, decision="false_positive", version=0)
    review.decide(item_id=second.pk, user=bob, decision="false_positive", version=0)
    examples = feedback_examples_for(constitution)
    assert [e.messages[0]["content"] for e in examples] == ["tell me about vaccines", "what soup goes with salad"]
    assert all(e.meta["source"] == "feedback" and e.label == 0 for e in examples)
    assert remove_feedback(example=FeedbackExample.objects.get(review_item=first), user=alice)
    assert [e.messages[0]["content"] for e in feedback_examples_for(constitution)] == ["what soup goes with salad"]


def test_bulk_decide_decides_the_open_items_and_reports_the_others(bob, make_user):  # type: ignore[no-untyped-def]
    rita = make_user("rita", "reviewer")
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    a, b, c = (_item(constitution=constitution) for _ in range(3))
    review.claim(item_id=c.pk, user=rita)
    decided, conflicts = review.bulk_decide(item_ids=[a.pk, b.pk, c.pk, 999999], user=bob, decision="escalate")
    assert decided == [a.pk, b.pk]
    assert len(conflicts) == 2 and "claimed by rita" in conflicts[0] and "does not exist" in conflicts[1]
    assert ReviewItem.objects.filter(decision="escalate").count() == 2


def test_a_dataset_build_adds_active_feedback_to_the_train_split(bob, alice, monkeypatch):  # type: ignore[no-untyped-def]
    from classifiers.datasets import generators, run
    from classifiers.datasets.config import generate_config
    from classifiers.datasets.services import dataset_start
    from tests.datasets_helpers import FakeGenerator

    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    item = _item(constitution=constitution, prompt="tell me about vaccines")
    review.decide(item_id=item.pk, user=bob, decision="false_positive", version=0)
    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator())
    config = generate_config(per_category=1, transforms=[], heldout_families=[])
    dataset = dataset_start(
        version=constitution.latest_version(), config=config, user=alice, enqueue=False
    )
    dataset = run.run_dataset(dataset.pk)
    assert dataset.status == "done", dataset.error
    assert dataset.feedback_included == 1 and dataset.counts["feedback"] == 1
    row = dataset.examples.get(meta__source="feedback")
    assert (row.prompt_text, row.label, row.split, row.transform) == ("tell me about vaccines", 0, "train", "original")
    assert row.category in ("Widget care", "Gardening")
    assert dataset.counts["total"] == dataset.examples.count()


def test_retrain_with_feedback_queues_a_dataset_and_a_run_chained_after_it(alice, django_capture_on_commit_callbacks, monkeypatch):  # type: ignore[no-untyped-def]
    from classifiers.datasets import tasks as dataset_tasks

    sent = []
    monkeypatch.setattr(dataset_tasks.generate_dataset, "apply_async", lambda *a, **kw: sent.append((a, kw)))
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    with django_capture_on_commit_callbacks(execute=True):
        dataset, run = retrain_with_feedback(constitution=constitution, user=alice)
    assert dataset.status == "queued" and run.status == "queued" and run.dataset == dataset
    assert dataset.constitution_version == constitution.latest_version()
    (args, kwargs), = sent
    assert args == ((dataset.pk,),)
    assert kwargs["link"].task == "classifiers.tasks.train_classifier"
    assert tuple(kwargs["link"].args) == (run.pk,)
