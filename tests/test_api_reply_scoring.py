"""/api/v1/classify scoring replies written elsewhere (#25 item 3): a whole reply, and
a reply that is still streaming, chunk by chunk under a stream id."""

from __future__ import annotations

import httpx
import pytest

from classifiers.api import reply_scoring
from classifiers.models import ApiToken, Conversation
from tests.api_helpers import BENIGN_PROMPT, guarded_constitution

pytestmark = pytest.mark.usefixtures("live_db")

REPLY = "Water the roses in the morning, and mulch them well before the first frost."


def classify(url: str, raw: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/classify", json=body,
                      headers={"Authorization": f"Bearer {raw}"}, timeout=120)  # fmt: skip


def conversation(reply: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": BENIGN_PROMPT}]
    return messages + ([{"role": "assistant", "content": reply}] if reply is not None else [])


@pytest.fixture
def raw(alice):
    guarded_constitution("widgets", output=True, user=alice)
    guarded_constitution("strict", output=True, output_threshold=0.0, user=alice)
    return ApiToken.issue(user=alice, name="gateway")[1]


def test_a_whole_reply_gets_per_token_scores_and_a_verdict(asgi_server, raw):
    body = classify(asgi_server, raw, constitution="widgets", messages=conversation(REPLY)).json()
    assert body["object"] == "reply_score" and body["verdict"] == "pass"
    assert "".join(t["text"] for t in body["tokens"]) == REPLY
    assert body["max_score"] == max(t["score"] for t in body["tokens"])
    assert body["halt_index"] is None and body["model"]["kind"] == "output"
    strict = classify(asgi_server, raw, constitution="strict", messages=conversation(REPLY)).json()
    assert strict["verdict"] == "halt" and strict["halt_index"] == 0 and strict["halted"]
    flagged = Conversation.objects.get(pk=strict["conversation_id"])
    assert flagged.flagged and flagged.flag_reason == "output_halted"


def test_a_streaming_reply_is_scored_chunk_by_chunk_and_released_only_when_scored(asgi_server, raw):
    whole = classify(asgi_server, raw, constitution="widgets", messages=conversation(REPLY)).json()
    chunks = [REPLY[i : i + 9] for i in range(0, len(REPLY), 9)]
    released, scores = "", []
    for index, chunk in enumerate(chunks):
        if index == 3:
            reply_scoring._local.clear()  # as if another server process took this chunk
        body = {"constitution": "widgets",
                "reply_stream": {"id": "s-1", "delta": chunk, "final": index == len(chunks) - 1}}
        if index == 0:
            body["messages"] = conversation()
        answer = classify(asgi_server, raw, **body).json()
        assert answer["stream_id"] == "s-1", answer
        released += answer["released"]
        scores += [t["score"] for t in answer["tokens"]]
        sent = "".join(chunks[: index + 1])
        # Never ahead of what was sent; the last token waits for the next chunk.
        assert sent.startswith(released) and (len(released) < len(sent) or index == len(chunks) - 1)
        assert answer["verdict"] == ("pass" if index == len(chunks) - 1 else "pending")
    assert released == REPLY
    assert max(scores) == pytest.approx(whole["max_score"], abs=1e-4)
    ended = classify(asgi_server, raw, constitution="widgets",
                     reply_stream={"id": "s-1", "delta": "more"})  # fmt: skip
    assert ended.status_code == 409


def test_a_stream_that_crosses_the_threshold_releases_nothing_more(asgi_server, raw):
    first = classify(asgi_server, raw, constitution="strict", messages=conversation(),
                     reply_stream={"id": "bad", "delta": REPLY[:30]}).json()  # fmt: skip
    assert first["halted"] and first["verdict"] == "halt" and first["released"] == ""
    assert classify(asgi_server, raw, constitution="strict",
                    reply_stream={"id": "bad", "delta": "x"}).status_code == 409  # fmt: skip


def test_bad_reply_requests_are_clear_4xx(asgi_server, raw):
    unknown = classify(asgi_server, raw, constitution="widgets", reply_stream={"id": "nope", "delta": "x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "stream_not_found"
    bad_id = classify(asgi_server, raw, constitution="widgets", messages=conversation(),
                      reply_stream={"id": "a b", "delta": "x"})  # fmt: skip
    assert bad_id.status_code == 400
    too_long = classify(asgi_server, raw, constitution="widgets",
                        messages=conversation("x" * (reply_scoring.MAX_REPLY_CHARS + 1)))  # fmt: skip
    assert too_long.status_code == 413
    first_chunk_too_long = classify(asgi_server, raw, constitution="widgets", messages=conversation(),
                                    reply_stream={"id": "big", "delta": "x" * (reply_scoring.MAX_REPLY_CHARS + 1)})  # fmt: skip
    assert first_chunk_too_long.status_code == 413
    assert not Conversation.objects.exists()
