"""An operator registers an upstream model on the Upstreams page, a policy author
attaches it on the guard settings page, and a viewer watches its reply scored
token by token in the playground (a real OpenAI-compatible server on loopback)."""

from __future__ import annotations

import pytest

from classifiers.models import Conversation
from tests.api_helpers import BENIGN_PROMPT, guarded_constitution
from tests.ml.openai_test_server import OpenAITestServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_register_attach_and_watch_an_upstream_reply(
    page, asgi_server, live_db, make_user, alice, victor, login, smollm
):  # type: ignore[no-untyped-def]
    guarded_constitution("widgets", output=True, user=alice)
    operator = make_user("olga", "viewer", is_staff=True)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    with OpenAITestServer(smollm) as server:
        login(operator)
        page.goto(f"{asgi_server}/classifiers/")
        page.click("nav >> text=Upstreams")
        page.fill("#id_name", "local-smol")
        page.fill("#id_base_url", server.base_url)
        page.fill("#id_model", "smol")
        page.fill("#id_api_key", "sk-test-secret")
        page.click("[data-testid=upstream-form] button[type=submit]")
        table = page.inner_text("[data-testid=upstream-table]")
        assert "local-smol" in table and "stored" in table and "sk-test-secret" not in page.content()
        page.screenshot(path="/tmp/shots/upstreams.png", full_page=True)
        page.context.clear_cookies()

        login(alice)
        page.goto(f"{asgi_server}/classifiers/guard/widgets/")
        page.check("text=local-smol")
        page.select_option("#id_failure_mode", "open")
        page.click("main form.card button[type=submit] >> nth=0")
        assert "Guard settings saved" in page.inner_text("main")
        page.screenshot(path="/tmp/shots/guard-settings-upstreams.png", full_page=True)
        page.context.clear_cookies()

        login(victor)
        page.goto(f"{asgi_server}/classifiers/playground/")
        page.wait_for_selector("#pg-status.ok")
        page.select_option("#pg-upstream", "local-smol")
        page.fill("#pg-message", BENIGN_PROMPT)
        page.press("#pg-message", "Enter")
        page.wait_for_selector(".pg-msg.assistant .meta", timeout=60_000)
        tokens = page.locator("#pg-transcript-guarded .tok")
        assert tokens.count() >= 1
        assert tokens.first.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"
        page.screenshot(path="/tmp/shots/playground-upstream.png", full_page=True)
    assert Conversation.objects.get().upstream_name == "local-smol"
    assert not errors
