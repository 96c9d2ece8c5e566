"""The playground with an upstream model (#25 item 5): the reply comes from a real
OpenAI-compatible server on loopback, scored by the same output classifier, with
the same token events, halt and side-by-side raw reply; the conversation names the
upstream."""

from __future__ import annotations

import asyncio
import time

import pytest

from classifiers.models import Conversation, Turn
from tests.api_helpers import BENIGN_PROMPT, guarded_constitution
from tests.ml.openai_test_server import OpenAITestServer
from tests.test_playground import exchange, session_cookie
from tests.upstream_helpers import attach, direct_reply

pytestmark = pytest.mark.slow


def chat(slug: str, **extra: object) -> dict:
    return {"type": "chat", "constitution": slug, "message": BENIGN_PROMPT, "max_new_tokens": 24,
            "upstream": "local", **extra}  # fmt: skip


def test_an_upstream_reply_is_scored_token_by_token_beside_the_raw_one(
    asgi_server, live_db, client, alice, smollm
):
    guarded_constitution("widgets", output=True, user=alice)
    with OpenAITestServer(smollm) as server:
        attach("widgets", server)
        expected = direct_reply(server, BENIGN_PROMPT)
        events = asyncio.run(exchange(asgi_server, session_cookie(client, alice),
                                      [chat("widgets", side_by_side=True)], until=2))  # fmt: skip
    assert events[0]["type"] == "start" and events[0]["upstream"] == "local"
    guarded = [t for e in events if e["type"] == "tokens" and e["variant"] == "guarded" for t in e["tokens"]]
    raw = [t for e in events if e["type"] == "tokens" and e["variant"] == "unguarded" for t in e["tokens"]]
    assert "".join(t[0] for t in guarded) == expected == "".join(t[0] for t in raw)
    assert all(0.0 <= score <= 1.0 for _, score, _ in guarded)
    conversation = Conversation.objects.get()
    assert conversation.upstream_name == "local" and conversation.source == "playground"
    assert Turn.objects.get(variant="guarded").generated == expected


def test_an_upstream_reply_halts_and_the_upstream_request_is_closed(
    asgi_server, live_db, client, alice, smollm
):
    guarded_constitution("strict", output=True, output_threshold=0.0, user=alice)
    with OpenAITestServer(smollm) as server:
        attach("strict", server)
        server.switches.pieces_per_second = 20
        events = asyncio.run(exchange(asgi_server, session_cookie(client, alice), [chat("strict")]))
        deadline = time.monotonic() + 10
        while server.stats.aborted_streams == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.stats.aborted_streams == 1 and server.stats.finished_streams == 0
    tokens = [t for e in events if e["type"] == "tokens" for t in e["tokens"]]
    assert tokens[-1][2] is True and tokens[-1][0] == ""  # the crossing token shows nothing
    assert events[-1]["result"]["finish_reason"] == "halted"


def test_an_upstream_not_attached_to_the_constitution_is_refused(asgi_server, live_db, client, alice):
    guarded_constitution("widgets", output=True, user=alice)
    events = asyncio.run(exchange(asgi_server, session_cookie(client, alice), [chat("widgets")]))
    assert events[-1]["type"] == "error" and "not an upstream model" in events[-1]["message"]
    assert not Conversation.objects.exists()
