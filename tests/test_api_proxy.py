"""The guarded proxy to upstream models (#25): /v1/chat/completions for SLUG/NAME.

Against the real ASGI server and a real OpenAI-compatible server on loopback that
serves the packaged SmolLM2 (greedy, so replies repeat) and streams it in small
pieces; its request log and stream counters show what reached it and whether a
stream was closed early.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from django.core.management import call_command

from classifiers.ml.serving.engine import DEFAULT_REFUSAL
from classifiers.models import ApiToken, Conversation, GuardPolicy, Turn, Upstream
from tests.api_helpers import BENIGN_PROMPT, HARMFUL_PROMPT, guarded_constitution
from tests.ml.openai_test_server import OpenAITestServer
from tests.upstream_helpers import attach, direct_reply

pytestmark = pytest.mark.usefixtures("live_db")

MAX_TOKENS = 24


@pytest.fixture
def upstream_server(smollm):
    with OpenAITestServer(smollm) as server:
        yield server


def chat(url: str, raw: str, **body: object) -> httpx.Response:
    body = {"model": "widgets/local", "max_tokens": MAX_TOKENS, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {raw}"}, timeout=120)  # fmt: skip


def sse_events(text: str) -> list[object]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def streamed_text(events: list[object]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in events if isinstance(c, dict) and c.get("choices")
    )


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


@pytest.fixture
def widgets(alice, upstream_server):
    constitution = guarded_constitution("widgets", output=True, user=alice)
    attach("widgets", upstream_server)
    return constitution


@pytest.fixture
def raw_token(alice, widgets) -> str:
    return ApiToken.issue(user=alice, name="ci", constitution=widgets)[1]


def test_a_benign_prompt_is_answered_by_the_upstream_with_per_token_scores(
    asgi_server, raw_token, upstream_server
):
    expected = direct_reply(upstream_server, BENIGN_PROMPT)
    before = upstream_server.stats.requests
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "widgets/local"
    content = body["choices"][0]["message"]["content"]
    assert content == expected and body["choices"][0]["finish_reason"] in ("stop", "length")
    guard = body["guard"]
    assert guard["upstream"] == "local" and guard["blocked"] is False and guard["halted"] is False
    assert "".join(s["text"] for s in guard["token_scores"]) == content
    assert all(0.0 <= s["score"] <= 1.0 for s in guard["token_scores"])
    # The upstream got the scored messages, its own model name and a bounded reply.
    sent = upstream_server.stats.payloads[-1]
    assert upstream_server.stats.requests == before + 1
    assert sent["model"] == "smol" and sent["stream"] is True and sent["max_tokens"] == MAX_TOKENS
    conversation = Conversation.objects.get(pk=guard["conversation_id"])
    assert conversation.upstream_name == "local" and conversation.source == "api"
    turn = conversation.turns.get()
    assert turn.reply == content and turn.first_token_ms is not None


def test_a_blocked_prompt_never_reaches_the_upstream(asgi_server, raw_token, upstream_server, client, bob):
    for stream in (False, True):
        response = chat(asgi_server, raw_token, messages=user(HARMFUL_PROMPT), stream=stream)
        assert response.status_code == 200
        if stream:
            events = sse_events(response.text)
            final = events[-2]
            assert "can't help" in streamed_text(events)
        else:
            final = response.json()
            assert "can't help" in final["choices"][0]["message"]["content"]
        assert final["choices"][0]["finish_reason"] == "content_filter"
        assert final["guard"]["blocked"] is True
    assert upstream_server.stats.requests == 0  # its request log is empty
    assert Conversation.objects.filter(flag_reason="input_blocked", upstream_name="local").count() == 2
    # Reviewers see them in the queue, with the upstream's name.
    conversation = Conversation.objects.filter(upstream_name="local").first()
    client.force_login(bob)
    page = client.get(f"/classifiers/review/{conversation.review_item.pk}/").content.decode()
    assert 'data-testid="upstream-name">local<' in page


def test_a_halted_stream_delivers_nothing_past_the_halt_and_closes_the_upstream(
    asgi_server, alice, upstream_server
):
    # Scores of the whole reply first (a constitution that never halts)...
    guarded_constitution("probe", output=True, user=alice)
    attach("probe", upstream_server, name="free")
    raw = ApiToken.issue(user=alice, name="t")[1]
    free = chat(asgi_server, raw, model="probe/free", messages=user(BENIGN_PROMPT), max_tokens=48).json()
    scores = [s["score"] for s in free["guard"]["token_scores"]]
    texts = [s["text"] for s in free["guard"]["token_scores"]]
    rising = [i for i in range(2, len(scores) - 4) if scores[i] > scores[i - 1]]
    assert rising, scores
    halt = rising[0]
    # ...then one whose threshold is crossed at token `halt`, streamed slowly.
    guarded_constitution("cut", output=True, output_threshold=scores[halt], user=alice)
    Upstream.objects.all().delete()
    attach("cut", upstream_server, name="slow")
    upstream_server.switches.pieces_per_second = 40
    upstream_server.stats.finished_streams = upstream_server.stats.aborted_streams = 0
    response = chat(asgi_server, raw, model="cut/slow", messages=user(BENIGN_PROMPT),
                    max_tokens=48, stream=True)  # fmt: skip
    events = sse_events(response.text)
    final = events[-2]
    assert final["choices"][0]["finish_reason"] == "content_filter"
    guard = final["guard"]
    tokens, at = guard["token_scores"], guard["halted_at"]
    assert guard["halted"] is True and at is not None
    assert tokens[at]["score"] >= scores[halt] and all(t["score"] < scores[halt] for t in tokens[:at])
    # Exactly the text of the tokens scored below the threshold, then the refusal:
    # the crossing token and everything after it never left the proxy.
    delivered = streamed_text(events)
    passed = "".join(t["text"] for t in tokens[:at])
    assert tokens[at]["text"] == "" and passed == "".join(texts[:halt])
    assert delivered == passed + "\n\n" + DEFAULT_REFUSAL
    assert "".join(texts).startswith(passed) and len(passed) < len("".join(texts))
    # The upstream saw its stream closed before the end.
    deadline = time.monotonic() + 10
    while upstream_server.stats.aborted_streams == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstream_server.stats.aborted_streams == 1 and upstream_server.stats.finished_streams == 0
    turn = Turn.objects.filter(conversation__upstream_name="slow").get()
    assert turn.finish_reason == "halted" and turn.generated == passed


def test_only_checked_sampling_settings_reach_the_upstream(asgi_server, raw_token, upstream_server):
    """Fields that carry text the guard never scored (tools, documents, templates)
    are not forwarded; numbers are checked before anything is sent."""
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT), temperature=0, seed=7,
                    stop=["\n\n"], tools=[{"type": "function", "function": {"name": "f",
                    "description": "the real request hides here"}}],
                    chat_template="{{ evil }}", documents=[{"text": "x"}])  # fmt: skip
    assert response.status_code == 200, response.text
    sent = upstream_server.stats.payloads[-1]
    assert {"tools", "chat_template", "documents"}.isdisjoint(sent)
    assert sent["temperature"] == 0 and sent["seed"] == 7 and sent["stop"] == ["\n\n"]
    before = upstream_server.stats.requests
    bad = httpx.post(f"{asgi_server}/v1/chat/completions", timeout=60,
                     content=b'{"model": "widgets/local", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                     headers={"Authorization": f"Bearer {raw_token}", "Content-Type": "application/json"})  # fmt: skip
    assert bad.status_code == 400 and upstream_server.stats.requests == before


def test_the_openai_client_streams_unchanged_through_slug_slash_name(
    asgi_server, raw_token, upstream_server
):
    from openai import OpenAI

    client = OpenAI(base_url=f"{asgi_server}/v1", api_key=raw_token, max_retries=0)
    assert "widgets/local" in [m.id for m in client.models.list()]
    assert client.models.retrieve("widgets/local").model_extra["guard"]["upstream"] == "local"
    expected = direct_reply(upstream_server, BENIGN_PROMPT)
    pieces, finish, guard = [], None, None
    for chunk in client.chat.completions.create(
        model="widgets/local", messages=user(BENIGN_PROMPT), max_tokens=MAX_TOKENS, stream=True
    ):
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
        guard = (chunk.model_extra or {}).get("guard", guard)
    assert "".join(pieces) == expected
    assert finish in ("stop", "length") and guard["upstream"] == "local"


def test_shadow_mode_forwards_everything_and_records_what_enforce_would_do(
    asgi_server, alice, upstream_server
):
    guarded_constitution("watch", output=True, output_threshold=0.0, user=alice, mode="shadow")
    attach("watch", upstream_server)
    raw = ApiToken.issue(user=alice, name="t")[1]
    expected = direct_reply(upstream_server, BENIGN_PROMPT)
    events = sse_events(chat(asgi_server, raw, model="watch/local", messages=user(BENIGN_PROMPT),
                             stream=True).text)  # fmt: skip
    assert streamed_text(events) == expected
    guard = events[-2]["guard"]
    assert guard["mode"] == "shadow" and guard["would_block"] is True and guard["halted"] is False
    conversation = Conversation.objects.get(pk=guard["conversation_id"])
    assert conversation.flagged and conversation.turns.get().would_block


def test_upstream_failures_come_back_in_openai_shape(asgi_server, alice, raw_token, upstream_server):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    call_command("upstreams", "add", "down", "--url", f"http://127.0.0.1:{closed_port}/v1",
                 "--model", "x", "--timeout", "2")  # fmt: skip
    call_command("upstreams", "attach", "down", "--constitution", "widgets")
    response = chat(asgi_server, raw_token, model="widgets/down", messages=user(BENIGN_PROMPT))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
    # Slow: no first byte within the upstream's timeout.
    call_command("upstreams", "change", "local", "--timeout", "1")
    upstream_server.switches.hang_seconds = 3
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT))
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    upstream_server.switches.hang_seconds = 0
    # The upstream's own error status and message.
    upstream_server.switches.status_error = 404
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT))
    assert response.status_code == 404
    assert "does not exist" in response.json()["error"]["message"]
    # Its refusal of *our* key is not the client's 401.
    upstream_server.switches.status_error = 401
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT))
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_auth"
    upstream_server.switches.status_error = 0
    # Failed attempts are recorded too (the conversation names the upstream).
    assert Conversation.objects.filter(upstream_name="local", turns__finish_reason="upstream_error").exists()
    # Unknown upstream name, and more tokens than the upstream allows.
    assert chat(asgi_server, raw_token, model="widgets/nope", messages=user("hi")).status_code == 404
    too_many = chat(asgi_server, raw_token, messages=user("hi"), max_tokens=5000)
    assert too_many.status_code == 400 and "at most 1024" in too_many.json()["error"]["message"]
    # A prompt over the constitution's max_prompt_tokens never reaches the upstream.
    GuardPolicy.objects.filter(constitution__slug="widgets").update(max_prompt_tokens=32)
    before = upstream_server.stats.requests
    long = chat(asgi_server, raw_token, messages=user("tomato " * 60))
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    assert upstream_server.stats.requests == before


def test_a_guard_that_cannot_decide_fails_closed_or_open_as_configured(
    asgi_server, alice, upstream_server
):
    from tests.factories import published_constitution

    published_constitution("bare", user=alice)  # no classifier at all
    attach("bare", upstream_server)
    raw = ApiToken.issue(user=alice, name="t")[1]
    closed = chat(asgi_server, raw, model="bare/local", messages=user(BENIGN_PROMPT))
    assert closed.status_code == 503 and upstream_server.stats.requests == 0
    GuardPolicy.objects.filter(constitution__slug="bare").update(failure_mode="open")
    opened = chat(asgi_server, raw, model="bare/local", messages=user(BENIGN_PROMPT))
    assert opened.status_code == 200 and upstream_server.stats.requests == 1
    assert opened.json()["guard"]["failed_open"] is True
    assert "no active classifier" in opened.json()["guard"]["guard_failure"]
    # A classifier slower than the policy's time limit: same rule.
    guarded_constitution("hasty", output=True, user=alice, guard_timeout_s=0.0005)
    attach("hasty", upstream_server, name="h")
    refused = chat(asgi_server, raw, model="hasty/h", messages=user(BENIGN_PROMPT))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "guard_unavailable"
    assert upstream_server.stats.requests == 1
    GuardPolicy.objects.filter(constitution__slug="hasty").update(failure_mode="open")
    forwarded = chat(asgi_server, raw, model="hasty/h", messages=user(BENIGN_PROMPT))
    assert forwarded.status_code == 200 and forwarded.json()["guard"]["failed_open"] is True


def test_a_client_that_disconnects_closes_the_upstream_request(asgi_server, raw_token, upstream_server):
    upstream_server.switches.pieces_per_second = 10
    body = {"model": "widgets/local", "messages": user(BENIGN_PROMPT), "max_tokens": 64,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", f"{asgi_server}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {raw_token}"}, timeout=60) as response:  # fmt: skip
        received = [line for line, _ in zip(response.iter_lines(), range(6), strict=False)]
    assert any('"content"' in line for line in received)
    deadline = time.monotonic() + 15
    while upstream_server.stats.aborted_streams == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstream_server.stats.aborted_streams == 1
    while not Turn.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Turn.objects.get().finish_reason == "cancelled"
