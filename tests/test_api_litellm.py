"""LiteLLM's Generic Guardrail API (#25 item 4), with the request bodies LiteLLM 1.108
sends (captured from a real LiteLLM proxy): pre_call blocks a restricted request,
post_call blocks a reply the output classifier halts, and answers NONE otherwise."""

from __future__ import annotations

import httpx
import pytest

from classifiers.models import ApiToken, Conversation
from tests.api_helpers import BENIGN_PROMPT, HARMFUL_PROMPT, guarded_constitution

pytestmark = pytest.mark.usefixtures("live_db")


def litellm_body(input_type: str, texts: list[str], call_id: str, **extra) -> dict:
    """What LiteLLM's GenericGuardrailAPI posts (every key present, unused ones null)."""
    messages = [{"role": "system", "content": "sys prompt"}] + [
        {"role": "user", "content": t} for t in texts
    ]
    return {
        "input_type": input_type, "litellm_call_id": call_id, "litellm_trace_id": "trace-1",
        "structured_messages": messages if input_type == "request" else None,
        "images": None, "tools": None,
        "texts": ["sys prompt", *texts] if input_type == "request" else texts,
        "request_data": {"user_api_key_hash": "litellm_proxy_master_key"},
        "request_headers": {"user-agent": "curl/7.88.1"}, "litellm_version": "1.108.7",
        "additional_provider_specific_params": {}, "tool_calls": None, "model": "fake-gpt", **extra,
    }  # fmt: skip


def post(url: str, raw: str, body: dict, slug: str = "widgets") -> httpx.Response:
    # LiteLLM appends the path to api_base and sends its api_key as x-api-key.
    return httpx.post(f"{url}/guardrails/litellm/{slug}/beta/litellm_basic_guardrail_api",
                      json=body, headers={"x-api-key": raw}, timeout=120)  # fmt: skip


@pytest.fixture
def raw(alice):
    guarded_constitution("widgets", output=True, user=alice)
    guarded_constitution("strict", output=True, output_threshold=0.0, user=alice)
    return ApiToken.issue(user=alice, name="litellm")[1]


def test_pre_call_blocks_a_restricted_request_and_passes_a_benign_one(asgi_server, raw):
    blocked = post(asgi_server, raw, litellm_body("request", [HARMFUL_PROMPT], "c1")).json()
    assert blocked["action"] == "BLOCKED" and "widgets" in blocked["blocked_reason"]
    assert "texts" not in blocked  # never a rewrite
    passed = post(asgi_server, raw, litellm_body("request", [BENIGN_PROMPT], "c2")).json()
    assert passed["action"] == "NONE"
    assert Conversation.objects.filter(flag_reason="input_blocked").count() == 1


def test_post_call_scores_the_reply_as_the_answer_to_its_request(asgi_server, raw):
    post(asgi_server, raw, litellm_body("request", [BENIGN_PROMPT], "c3"), slug="strict")
    reply = litellm_body("response", ["Water the roses in the morning."], "c3")
    halted = post(asgi_server, raw, reply, slug="strict").json()
    assert halted["action"] == "BLOCKED" and "threshold" in halted["blocked_reason"]
    turn = Conversation.objects.get(flag_reason="output_halted").turns.get()
    assert turn.user_content == BENIGN_PROMPT  # the prompt of the same litellm_call_id
    assert post(asgi_server, raw, reply).json()["action"] == "NONE"  # widgets never halts


def test_the_constitution_can_come_from_the_guardrail_params_and_bad_calls_are_4xx(asgi_server, raw):
    body = litellm_body("request", [HARMFUL_PROMPT], "c4",
                        additional_provider_specific_params={"constitution": "widgets"})  # fmt: skip
    response = httpx.post(f"{asgi_server}/beta/litellm_basic_guardrail_api", json=body,
                          headers={"x-api-key": raw}, timeout=60)  # fmt: skip
    assert response.json()["action"] == "BLOCKED"
    assert post(asgi_server, raw, {**body, "input_type": "other"}).status_code == 400
    assert post(asgi_server, raw, {**body, "structured_messages": 5}).status_code == 400
    assert post(asgi_server, "gw_wrong", body).status_code == 401
    assert post(asgi_server, raw, body, slug="nope").status_code == 404
