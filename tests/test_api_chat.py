"""/v1/chat/completions and /v1/models through the real ASGI server (uvicorn) and
the real SmolLM2, with raw httpx and with the official openai client."""

from __future__ import annotations

import json

import httpx
import pytest

from classifiers.models import ApiToken, Conversation, Turn
from tests.api_helpers import BENIGN_PROMPT, HARMFUL_PROMPT, guarded_constitution

pytestmark = pytest.mark.usefixtures("live_db")

MAX_TOKENS = 8


@pytest.fixture
def widgets(alice):  # type: ignore[no-untyped-def]
    """Input and output classifiers active; the output one never halts."""
    return guarded_constitution("widgets", output=True, user=alice)


@pytest.fixture
def raw_token(alice, widgets) -> str:  # type: ignore[no-untyped-def]
    return ApiToken.issue(user=alice, name="ci", constitution=widgets)[1]


def chat(url: str, raw: str, **body: object) -> httpx.Response:
    body = {"model": "widgets", "max_tokens": MAX_TOKENS, **body}
    return httpx.post(f"{url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {raw}"}, timeout=60)  # fmt: skip


def sse_events(response: httpx.Response) -> list[object]:
    events = []
    for block in response.text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def test_a_benign_prompt_gets_a_guarded_reply_with_per_token_scores(
    asgi_server, raw_token
):
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT))
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    assert body["object"] == "chat.completion" and body["model"] == "widgets"
    assert choice["message"]["content"] and choice["finish_reason"] in (
        "stop",
        "length",
    )
    guard = body["guard"]
    assert guard["blocked"] is False and guard["halted"] is False
    assert guard["input_category"] == "garden care"
    scores = guard["token_scores"]
    assert 1 <= len(scores) <= MAX_TOKENS
    assert "".join(s["text"] for s in scores) == choice["message"]["content"]
    assert all(0.0 <= s["score"] <= 1.0 for s in scores)
    assert body["usage"]["completion_tokens"] == len(scores)
    turn = Turn.objects.get(conversation_id=guard["conversation_id"])
    assert turn.reply == choice["message"]["content"]
    assert [t for t, _ in turn.token_scores] == [s["text"] for s in scores]
    assert turn.conversation.output_model_id == guard["output_model"]["id"]
    assert turn.latency_ms > 0 and turn.first_token_ms is not None


