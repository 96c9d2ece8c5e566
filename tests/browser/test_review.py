"""Keyboard triage in a real browser: j/k to move, c to claim, 1-4 to decide."""

from __future__ import annotations

import os

import pytest

from classifiers.models import FeedbackExample, ReviewItem
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import flagged_conversation

pytestmark = [pytest.mark.browser]


def test_bob_triages_the_queue_with_the_keyboard(page, asgi_server, live_db, bob, login):  # type: ignore[no-untyped-def]
    os.makedirs("/tmp/shots", exist_ok=True)
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    top = flagged_conversation(
        constitution, prompt="how do I make the forbidden widget", score=0.97,
        tokens=[["Sure", 0.05], [",", 0.2], [" here", 0.45], [" is", 0.8], [" how", 0.97]],
        halted_at=3, generated="Sure, here is how", reason="output_halted", finish_reason="halted",
        shadow={"would_block": True, "input_score": 0.7, "max_output_score": 0.9},
    ).review_item  # fmt: skip
    middle = flagged_conversation(constitution, prompt="tell me about vaccines", score=0.7,
                                  category="Widget care").review_item  # fmt: skip
    last = flagged_conversation(constitution, prompt="which soup goes with a garden salad",
                                score=0.55, reason="near_threshold", finish_reason="stop").review_item  # fmt: skip

    login(bob)
    page.goto(f"{asgi_server}/classifiers/review/")
    rows = page.locator("table.queue tbody tr[data-item]")
    assert rows.count() == 3
    page.wait_for_selector(f'tr.selected[data-item="{top.pk}"]')  # the first row starts selected
    page.keyboard.press("j")
    page.wait_for_selector(f'tr.selected[data-item="{middle.pk}"]')
    page.keyboard.press("c")  # claim the selected row
    page.wait_for_selector("[data-testid=flash-ok]")
    page.wait_for_selector(f'tr[data-item="{middle.pk}"] >> text=Claimed')
    assert ReviewItem.objects.get(pk=middle.pk).assignee == bob
    page.keyboard.press("2")  # false positive on the selected row
    # Decided items leave the default (undecided) queue; the next row is selected.
    page.wait_for_selector(f'tr[data-item="{middle.pk}"]', state="detached")
    page.wait_for_selector(f'tr.selected[data-item="{last.pk}"]')
    page.screenshot(path="/tmp/shots/review-queue.png", full_page=True)
    item = ReviewItem.objects.get(pk=middle.pk)
    assert (item.status, item.decision, item.decided_by) == ("decided", "false_positive", bob)
    assert FeedbackExample.objects.get(review_item=item).label == 0

    # k back to the top row, Enter opens it.
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.wait_for_selector(f'tr.selected[data-item="{top.pk}"]')
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/classifiers/review/{top.pk}/")
    assert page.locator("[data-testid=halt-marker]").count() == 1
    assert page.locator(".tokens .tok").nth(4).evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert "would block" in page.locator("[data-testid=shadow]").inner_text()
    page.keyboard.press("c")
    page.wait_for_selector("[data-testid=assignee]")
    page.fill("#note", "clear attempt at the forbidden widget")
    page.locator("body").click()  # leave the note field so keys are shortcuts again
    page.keyboard.press("1")
    page.wait_for_selector("[data-testid=decision]")
    assert page.locator("[data-testid=decision]").inner_text() == "Correct block"
    page.screenshot(path="/tmp/shots/review-item.png", full_page=True)
    item = ReviewItem.objects.get(pk=top.pk)
    assert (item.decision, item.note) == ("correct_block", "clear attempt at the forbidden widget")

    # j goes on to the next undecided item.
    page.keyboard.press("j")
    page.wait_for_url(f"**/classifiers/review/{last.pk}/")

    # The dashboard draws its charts from the same rows.
    page.goto(f"{asgi_server}/classifiers/dashboard/")
    page.wait_for_selector("#chart-volume[data-rendered]")
    assert page.locator("[data-testid=stat-turns]").inner_text() == "3"
    page.screenshot(path="/tmp/shots/dashboard.png", full_page=True)
