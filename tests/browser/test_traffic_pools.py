"""A policy author adds real everyday traffic (ShareGPT) from the traffic pools page
and reads the pool: its size, its splits and real messages with their replies kept."""

from __future__ import annotations

import pytest

from classifiers.models import TrafficPool

pytestmark = [pytest.mark.browser]


def test_an_author_adds_real_everyday_traffic(page, asgi_server, live_db, alice, login):  # type: ignore[no-untyped-def]
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    login(alice)
    page.goto(f"{asgi_server}/classifiers/traffic/")
    form = page.locator("[data-testid=sharegpt-form]")
    assert "Real everyday traffic" in form.inner_text()
    form.locator("input[name=name]").fill("support traffic")
    form.locator("input[name=count]").fill("30")
    page.click("[data-testid=from-sharegpt]")
    page.wait_for_url("**/classifiers/traffic/*/")
    body = page.inner_text("body")
    assert "support traffic: 30 of 30 real messages added." in body
    assert "sharegpt 30" in body
    assert "with the reply they got" in page.inner_text(
        "[data-testid=recorded-replies]"
    )
    page.screenshot(path="/tmp/shots/traffic-pool.png", full_page=True)
    pool = TrafficPool.objects.get(name="support traffic")
    assert pool.prompts.count() == 30
    # A bad count comes back on the same page, saying why, and adds nothing.
    page.goto(f"{asgi_server}/classifiers/traffic/")
    form = page.locator("[data-testid=sharegpt-form]")
    form.locator("input[name=name]").fill("too many")
    form.locator("input[name=count]").evaluate("el => el.removeAttribute('max')")
    form.locator("input[name=count]").fill("999999")
    page.click("[data-testid=from-sharegpt]")
    assert "Ensure this value is less than or equal to 8000" in page.inner_text("body")
    assert not TrafficPool.objects.filter(name="too many").exists()
    assert errors == []
