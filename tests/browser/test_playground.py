from __future__ import annotations

import pytest

from tests.api_helpers import BENIGN_PROMPT as BENIGN
from tests.api_helpers import guarded_constitution

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_viewer_watches_coloured_tokens_and_a_halt_in_the_playground(
    page, asgi_server, live_db, victor, login
):
    guarded_constitution(output=True, output_threshold=0.0)
    login(victor)
    page.goto(f"{asgi_server}/classifiers/playground/")
    page.wait_for_selector("#pg-status.ok")
    page.fill("#pg-message", BENIGN)
    page.press("#pg-message", "Enter")
    page.wait_for_selector("[data-testid=halt-marker]", timeout=60_000)
    page.wait_for_selector(".refusal")
    tokens = page.locator("#pg-transcript-guarded .tok")
    assert tokens.count() >= 1
    # Tokens are coloured by their score.
    assert tokens.first.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert page.locator("[data-testid=threshold-line]").count() == 1
    assert "halted" in page.locator(".pg-msg.assistant .meta").inner_text()
    page.screenshot(path="/tmp/shots/playground.png", full_page=True)
    # A reload (like a dropped connection) restores the conversation.
    page.reload()
    page.wait_for_selector("[data-testid=halt-marker]")
    assert "Restored conversation" in page.locator("#pg-status").inner_text()