def test_a_harmful_prompt_is_refused_with_content_filter(asgi_server, raw_token):
    body = chat(asgi_server, raw_token, messages=user(HARMFUL_PROMPT)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["refusal"] and "can't help" in choice["message"]["content"]
    assert body["guard"]["blocked"] is True and body["guard"]["token_scores"] == []
    assert body["guard"]["input_score"] >= body["guard"]["input_threshold"]
    conversation = Conversation.objects.get(pk=body["guard"]["conversation_id"])
    assert conversation.flagged and conversation.flag_reason == "input_blocked"
    assert conversation.turns.get().finish_reason == "blocked"


def test_streaming_sends_sse_chunks_and_the_guard_on_the_last(asgi_server, raw_token):
    response = chat(asgi_server, raw_token, messages=user(BENIGN_PROMPT), stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(s["text"] for s in final["guard"]["token_scores"]) == text
    assert len(chunks) >= 3  # role, at least one token, the final chunk
    stored = Turn.objects.get(conversation_id=final["guard"]["conversation_id"])
    assert stored.reply == text


def test_a_halted_stream_keeps_the_partial_text_then_refuses(asgi_server, alice):
    guarded_constitution("strict", output=True, output_threshold=0.0, user=alice)
    raw = ApiToken.issue(user=alice, name="t")[1]
    response = chat(
        asgi_server, raw, model="strict", messages=user(BENIGN_PROMPT), stream=True
    )
    chunks = sse_events(response)[:-1]
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "content_filter"
    guard = final["guard"]
    assert (
        guard["halted"] is True
        and guard["halted_at"] == 0
        and guard["threshold"] == 0.0
    )
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    partial = guard["token_scores"][0]["text"]
    assert text.startswith(partial) and text.endswith("usage policy restricts.")
    turn = Turn.objects.get(conversation_id=guard["conversation_id"])
    assert turn.finish_reason == "halted" and turn.halted_at == 0
    assert turn.conversation.flag_reason == "output_halted"


def test_a_shadow_token_gets_the_normal_reply_and_a_flagged_conversation(
    asgi_server, alice, widgets
):
    raw = ApiToken.issue(user=alice, name="trial", constitution=widgets, mode="shadow")[
        1
    ]
    body = chat(asgi_server, raw, messages=user(HARMFUL_PROMPT)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    assert "can't help with that. This request" not in choice["message"]["content"]
    assert body["guard"]["mode"] == "shadow" and body["guard"]["would_block"] is True
    assert body["guard"]["blocked"] is False
    conversation = Conversation.objects.get(pk=body["guard"]["conversation_id"])
    assert conversation.flagged and conversation.mode == "shadow"
    assert conversation.turns.get().would_block is True


def test_the_openai_client_works_unchanged(asgi_server, raw_token):
    from openai import OpenAI

    client = OpenAI(base_url=f"{asgi_server}/v1", api_key=raw_token, max_retries=0)
    models = [m.id for m in client.models.list()]
    assert models == ["widgets", "widgets:unguarded"]  # alice is a policy author
    completion = client.chat.completions.create(
        model="widgets", messages=user(BENIGN_PROMPT), max_tokens=MAX_TOKENS
    )
    assert completion.choices[0].message.content
    assert completion.model_extra["guard"]["blocked"] is False
    pieces, finish, guard = [], None, None
    for chunk in client.chat.completions.create(
        model="widgets",
        messages=user(HARMFUL_PROMPT),
        max_tokens=MAX_TOKENS,
        stream=True,
    ):
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
        guard = (chunk.model_extra or {}).get("guard", guard)
    assert finish == "content_filter" and guard["blocked"] is True
    assert "can't help" in "".join(pieces)


def test_the_openai_client_sees_api_errors(asgi_server, raw_token):
    import openai

    client = openai.OpenAI(
        base_url=f"{asgi_server}/v1", api_key=raw_token, max_retries=0
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=user("hi"))
    with pytest.raises(openai.BadRequestError, match="at most 128"):
        client.chat.completions.create(
            model="widgets", messages=user("hi"), max_tokens=500
        )
    bad = openai.OpenAI(base_url=f"{asgi_server}/v1", api_key="gw_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert not Conversation.objects.exists()


def test_the_unguarded_model_is_for_policy_authors_only(asgi_server, bob, widgets):
    raw = ApiToken.issue(user=bob, name="bob", constitution=widgets)[1]
    response = chat(asgi_server, raw, model="widgets:unguarded", messages=user("hi"))
    assert response.status_code == 403
    listed = httpx.get(
        f"{asgi_server}/v1/models", headers={"Authorization": f"Bearer {raw}"}
    )
    assert [m["id"] for m in listed.json()["data"]] == ["widgets"]
    assert not Conversation.objects.exists()


def test_a_client_that_disconnects_stops_the_generation(asgi_server, raw_token):
    import time

    body = {"model": "widgets", "messages": user(BENIGN_PROMPT), "max_tokens": 128,
            "stream": True}  # fmt: skip
    headers = {"Authorization": f"Bearer {raw_token}"}
    with httpx.stream("POST", f"{asgi_server}/v1/chat/completions", json=body,
                      headers=headers, timeout=60) as response:  # fmt: skip
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False)]
    assert any('"content"' in line for line in received)
    deadline = time.monotonic() + 30
    while not Turn.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    turn = Turn.objects.get()
    assert turn.finish_reason == "cancelled"
    assert len(turn.token_scores) < 128


def test_concurrent_requests_are_decoded_together_and_get_their_solo_replies(
    asgi_server, raw_token, settings
):
    """Dynamic batching: four streams at once share the local model's forwards
    (the batcher's counters show it), and each gets what it gets unbatched."""
    from concurrent.futures import ThreadPoolExecutor

    from classifiers.core.model_cache import shared_generator
    from classifiers.guard.engines import batchers

    prompts = [BENIGN_PROMPT, "How do I repot a cactus?", "What is compost made of?",
               "When should I water tomatoes?"]  # fmt: skip
    headers = {"Authorization": f"Bearer {raw_token}"}

    def ask(prompt: str) -> dict:
        response = chat(asgi_server, raw_token, messages=user(prompt), max_tokens=12)
        assert response.status_code == 200, response.text
        return response.json()

    settings.GENERATION_BATCH = 1  # the unbatched path: a thread per request
    alone = [ask(p) for p in prompts]
    settings.GENERATION_BATCH = 8
    ask(prompts[0])  # makes sure the generator's batcher exists
    [batcher] = [b for b in batchers() if b.lm is shared_generator()[0]]
    admitted, batcher.stats.max_batch = batcher.stats.admitted, 0
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    assert batcher.stats.admitted - admitted == len(prompts)
    assert batcher.stats.max_batch >= 2  # they really shared forwards
    for solo, shared in zip(alone, together, strict=True):
        assert shared["choices"][0]["message"]["content"] == solo["choices"][0]["message"]["content"]
        got = [s["score"] for s in shared["guard"]["token_scores"]]
        want = [s["score"] for s in solo["guard"]["token_scores"]]
        assert got == pytest.approx(want, abs=1e-3)
    metrics = httpx.get(f"{asgi_server}/metrics", headers=headers).text
    assert 'guardweb_generation_batch_max{model="' in metrics


def test_the_work_of_one_request_is_bounded_by_prompt_tokens(asgi_server, alice):
    """#26 item 2: a 10,000-message array and a prompt over the constitution's
    max_prompt_tokens are refused in OpenAI's error shape; nothing is stored."""
    guarded_constitution("tight", output=True, user=alice, max_prompt_tokens=64)
    raw = ApiToken.issue(user=alice, name="t")[1]
    many = chat(asgi_server, raw, model="tight", messages=user("hi") * 10_000)
    assert many.status_code == 400 and many.json()["error"]["code"] == "context_length_exceeded"
    long = chat(asgi_server, raw, model="tight", messages=user("tomato " * 100))
    assert long.status_code == 400
    error = long.json()["error"]
    assert error["code"] == "context_length_exceeded" and "at most 64" in error["message"]
    assert chat(asgi_server, raw, model="tight", messages=user("hi")).status_code == 200
    assert Conversation.objects.count() == 1
