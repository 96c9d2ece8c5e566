from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_alice_logs_in_through_the_browser_and_sees_the_home_page(
    page, asgi_server, live_db, alice, login
):
    page.goto(f"{asgi_server}/")
    # Anonymous visitors land on the login page first.
    assert "/accounts/login/" in page.url
    login(alice)
    assert page.locator("h1").inner_text() == "Welcome, alice"
    assert page.locator(".badge", has_text="policy_author").is_visible()


def test_a_wrong_password_keeps_the_user_on_the_login_page(page, asgi_server, live_db, alice):
    page.goto(f"{asgi_server}/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text().startswith("Your username and password")
