"""Dashboard numbers on known rows, roles, the htmx partial, the live websocket."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from classifiers.review import dashboard, services
from classifiers.review.dashboard import dashboard_stats, live_counters
from tests.factories import SHOP_AND_GARDEN, published_constitution
from tests.review_helpers import flagged_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def traffic(bob):  # type: ignore[no-untyped-def]
    """10 turns two hours ago: 2 blocked, 1 halted, 7 passed; latencies 100..1000 ms."""
    constitution = published_constitution(categories=SHOP_AND_GARDEN).constitution
    when = timezone.now() - timedelta(hours=2)
    made = []
    for i in range(10):
        finish = "blocked" if i < 2 else "halted" if i == 2 else "stop"
        flagged = i < 4
        shadow = {"would_block": i < 3 or i == 9} if i >= 0 else {}
        made.append(flagged_conversation(
            constitution, finish_reason=finish, flagged=flagged,
            reason="input_blocked" if i < 2 else "output_halted" if i == 2 else "near_threshold",
            category="Forbidden widgets" if i != 3 else "Widget care",
            latency_ms=100.0 * (i + 1), first_token_ms=10.0 * (i + 1),
            shadow=shadow, created_at=when,
        ))  # fmt: skip
    old = flagged_conversation(constitution, created_at=timezone.now() - timedelta(days=20))
    items = [c.review_item for c in made[:4]]
    services.decide(item_id=items[0].pk, user=bob, decision="correct_block", version=0)
    services.decide(item_id=items[1].pk, user=bob, decision="false_positive", version=0)
    services.claim(item_id=items[2].pk, user=bob)
    return constitution, made, old


def test_the_numbers_come_out_right_for_known_rows(traffic):  # type: ignore[no-untyped-def]
    now = timezone.now()
    stats = dashboard_stats(now - timedelta(days=7), now)
    t = stats["totals"]
    assert (t["total"], t["blocked"], t["halted"], t["flagged"]) == (10, 2, 1, 4)
    assert t["block_rate"] == 0.2 and t["halt_rate"] == 0.1
    assert t["latency_p50"] == pytest.approx(550.0) and t["latency_p95"] == pytest.approx(955.0)
    assert t["first_token_p50"] == pytest.approx(55.0)
    assert stats["review"]["reviewed"] == 2 and stats["review"]["false_positive_rate"] == 0.5
    q = stats["queue"]
    # Open: items 3 and the 20-day-old one; claimed: item 2.
    assert (q["open"], q["claimed"], q["size"]) == (2, 1, 3)
    assert q["oldest_age"] > timedelta(days=19)
    assert stats["categories"] == [{"input_category": "Forbidden widgets", "n": 3},
                                   {"input_category": "Widget care", "n": 1}]  # fmt: skip
    # Shadow: would block 0,1,2,9; active blocks 0,1,2 → agree on 9 of 10.
    s = stats["shadow"]
    assert (s["total"], s["shadow_blocks"], s["active_blocks"], s["agreement"]) == (10, 4, 3, 0.9)
    # Daily buckets over 7 days; all traffic in one of them.
    series = stats["series"]
    assert not stats["hourly"] and len(series["labels"]) in (7, 8)
    assert sum(series["total"]) == 10 and max(series["total"]) == 10
    assert sum(series["blocked"]) == 2 and sum(series["passed"]) == 7


def test_hourly_buckets_for_a_day_and_a_constitution_filter(traffic):  # type: ignore[no-untyped-def]
    now = timezone.now()
    stats = dashboard_stats(now - timedelta(hours=24), now)
    assert stats["hourly"] and len(stats["series"]["labels"]) in (24, 25)
    bucket = stats["series"]["total"].index(10)
    assert stats["series"]["p50"][bucket] == pytest.approx(550.0)
    other = published_constitution("other", categories=SHOP_AND_GARDEN).constitution
    assert dashboard_stats(now - timedelta(days=7), now, other)["totals"]["total"] == 0


def test_everyone_with_a_role_sees_the_dashboard(client, traffic, victor, bob, alice, charlie):  # type: ignore[no-untyped-def]
    for user in (victor, bob, alice):
        client.force_login(user)
        response = client.get(reverse("classifiers:dashboard"))
        assert response.status_code == 200
        html = response.content.decode()
        assert 'data-testid="stat-turns">10<' in html and 'data-testid="stat-block-rate">20%<' in html
        assert 'data-testid="stat-fp-rate">50%<' in html and 'data-testid="stat-shadow">90%<' in html
        assert 'id="dashboard-series"' in html and "chart.umd.min.js" in html
    client.force_login(charlie)
    assert client.get(reverse("classifiers:dashboard")).status_code == 403


def test_range_filters_partials_and_bad_ranges(client, traffic, victor):  # type: ignore[no-untyped-def]
    client.force_login(victor)
    partial = client.get(reverse("classifiers:dashboard"), {"range": "24h"}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and b"<html" not in partial.content and b'id="dashboard-body"' in partial.content
    old = client.get(reverse("classifiers:dashboard"), {"range": "custom", "since": "2000-01-01", "until": "2000-01-02"})
    assert b'data-testid="stat-turns">0<' in old.content
    bad = client.get(reverse("classifiers:dashboard"), {"since": "2020-02-01", "until": "2020-01-01"})
    assert bad.status_code == 400 and b"after the end date" in bad.content
    for far in ({"until": "9999-12-31"}, {"since": "9999-12-30"}, {"since": "0001-01-01"}):
        response = client.get(reverse("classifiers:dashboard"), far)
        assert response.status_code == 400 and b"choose dates between" in response.content
    live = client.get(reverse("classifiers:dashboard"), {"live": "1"})
    assert b'id="dashboard-live"' in live.content and b'data-testid="live-queue">3<' in live.content


def test_live_counters_count_the_last_day_and_the_queue(traffic):  # type: ignore[no-untyped-def]
    live = live_counters()
    assert (live["total"], live["blocked"], live["halted"], live["decided"]) == (10, 2, 1, 2)
    assert live["queue"]["size"] == 3


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_socket_sends_counters_and_pushes_updates(victor, charlie):  # type: ignore[no-untyped-def]
    import asyncio

    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from classifiers.routing import websocket_urlpatterns

    application = URLRouter(websocket_urlpatterns)  # the user is set on the scope below

    async def scenario() -> tuple[str, str, bool]:
        from asgiref.sync import sync_to_async

        communicator = WebsocketCommunicator(application, "/ws/dashboard/")
        communicator.scope["user"] = victor
        connected, _ = await communicator.connect()
        first = await communicator.receive_from(timeout=10)
        await sync_to_async(lambda: flagged_conversation(published_constitution(categories=SHOP_AND_GARDEN).constitution))()
        await sync_to_async(dashboard.send_counters)()
        pushed = await communicator.receive_from(timeout=10)
        await communicator.disconnect()
        from django.db import connections

        await sync_to_async(connections.close_all)()  # the executor thread's connection
        return first, pushed, connected

    async def refused() -> bool:
        from asgiref.sync import sync_to_async

        communicator = WebsocketCommunicator(application, "/ws/dashboard/")
        communicator.scope["user"] = charlie
        connected, _ = await communicator.connect()
        from django.db import connections

        await sync_to_async(connections.close_all)()
        return connected

    first, pushed, connected = asyncio.run(scenario())
    assert not asyncio.run(refused())
    assert connected
    assert 'id="dashboard-live"' in first and 'hx-swap-oob="true"' in first
    assert 'data-testid="live-queue">0<' in first and 'data-testid="live-queue">1<' in pushed
