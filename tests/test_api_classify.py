"""POST /api/v1/classify: scores with the active input classifier, stores every
request, rejects bad ones in OpenAI's error shape without writing anything."""

from __future__ import annotations

import json

import pytest

from classifiers.models import ApiToken, Conversation, Turn
from tests.api_helpers import (
    BENIGN_PROMPT,
    HARMFUL_PROMPT,
    bearer,
    guarded_constitution,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/classify"


def post(client, raw: str | None, body: object, **extra: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    headers = bearer(raw) if raw else {}
    return client.post(
        URL, data=data, content_type="application/json", **headers, **extra
    )


@pytest.fixture
def widgets(alice):  # type: ignore[no-untyped-def]
    return guarded_constitution("widgets", user=alice)


@pytest.fixture
def raw_token(alice, widgets) -> str:  # type: ignore[no-untyped-def]
    return ApiToken.issue(user=alice, name="ci", constitution=widgets)[1]


def assert_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_a_harmful_prompt_is_blocked_at_the_calibrated_threshold(client, raw_token):
    response = post(client, raw_token, {"text": HARMFUL_PROMPT})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["blocked"] is True and body["flagged"] is True
    assert body["score"] >= body["threshold"]
    assert body["category"] == "forbidden widgets"
    assert body["mode"] == "enforce"
    assert body["model"]["kind"] == "input" and body["model"]["checksum"]


def test_a_benign_prompt_in_messages_form_passes(client, raw_token):
    messages = [
        {"role": "system", "content": "You are a gardening assistant."},
        {"role": "user", "content": BENIGN_PROMPT},
    ]
    response = post(
        client, raw_token, {"messages": messages, "constitution": "widgets"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["blocked"] is False and body["flagged"] is False
    assert body["score"] < body["threshold"]
    assert body["category"] == "garden care"


def test_every_request_is_stored_as_an_api_conversation(client, raw_token, alice):
    blocked = post(client, raw_token, {"text": HARMFUL_PROMPT}).json()
    passed = post(client, raw_token, {"text": BENIGN_PROMPT}).json()
    flagged = Conversation.objects.get(pk=blocked["conversation_id"])
    assert flagged.source == "api" and flagged.user == alice
    assert flagged.flagged and flagged.flag_reason == "input_blocked"
    assert (
        flagged.api_token.name == "ci"
        and flagged.input_model_id == blocked["model"]["id"]
    )
    turn = flagged.turns.get()
    assert turn.user_content == HARMFUL_PROMPT and turn.finish_reason == "blocked"
    assert turn.input_score == pytest.approx(blocked["score"], abs=1e-5)
    clean = Conversation.objects.get(pk=passed["conversation_id"])
    assert not clean.flagged and clean.turns.get().input_category == "garden care"


def test_shadow_tokens_flag_but_never_block(client, alice, widgets):
    raw = ApiToken.issue(user=alice, name="trial", constitution=widgets, mode="shadow")[
        1
    ]
    body = post(client, raw, {"text": HARMFUL_PROMPT}).json()
    assert body["mode"] == "shadow"
    assert body["flagged"] is True and body["blocked"] is False
    conversation = Conversation.objects.get(pk=body["conversation_id"])
    assert conversation.flagged and conversation.mode == "shadow"
    assert conversation.turns.get().would_block is True


def test_off_tokens_score_nothing(client, alice, widgets):
    raw = ApiToken.issue(user=alice, name="off", constitution=widgets, mode="off")[1]
    body = post(client, raw, {"text": HARMFUL_PROMPT}).json()
    assert body["mode"] == "off" and body["score"] is None and body["blocked"] is False


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ("{not json", 400, None),
        ("[1, 2]", 400, None),
        ({}, 400, "text"),
        ({"text": ""}, 400, "text"),
        ({"text": 7}, 400, "text"),
        ({"text": "a", "messages": []}, 400, "text"),
        ({"messages": []}, 400, "messages"),
        ({"messages": "hello"}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
        ({"text": "hi", "constitution": "nope"}, 404, "constitution"),
        ({"text": "hi", "constitution": 3}, 400, "constitution"),
        ({"text": "x" * 4001}, 413, "text"),
    ],
)
def test_bad_requests_get_openai_errors_and_write_nothing(
    client, raw_token, body, status, param
):
    error = assert_error(post(client, raw_token, body), status)
    assert error["param"] == param
    assert not Conversation.objects.exists() and not Turn.objects.exists()


def test_the_message_limit_is_named_in_the_error(client, raw_token):
    error = assert_error(post(client, raw_token, {"text": "x" * 5000}), 413)
    assert "4000" in error["message"]


def test_bodies_over_a_megabyte_are_refused(client, raw_token):
    error = assert_error(post(client, raw_token, {"text": "x" * 1_100_000}), 413)
    assert error["code"] == "body_too_large"
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Basic abc", "Bearer gw_wrong", "Bearer x"]
)
def test_missing_or_invalid_tokens_get_401(client, widgets, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.post(URL, data=json.dumps({"text": "hi"}),
                           content_type="application/json", **extra)  # fmt: skip
    error = assert_error(response, 401)
    assert error["type"] == "authentication_error"
    assert not Conversation.objects.exists()


def test_a_revoked_token_gets_401(client, alice, widgets):
    from django.utils import timezone

    token, raw = ApiToken.issue(user=alice, name="old", constitution=widgets)
    assert post(client, raw, {"text": BENIGN_PROMPT}).status_code == 200
    token.revoked_at = timezone.now()
    token.save()
    assert_error(post(client, raw, {"text": BENIGN_PROMPT}), 401)


def test_a_token_without_a_default_needs_a_constitution(client, alice, widgets):
    raw = ApiToken.issue(user=alice, name="bare")[1]
    assert_error(post(client, raw, {"text": "hi"}), 400)
    assert (
        post(client, raw, {"text": "hi", "constitution": "widgets"}).status_code == 200
    )


def test_no_active_classifier_gives_a_clear_503(client, alice):
    from tests.factories import published_constitution

    empty = published_constitution("empty", user=alice).constitution
    raw = ApiToken.issue(user=alice, name="t", constitution=empty)[1]
    error = assert_error(post(client, raw, {"text": "hi"}), 503)
    assert "no active input classifier" in error["message"]
    assert not Conversation.objects.exists()


def test_over_the_rate_limit_gets_429_with_retry_after(client, alice):
    guarded_constitution("slow", user=alice, requests_per_minute=2)
    raw = ApiToken.issue(user=alice, name="t")[1]
    body = {"text": BENIGN_PROMPT, "constitution": "slow"}
    assert post(client, raw, body).status_code == 200
    assert post(client, raw, body).status_code == 200
    response = post(client, raw, body)
    error = assert_error(response, 429)
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(response["Retry-After"]) <= 61
    assert Conversation.objects.count() == 2


def test_get_is_not_allowed(client, raw_token):
    response = client.get(URL, **bearer(raw_token))
    assert_error(response, 405)
