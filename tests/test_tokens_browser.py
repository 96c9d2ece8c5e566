"""The token page in a real browser: create, see the token once, revoke."""

from __future__ import annotations

import pytest

from classifiers.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("live_db")]


def test_creating_and_revoking_a_token_in_the_browser(login, asgi_server, alice):
    from constitutions.models import Constitution

    Constitution.objects.create(
        slug="widgets", name="Widgets policy", domain="Gardens."
    )
    page = login(alice)
    page.goto(f"{asgi_server}/classifiers/tokens/")
    page.fill("#id_name", "notebook")
    page.select_option("#id_constitution", label="Widgets policy")
    page.select_option("#id_mode", value="shadow")
    page.click("text=Create token")
    raw = page.text_content("[data-testid=raw-token]").strip()
    page.screenshot(path="/tmp/shots/tokens_created.png", full_page=True)
    token = ApiToken.objects.get(user=alice)
    assert ApiToken.authenticate(raw) == token and token.mode == "shadow"
    assert "Copy it now" in page.text_content("[data-testid=new-token]")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("[data-testid=revoke]")
    page.wait_for_selector("text=Revoked")
    page.screenshot(path="/tmp/shots/tokens_revoked.png", full_page=True)
    assert raw not in page.content()
    assert ApiToken.authenticate(raw) is None
