"""Chat request validation (OpenAI error shape, nothing written) and the OpenAPI
document, checked against real responses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from classifiers.api.openapi import DOCUMENT
from classifiers.models import ApiToken, Conversation, GuardPolicy
from tests.api_helpers import (
    BENIGN_PROMPT,
    HARMFUL_PROMPT,
    bearer,
    guarded_constitution,
)

pytestmark = pytest.mark.django_db

CHAT = "/v1/chat/completions"


@pytest.fixture
def widgets(alice):  # type: ignore[no-untyped-def]
    return guarded_constitution("widgets", user=alice)


@pytest.fixture
def raw_token(alice, widgets) -> str:  # type: ignore[no-untyped-def]
    return ApiToken.issue(user=alice, name="ci", constitution=widgets)[1]


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def post(client, url: str, raw: str, body: Any):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **bearer(raw))


# ------------------------------------------------------------- a small validator


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = DOCUMENT["components"]["schemas"][name]
    return schema


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool,
         "integer": int, "number": (int, float), "null": type(None)}  # fmt: skip


def validate(value: Any, schema: dict[str, Any], where: str = "$") -> None:
    """Required fields, types, consts and enums: what clients rely on."""
    schema = resolve(schema)
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                return validate(value, option, where)
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{where}: matches no option: {errors}")
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    types = schema.get("type")
    if types:
        types = [types] if isinstance(types, str) else types
        ok = any(
            isinstance(value, TYPES[t])
            and not (t in ("integer", "number") and isinstance(value, bool))
            for t in types
        )
        assert ok, f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, f"{where}: missing required {name!r}"
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                validate(value[name], sub, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{index}]")


def response_schema(
    path: str, method: str, status: int, media: str = "application/json"
):
    return DOCUMENT["paths"][path][method]["responses"][str(status)]["content"][media][
        "schema"
    ]


# ----------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ("{oops", 400, None),
        ({"model": "widgets"}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": None}]}, 400, "messages[0].content"),
        ({"messages": user("hi"), "stream": "yes"}, 400, "stream"),
        ({"messages": user("hi"), "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": user("hi"), "max_tokens": 129}, 400, "max_tokens"),
        ({"messages": user("hi"), "max_tokens": "8"}, 400, "max_tokens"),
        ({"messages": user("hi"), "temperature": "hot"}, 400, "temperature"),
        ({"messages": user("hi"), "n": 2}, 400, "n"),
        ({"messages": user("hi"), "model": 5}, 400, "model"),
        ({"messages": user("hi"), "model": "nope"}, 404, "model"),
        ({"messages": user("x" * 4001)}, 413, "messages[0].content"),
    ],
)
def test_bad_chat_requests_get_openai_errors_and_write_nothing(
    client, raw_token, body, status, param
):
    response = post(client, CHAT, raw_token, body)
    assert response.status_code == status, response.content
    validate(response.json(), {"$ref": "#/components/schemas/Error"})
    assert response.json()["error"]["param"] == param
    assert not Conversation.objects.exists()


def test_max_tokens_over_the_policy_names_the_limit(client, raw_token, widgets):
    GuardPolicy.objects.update_or_create(
        constitution=widgets, defaults={"max_new_tokens": 16}
    )
    response = post(client, CHAT, raw_token, {"messages": user("hi"), "max_tokens": 17})
    assert response.status_code == 400
    assert "at most 16 new tokens" in response.json()["error"]["message"]


def test_chat_without_any_active_model_is_a_clear_503(client, alice):
    from tests.factories import published_constitution

    published_constitution("bare", user=alice)
    raw = ApiToken.issue(user=alice, name="t")[1]
    response = post(client, CHAT, raw, {"model": "bare", "messages": user("hi")})
    assert response.status_code == 503
    assert "no active classifier" in response.json()["error"]["message"]
    assert not Conversation.objects.exists()


def test_the_openapi_document_is_served_without_login(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert {"/api/v1/classify", "/v1/chat/completions", "/v1/models"} <= set(
        document["paths"]
    )
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for schema in document["components"]["schemas"].values():  # every $ref resolves
        for ref in _refs(schema):
            assert ref.rsplit("/", 1)[-1] in document["components"]["schemas"], ref


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_real_classify_responses_match_the_schema(client, raw_token):
    for text in (HARMFUL_PROMPT, BENIGN_PROMPT):
        response = post(client, "/api/v1/classify", raw_token, {"text": text})
        validate(response.json(), response_schema("/api/v1/classify", "post", 200))
    for body, status in (({"text": "x" * 5000}, 413), ({"text": 1}, 400)):
        response = post(client, "/api/v1/classify", raw_token, body)
        assert response.status_code == status
        validate(response.json(), resolve({"$ref": "#/components/schemas/Error"}))


def test_real_model_lists_match_the_schema(client, raw_token):
    response = client.get("/v1/models", **bearer(raw_token))
    validate(response.json(), response_schema("/v1/models", "get", 200))
    assert [m["id"] for m in response.json()["data"]] == [
        "widgets",
        "widgets:unguarded",
    ]
    one = client.get("/v1/models/widgets", **bearer(raw_token))
    validate(one.json(), response_schema("/v1/models/{model}", "get", 200))
    assert client.get("/v1/models/nope", **bearer(raw_token)).status_code == 404


def test_the_validator_catches_a_missing_field():
    with pytest.raises(AssertionError, match="missing required 'guard'"):
        validate({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                  "choices": []}, response_schema("/v1/chat/completions", "post", 200))  # fmt: skip


@pytest.mark.usefixtures("live_db")
def test_real_chat_responses_match_the_schema(asgi_server, alice):
    import httpx

    widgets = guarded_constitution("schema", user=alice)
    raw = ApiToken.issue(user=alice, name="ci", constitution=widgets)[1]
    headers = {"Authorization": f"Bearer {raw}"}
    url = f"{asgi_server}{CHAT}"
    body = {"messages": user(HARMFUL_PROMPT), "max_tokens": 4}
    plain = httpx.post(url, json=body, headers=headers, timeout=60)
    validate(plain.json(), response_schema(CHAT, "post", 200))
    streamed = httpx.post(url, json={**body, "stream": True, "messages": user(BENIGN_PROMPT)},
                          headers=headers, timeout=60)  # fmt: skip
    chunk_schema = response_schema(CHAT, "post", 200, "text/event-stream")
    blocks = [b[len("data: ") :] for b in streamed.text.split("\n\n") if b.strip()]
    assert blocks[-1] == "[DONE]"
    for block in blocks[:-1]:
        validate(json.loads(block), chunk_schema)
    validate(json.loads(blocks[-2])["guard"], {"$ref": "#/components/schemas/Guard"})
