"""Real concurrency: threads, each with its own database connection, race on one item."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from classifiers.models import ReviewItem
from classifiers.review import services as review
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import flagged_conversation

pytestmark = pytest.mark.django_db(transaction=True)


def _race(users, action):  # type: ignore[no-untyped-def]
    """Run action(user) in one thread per user, released together; collect outcomes."""
    barrier = threading.Barrier(len(users))
    outcomes: dict[str, str] = {}

    def worker(user) -> None:  # type: ignore[no-untyped-def]
        try:
            barrier.wait()
            action(user)
            outcomes[user.username] = "won"
        except review.Conflict as err:
            outcomes[user.username] = f"conflict: {err}"
        finally:
            connections.close_all()  # this thread's connection

    threads = [threading.Thread(target=worker, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return outcomes


def test_of_eight_reviewers_racing_to_claim_one_item_exactly_one_wins(make_user):  # type: ignore[no-untyped-def]
    reviewers = [make_user(f"reviewer{i}", "reviewer") for i in range(8)]
    for _ in range(3):  # a few rounds, each on a fresh item
        item = flagged_conversation(published_constitution(f"w{ReviewItem.objects.count()}", categories=SHOP_AND_GARDEN).constitution).review_item
        outcomes = _race(reviewers, lambda u, pk=item.pk: review.claim(item_id=pk, user=u))
        winners = [name for name, result in outcomes.items() if result == "won"]
        assert len(outcomes) == 8 and len(winners) == 1, outcomes
        item.refresh_from_db()
        assert item.assignee.username == winners[0] and item.version == 1
        assert all(f"claimed by {winners[0]}" in r for r in outcomes.values() if r != "won")


def test_racing_decisions_on_one_version_keep_one_and_tell_the_others(make_user):  # type: ignore[no-untyped-def]
    reviewers = [make_user(f"reviewer{i}", "reviewer") for i in range(6)]
    decisions = {u.username: d for u, d in zip(reviewers, ["correct_block", "false_positive", "missed_harm",
                                                             "escalate", "false_positive", "missed_harm"], strict=True)}  # fmt: skip
    item = flagged_conversation(published_constitution(categories=SHOP_AND_GARDEN).constitution).review_item
    outcomes = _race(
        reviewers,
        lambda u: review.decide(item_id=item.pk, user=u, decision=decisions[u.username],
                                note=f"by {u.username}", version=0),  # fmt: skip
    )
    winners = [name for name, result in outcomes.items() if result == "won"]
    assert len(outcomes) == 6 and len(winners) == 1, outcomes
    item.refresh_from_db()
    # The saved decision is the winner's, whole; every loser was told it lost.
    assert item.decided_by.username == winners[0]
    assert (item.decision, item.note) == (decisions[winners[0]], f"by {winners[0]}")
    assert item.version == 1
    assert all("not saved" in r for r in outcomes.values() if r != "won")
    expected_feedback = 1 if decisions[winners[0]] in ("false_positive", "missed_harm") else 0
    assert item.feedback.count() == expected_feedback
