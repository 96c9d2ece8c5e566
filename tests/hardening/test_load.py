"""A tiny version of `python -m bench load` through the real uvicorn server:
websocket playground clients and API clients at once, zero errors, nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from bench.load import lost_work, run_load, summary
from tests.api_helpers import guarded_constitution
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow


def test_concurrent_playground_and_api_clients_get_no_errors_and_lose_nothing(
    asgi_server, live_db, client, alice
) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import ApiToken, Conversation, Turn

    constitution = guarded_constitution("widgets", output=True, requests_per_minute=0)
    assert client.login(username=alice.username, password=PASSWORD)
    cookie = client.cookies["sessionid"].value
    token, raw = ApiToken.issue(user=alice, name="load", constitution=constitution)

    stats = asyncio.run(run_load(
        asgi_server, cookie=cookie, raw_token=raw, slug=constitution.slug,
        ws_clients=5, api_clients=5, seconds=8, max_new_tokens=4, timeout=60, drain=60,
    ))  # fmt: skip
    report = summary(stats, 8.0)
    assert report["errors"] == 0, report["error_samples"]
    # Real work happened on both paths, chat completions included.
    assert report["turns"] >= 5, report
    assert report["latency"]["classify"]["count"] >= 10, report
    assert report["latency"]["chat_completions"]["count"] >= 1, report
    # Every turn that reached `end` is stored, and every 200 from the API too.
    lost = lost_work(stats, api_token=token)
    assert lost["lost_turns"] == 0 and lost["lost_api_conversations"] == 0, lost
    assert lost["stored_turns"] == report["turns"]
    assert lost["stored_api_conversations"] == report["api_requests"]
    assert Conversation.objects.filter(source="playground").count() == len(stats.ended)
    assert (
        Turn.objects.filter(conversation__source="playground").count()
        == report["turns"]
    )
