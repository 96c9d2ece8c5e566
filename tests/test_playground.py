"""The playground websocket through the real ASGI server (uvicorn) and Redis layer."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from classifiers.models import Conversation, Turn
from tests.api_helpers import BENIGN_PROMPT as BENIGN
from tests.api_helpers import HARMFUL_PROMPT as HARMFUL
from tests.api_helpers import guarded_constitution
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow


def session_cookie(client, user) -> str:  # type: ignore[no-untyped-def]
    assert client.login(username=user.username, password=PASSWORD)
    return client.cookies["sessionid"].value


async def exchange(url: str, cookie: str, messages: list[dict], until: int = 1) -> list[dict]:
    """Send messages, collect events until `until` "end"/"history"/"error" events."""
    events: list[dict] = []
    ws_url = url.replace("http://", "ws://") + "/ws/playground/"
    async with websockets.connect(
        ws_url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": url}
    ) as socket:
        for message in messages:
            await socket.send(json.dumps(message))
        finished = 0
        while finished < until:
            event = json.loads(await asyncio.wait_for(socket.recv(), timeout=120))
            events.append(event)
            if event["type"] in {"end", "history", "error"}:
                finished += 1
    return events


def chat(message: str, **extra: object) -> dict:
    return {"type": "chat", "constitution": "widgets", "message": message, "max_new_tokens": 8, **extra}


def test_a_benign_message_streams_scored_tokens_and_is_stored(asgi_server, live_db, client, alice):
    guarded_constitution(output=True)
    events = asyncio.run(exchange(asgi_server, session_cookie(client, alice), [chat(BENIGN)]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[1] == "input" and kinds[-1] == "end", kinds
    tokens = [t for e in events if e["type"] == "tokens" for t in e["tokens"]]
    assert tokens and all(0.0 <= score <= 1.0 for _, score, _ in tokens)
    end = events[-1]
    assert end["result"]["finish_reason"] in {"stop", "length"}
    assert end["first_token_ms"] is not None
    turn = Turn.objects.get()
    assert turn.conversation.user == alice and turn.conversation.source == "playground"
    assert len(turn.token_scores) == len(tokens)
    assert turn.reply == "".join(t[0] for t in tokens)


def test_a_harmful_message_is_blocked_before_generating_and_flagged(asgi_server, live_db, client, victor):
    guarded_constitution(output=True)
    events = asyncio.run(exchange(asgi_server, session_cookie(client, victor), [chat(HARMFUL)]))
    assert not [e for e in events if e["type"] == "tokens"]
    end = events[-1]
    assert end["result"]["finish_reason"] == "blocked"
    assert end["input"]["blocked"] and end["input"]["category"] == "forbidden widgets"
    conversation = Conversation.objects.get()
    assert conversation.flagged and conversation.flag_reason == "input_blocked"


def test_the_output_classifier_halts_mid_stream_at_a_low_threshold(asgi_server, live_db, client, alice):
    guarded_constitution(output=True, output_threshold=0.0)
    events = asyncio.run(exchange(asgi_server, session_cookie(client, alice), [chat(BENIGN)]))
    tokens = [t for e in events if e["type"] == "tokens" for t in e["tokens"]]
    assert tokens[-1][2] is True  # the last token sent is the one that halted
    assert events[-1]["result"]["finish_reason"] == "halted"
    assert events[-1]["result"]["halted_at"] == len(tokens) - 1
    assert Conversation.objects.get().flag_reason == "output_halted"


def test_side_by_side_runs_guarded_and_unguarded_on_the_same_prompt(asgi_server, live_db, client, alice):
    guarded_constitution(output=True)
    events = asyncio.run(
        exchange(asgi_server, session_cookie(client, alice), [chat(HARMFUL, side_by_side=True)], until=2)
    )
    ends = {e["variant"]: e for e in events if e["type"] == "end"}
    assert ends["guarded"]["result"]["finish_reason"] == "blocked"
    assert ends["unguarded"]["result"]["finish_reason"] in {"stop", "length"}
    assert Turn.objects.filter(variant="unguarded").count() == 1


def test_a_reconnect_restores_the_conversation(asgi_server, live_db, client, alice):
    guarded_constitution(output=True)
    cookie = session_cookie(client, alice)
    first = asyncio.run(exchange(asgi_server, cookie, [chat(BENIGN)]))
    conversation_id = first[0]["conversation_id"]
    # A new socket (the old one dropped) asks for the conversation back.
    restored = asyncio.run(
        exchange(asgi_server, cookie, [{"type": "resume", "conversation_id": conversation_id}])
    )
    history = restored[-1]
    assert history["type"] == "history" and history["conversation_id"] == conversation_id
    assert history["turns"][0]["user"] == BENIGN
    # ...and the next message continues the same conversation.
    second = asyncio.run(exchange(asgi_server, cookie, [chat("and a dessert?", conversation_id=conversation_id)]))
    assert second[0]["conversation_id"] == conversation_id
    assert Turn.objects.filter(conversation_id=conversation_id).count() == 2


def test_bad_messages_get_a_clear_error_and_change_nothing(asgi_server, live_db, client, alice):
    guarded_constitution(output=True)
    cookie = session_cookie(client, alice)
    for bad, expected in [
        (chat(""), "type a message"),
        (chat("hi", mode="block-all"), "mode must be"),
        ({"type": "chat", "constitution": "nope", "message": "hi"}, "unknown constitution"),
        (chat("x" * 5000), "too long"),
        ({"type": "dance"}, "unknown message type"),
    ]:
        events = asyncio.run(exchange(asgi_server, cookie, [bad]))
        assert events[-1]["type"] == "error" and expected in events[-1]["message"], events
    assert Conversation.objects.count() == 0


def test_users_without_a_role_and_anonymous_users_are_refused(asgi_server, live_db, client, charlie):
    async def try_connect(headers: dict) -> int | None:
        ws_url = asgi_server.replace("http://", "ws://") + "/ws/playground/"
        try:
            async with websockets.connect(ws_url, additional_headers=headers) as socket:
                await socket.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        except websockets.InvalidStatus as refused:
            return refused.response.status_code
        return None

    assert asyncio.run(try_connect({"Origin": asgi_server})) in {4403, 403}
    cookie = session_cookie(client, charlie)
    assert asyncio.run(try_connect({"Cookie": f"sessionid={cookie}", "Origin": asgi_server})) in {4403, 403}
    # A foreign origin is refused even with a valid session.
    assert asyncio.run(try_connect({"Cookie": f"sessionid={cookie}", "Origin": "http://evil.example"})) in {4403, 403}


def test_a_client_that_leaves_mid_reply_stops_it_and_the_turn_is_still_stored(
    asgi_server, live_db, client, alice
):
    guarded_constitution(output=True)
    cookie = session_cookie(client, alice)

    async def leave_after_first_tokens() -> None:
        ws_url = asgi_server.replace("http://", "ws://") + "/ws/playground/"
        async with websockets.connect(
            ws_url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": asgi_server}
        ) as socket:
            await socket.send(json.dumps(chat(BENIGN, max_new_tokens=64)))
            while json.loads(await asyncio.wait_for(socket.recv(), 120))["type"] != "tokens":
                pass

    asyncio.run(leave_after_first_tokens())
    for _ in range(300):  # the server notices, stops generating, records the turn
        turn = Turn.objects.first()
        if turn is not None:
            break
        time.sleep(0.1)
    assert turn is not None, "the turn of a client that left must still be stored"
    assert turn.finish_reason == "cancelled"
    assert 0 < len(turn.token_scores) < 64


def test_only_policy_authors_get_unguarded_replies(asgi_server, live_db, client, victor):
    guarded_constitution(output=True)
    cookie = session_cookie(client, victor)
    for request in (
        chat(BENIGN, models="unguarded"),
        chat(BENIGN, mode="off"),
        chat(BENIGN, mode="shadow"),
        chat(BENIGN, side_by_side=True),
    ):
        events = asyncio.run(exchange(asgi_server, cookie, [request]))
        assert events[-1]["type"] == "error" and "policy authors" in events[-1]["message"]
    assert Conversation.objects.count() == 0


def test_a_conversation_cannot_continue_under_another_constitution(
    asgi_server, live_db, client, alice
):
    guarded_constitution(output=True)
    guarded_constitution("other", output=True)
    cookie = session_cookie(client, alice)
    first = asyncio.run(exchange(asgi_server, cookie, [chat(BENIGN)]))
    moved = chat("and now?", conversation_id=first[0]["conversation_id"], constitution="other")
    events = asyncio.run(exchange(asgi_server, cookie, [moved]))
    assert events[-1]["type"] == "error" and "not found for this constitution" in events[-1]["message"]
    assert Turn.objects.count() == 1


def test_the_playground_shares_the_api_rate_limit(asgi_server, live_db, client, alice):
    """#26 item 3: one per-user counter for the websocket and the API."""
    import httpx

    from classifiers.models import ApiToken

    guarded_constitution(output=True, requests_per_minute=2)
    cookie = session_cookie(client, alice)
    for _ in range(2):
        events = asyncio.run(exchange(asgi_server, cookie, [chat(BENIGN)]))
        assert events[-1]["type"] == "end", events
    refused = asyncio.run(exchange(asgi_server, cookie, [chat(BENIGN)]))
    assert refused[-1]["type"] == "error" and "too many messages" in refused[-1]["message"]
    assert Conversation.objects.count() == 2  # the refused message made nothing
    raw = ApiToken.issue(user=alice, name="t")[1]
    api = httpx.post(f"{asgi_server}/api/v1/classify", json={"text": BENIGN, "constitution": "widgets"},
                     headers={"Authorization": f"Bearer {raw}"}, timeout=60)  # fmt: skip
    assert api.status_code == 429 and int(api.headers["Retry-After"]) >= 1


def test_a_conversation_over_the_prompt_token_limit_is_refused(asgi_server, live_db, client, alice):
    """#26 item 2: the whole conversation is the prompt; over the limit, the message
    gets a clear error and nothing is written."""
    guarded_constitution(output=True, max_prompt_tokens=48)
    events = asyncio.run(exchange(asgi_server, session_cookie(client, alice), [chat("tomato " * 80)]))
    assert events[-1]["type"] == "error" and "start a new conversation" in events[-1]["message"]
    assert not Conversation.objects.exists()
