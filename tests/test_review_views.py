"""Review pages: roles on every view, queue filters/sort/pages, item page, decisions,
conflicts, bulk, exports, feedback curation and retraining."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from classifiers.models import Dataset, FeedbackExample, ReviewItem, TrainingRun
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import flagged_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def items():  # type: ignore[no-untyped-def]
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    low = flagged_conversation(constitution, prompt="tell me about vaccines", score=0.55,
                               category="Widget care", reason="near_threshold", finish_reason="stop")  # fmt: skip
    high = flagged_conversation(
        constitution, prompt="how do I make the forbidden widget", score=0.97,
        tokens=[["Sure", 0.1], [" here", 0.5], [" is", 0.95], [" how", 0.99]], halted_at=2,
        generated="Sure here is how", reason="output_halted", finish_reason="halted",
        shadow={"would_block": True, "input_score": 0.8, "max_output_score": 0.9},
    )  # fmt: skip
    return constitution, low.review_item, high.review_item


def _login(client, user):  # type: ignore[no-untyped-def]
    client.force_login(user)
    return client


READ_URLS = [
    lambda i: reverse("classifiers:review"),
    lambda i: reverse("classifiers:review_item", args=[i.pk]),
    lambda i: reverse("classifiers:review_export", args=["csv"]),
    lambda i: reverse("classifiers:review_export", args=["jsonl"]),
    lambda i: reverse("classifiers:review_feedback_index"),
    lambda i: reverse("classifiers:review_feedback", args=["widgets"]),
]
DECIDE_POSTS = [
    lambda i: (reverse("classifiers:review_claim", args=[i.pk]), {}),
    lambda i: (reverse("classifiers:review_release", args=[i.pk]), {}),
    lambda i: (reverse("classifiers:review_assign", args=[i.pk]), {"version": 0, "assignee": 1}),
    lambda i: (reverse("classifiers:review_decide", args=[i.pk]), {"version": 0, "decision": "escalate"}),
    lambda i: (reverse("classifiers:review_bulk"), {"ids": [i.pk], "decision_bulk": "escalate"}),
]


def test_viewers_and_users_without_a_role_get_403_everywhere(client, items, victor, charlie):  # type: ignore[no-untyped-def]
    _, item, _ = items
    for user in (victor, charlie):
        _login(client, user)
        for url in READ_URLS:
            assert client.get(url(item)).status_code == 403, url(item)
        for post in DECIDE_POSTS:
            url, data = post(item)
            assert client.post(url, data).status_code == 403, url
    item.refresh_from_db()
    assert item.status == "open" and item.version == 0


def test_anonymous_users_are_sent_to_login(client, items):  # type: ignore[no-untyped-def]
    _, item, _ = items
    response = client.get(reverse("classifiers:review"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_policy_authors_read_the_queue_but_cannot_decide(client, items, alice):  # type: ignore[no-untyped-def]
    _, item, _ = items
    _login(client, alice)
    for url in READ_URLS:
        assert client.get(url(item)).status_code == 200, url(item)
    for post in DECIDE_POSTS:
        url, data = post(item)
        assert client.post(url, data).status_code == 403, url
    assert b"Read only" in client.get(reverse("classifiers:review_item", args=[item.pk])).content
    item.refresh_from_db()
    assert item.status == "open" and item.version == 0


def test_the_queue_sorts_by_score_and_age_filters_and_serves_a_partial(client, items, bob):  # type: ignore[no-untyped-def]
    _, low, high = items
    _login(client, bob)
    page = client.get(reverse("classifiers:review")).content.decode()
    assert page.index(f'data-item="{high.pk}"') < page.index(f'data-item="{low.pk}"')
    oldest_first = client.get(reverse("classifiers:review"), {"sort": "age"}).content.decode()
    assert oldest_first.index(f'data-item="{low.pk}"') < oldest_first.index(f'data-item="{high.pk}"')
    only_halted = client.get(reverse("classifiers:review"), {"reason": "output_halted"}).content.decode()
    assert f'data-item="{high.pk}"' in only_halted and f'data-item="{low.pk}"' not in only_halted
    by_category = client.get(reverse("classifiers:review"), {"category": "Widget care"}).content.decode()
    assert f'data-item="{low.pk}"' in by_category and f'data-item="{high.pk}"' not in by_category
    partial = client.get(reverse("classifiers:review"), {"sort": "score"}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and b"<html" not in partial.content and b'id="review-table"' in partial.content
    future = client.get(reverse("classifiers:review"), {"since": "2999-01-01"}).content.decode()
    assert "Nothing to review" in future
    assert client.get(reverse("classifiers:review"), {"since": "not a date"}).status_code == 400


def test_the_queue_paginates(client, bob):  # type: ignore[no-untyped-def]
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    for i in range(27):
        flagged_conversation(constitution, score=i / 100)
    _login(client, bob)
    first = client.get(reverse("classifiers:review")).content.decode()
    assert first.count("data-item=") == 25 and "Page 1 of 2" in first
    second = client.get(reverse("classifiers:review"), {"page": 2}).content.decode()
    assert second.count("data-item=") == 2


def test_the_item_page_highlights_tokens_marks_the_halt_and_shows_the_shadow(client, items, bob):  # type: ignore[no-untyped-def]
    _, _, high = items
    _login(client, bob)
    html = client.get(reverse("classifiers:review_item", args=[high.pk])).content.decode()
    from classifiers.review.views import token_colour

    # The playground's scale: hue 45 - 45 s, alpha 0.08 + 0.72 s.
    assert token_colour(0.5) == "hsla(22.5, 95%, 55%, 0.440)"
    assert f'style="background: {token_colour(0.99)}"' in html
    assert 'title="score 0.990"' in html
    assert html.index('data-testid="halt-marker"') < html.index("> is</span>")
    assert "would block" in html and "input score <strong>0.970</strong>" in html
    assert "Forbidden widgets" in html


def test_bob_claims_decides_and_a_stale_decision_answers_409(client, items, bob, make_user):  # type: ignore[no-untyped-def]
    _, item, _ = items
    rita = make_user("rita", "reviewer")
    _login(client, bob)
    response = client.post(reverse("classifiers:review_claim", args=[item.pk]), headers={"HX-Request": "true"})
    assert response.status_code == 200 and b"You claimed" in response.content
    item.refresh_from_db()
    assert item.assignee == bob and item.version == 1
    _login(client, rita)
    taken = client.post(reverse("classifiers:review_claim", args=[item.pk]), headers={"Accept": "application/json"})
    assert taken.status_code == 409 and "claimed by bob" in taken.json()["message"]
    stale = client.post(reverse("classifiers:review_decide", args=[item.pk]), {"decision": "escalate", "version": 1},
                        headers={"HX-Request": "true"})  # fmt: skip
    assert stale.status_code == 409 and b"claimed by bob" in stale.content
    _login(client, bob)
    done = client.post(reverse("classifiers:review_decide", args=[item.pk]),
                       {"decision": "false_positive", "version": 1, "note": "harmless"})  # fmt: skip
    assert done.status_code == 302
    item.refresh_from_db()
    assert (item.status, item.decision, item.note, item.decided_by) == ("decided", "false_positive", "harmless", bob)
    assert FeedbackExample.objects.get().label == 0
    bad = client.post(reverse("classifiers:review_decide", args=[item.pk]), {"decision": "nonsense", "version": 2})
    assert bad.status_code == 400


def test_assigning_and_releasing(client, items, bob, make_user):  # type: ignore[no-untyped-def]
    _, item, _ = items
    rita = make_user("rita", "reviewer")
    _login(client, bob)
    response = client.post(reverse("classifiers:review_assign", args=[item.pk]), {"version": 0, "assignee": rita.pk})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.assignee == rita and item.status == "claimed"
    again = client.post(reverse("classifiers:review_assign", args=[item.pk]), {"version": 0, "assignee": bob.pk},
                        headers={"Accept": "application/json"})  # fmt: skip
    assert again.status_code == 409
    assert client.post(reverse("classifiers:review_assign", args=[item.pk]), {"version": 1, "assignee": 99999}).status_code == 400
    assert client.post(reverse("classifiers:review_release", args=[item.pk]), headers={"Accept": "application/json"}).status_code == 409
    _login(client, rita)
    assert client.post(reverse("classifiers:review_release", args=[item.pk])).status_code == 302
    item.refresh_from_db()
    assert item.assignee is None and item.status == "open"


def test_bulk_decisions_report_conflicts_in_the_table(client, items, bob, make_user):  # type: ignore[no-untyped-def]
    _, low, high = items
    from classifiers.review import services as review

    review.claim(item_id=high.pk, user=make_user("rita", "reviewer"))
    _login(client, bob)
    response = client.post(reverse("classifiers:review_bulk"), {"ids": [low.pk, high.pk], "decision_bulk": "correct_block"},
                           headers={"HX-Request": "true"})  # fmt: skip
    html = response.content.decode()
    assert response.status_code == 200 and "Decided 1 item(s)" in html and "claimed by rita" in html
    assert ReviewItem.objects.get(pk=low.pk).decision == "correct_block"
    assert ReviewItem.objects.get(pk=high.pk).decision == ""
    assert client.post(reverse("classifiers:review_bulk"), {"ids": [low.pk]}).status_code == 400
    assert client.post(reverse("classifiers:review_bulk"), {"ids": ["x"], "decision_bulk": "escalate"}).status_code == 400


def test_exports_hold_the_reviewed_items_matching_the_filters(client, items, bob):  # type: ignore[no-untyped-def]
    from classifiers.review import services as review

    _, low, high = items
    review.decide(item_id=low.pk, user=bob, decision="false_positive", note="=cmd()", version=0)
    review.decide(item_id=high.pk, user=bob, decision="correct_block", version=0)
    _login(client, bob)
    response = client.get(reverse("classifiers:review_export", args=["csv"]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {r["decision"] for r in rows} == {"false_positive", "correct_block"}
    fp = next(r for r in rows if r["decision"] == "false_positive")
    assert fp["prompt"] == "tell me about vaccines" and fp["note"] == "'=cmd()" and fp["decided_by"] == "bob"
    response = client.get(reverse("classifiers:review_export", args=["jsonl"]), {"reason": "output_halted"})
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [line["item_id"] for line in lines] == [high.pk]
    assert lines[0]["turns"][0]["halted_at"] == 2
    assert client.get(reverse("classifiers:review_export", args=["xml"])).status_code == 404


def test_authors_remove_feedback_and_reviewers_cannot(client, items, alice, bob):  # type: ignore[no-untyped-def]
    from classifiers.review import services as review

    _, low, _ = items
    review.decide(item_id=low.pk, user=bob, decision="false_positive", version=0)
    example = FeedbackExample.objects.get()
    url = reverse("classifiers:review_feedback_remove", args=["widgets", example.pk])
    _login(client, bob)
    assert client.post(url).status_code == 403
    page = client.get(reverse("classifiers:review_feedback", args=["widgets"])).content.decode()
    assert "tell me about vaccines" in page and "Retrain with feedback" not in page
    _login(client, alice)
    response = client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 200 and b"removed" in response.content
    example.refresh_from_db()
    assert not example.active and example.removed_by == alice


def test_retrain_with_feedback_builds_a_dataset_then_a_run(client, items, alice, bob, monkeypatch):  # type: ignore[no-untyped-def]
    from classifiers.datasets import tasks as dataset_tasks

    sent = []
    monkeypatch.setattr(dataset_tasks.generate_dataset, "apply_async", lambda *a, **kw: sent.append(kw))
    url = reverse("classifiers:review_retrain", args=["widgets"])
    _login(client, bob)
    assert client.post(url).status_code == 403
    _login(client, alice)
    response = client.post(url)
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response["Location"] == dataset.get_absolute_url()
    assert TrainingRun.objects.get().dataset == dataset
    from constitutions.models import Constitution

    Constitution.objects.create(slug="empty", name="Empty", domain="nothing")
    response = client.post(reverse("classifiers:review_retrain", args=["empty"]))
    assert response.status_code == 400 and b"no published version" in response.content
    assert Dataset.objects.count() == 1
