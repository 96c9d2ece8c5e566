"""Bad input never crashes the app: random and hostile bodies to the API, the
main forms and the playground websocket always get a clear 4xx (or an error
message on the socket), and nothing is written.

YAML bombs on constitution import are covered in tests/test_constitutions_yaml.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


def row_counts() -> dict[str, int]:
    from django.apps import apps

    names = (
        "constitutions.Constitution", "constitutions.Category",
        "constitutions.ConstitutionVersion", "classifiers.Dataset",
        "classifiers.DatasetExample", "classifiers.TrainingRun", "classifiers.ApiToken",
        "classifiers.GuardPolicy", "classifiers.Conversation", "classifiers.Turn",
        "classifiers.GeneratorEndpoint",
    )  # fmt: skip
    return {name: apps.get_model(name).objects.count() for name in names}


def assert_clear_4xx(response: Any) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])


# --- The API ----------------------------------------------------------------------


@pytest.fixture
def api(db, alice) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A bearer header for a token whose default constitution has a live classifier."""
    from classifiers.models import ApiToken
    from tests.api_helpers import guarded_constitution

    constitution = guarded_constitution("widgets", max_new_tokens=2)
    _token, raw = ApiToken.issue(user=alice, name="fuzz", constitution=constitution)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


HOSTILE_BODIES = {
    "over 1 MB": json.dumps({"text": "a" * 1_100_000}).encode(),
    "invalid UTF-8": b'{"text": "caf\xe9 \xff\xfe"}',
    "10,000 nested arrays": deep(10_000).encode(),
    "10,000 nested objects": ('{"a":' * 10_000 + "1" + "}" * 10_000).encode(),
    "1 MB prompt under the body limit": json.dumps({"text": "a" * 990_000}).encode(),
    "NUL character": json.dumps({"text": "hello\x00there"}).encode(),
    "unpaired surrogate": b'{"text": "hello \\ud800 there"}',
    "wrong types": json.dumps({"text": 5, "messages": {"a": 1}}).encode(),
    "a JSON list": b"[1, 2, 3]",
    "empty": b"",
    "not JSON": b"text=hello",
    "a 5,000-digit integer": b'{"text": "hi", "max_tokens": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("path", ["/api/v1/classify", "/v1/chat/completions"])
@pytest.mark.parametrize("case", list(HOSTILE_BODIES))
def test_hostile_api_bodies_get_a_clear_4xx_and_write_nothing(api, path, case) -> None:  # type: ignore[no-untyped-def]
    body = HOSTILE_BODIES[case]
    if path.startswith("/v1/") and b'"text"' in body:  # the chat shape of the same
        text = body.replace(b'{"text": ', b'{"messages": [{"role": "user", "content": ')
        body = text[:-1] + b"}]}" if text.endswith(b"}") else text
    before = row_counts()
    response = Client().post(path, body, content_type="application/json", **api)
    assert_clear_4xx(response)
    error = response.json()["error"]
    assert error["message"] and len(error["message"]) < 500  # one clear sentence
    assert row_counts() == before


def test_control_characters_are_classified_and_stored_intact(api) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import Turn

    text = "garden \x01\x07\x1b[31m soup\u202e\ufeff"
    response = Client().post(
        "/api/v1/classify", {"text": text}, content_type="application/json", **api
    )
    assert response.status_code == 200, response.content
    assert Turn.objects.get().user_content == text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)  # fmt: skip
api_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "text": json_values, "messages": json_values, "model": json_values,
            "constitution": json_values, "stream": json_values, "max_tokens": json_values,
            "mode": json_values, "temperature": json_values,
        },
    ),  # fmt: skip
)


@FUZZ
@given(body=api_bodies, raw=st.binary(max_size=64))
def test_random_api_bodies_never_crash(api, body, raw) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    for path in ("/api/v1/classify", "/v1/chat/completions"):
        before = row_counts()
        response = client.post(path, json.dumps(body), content_type="application/json", **api)
        assert response.status_code < 500, (path, body, response.content[:300])
        if response.status_code >= 400:
            assert response.json()["error"]["message"]
            assert row_counts() == before
        garbage = client.post(path, raw, content_type="application/json", **api)
        assert garbage.status_code < 500, (path, raw, garbage.content[:300])


# --- Forms ------------------------------------------------------------------------


@pytest.fixture
def forms_world(db, alice) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from tests.factories import published_constitution
    from tests.training_helpers import make_dataset

    version = published_constitution("widgets", user=alice)
    dataset = make_dataset(version)
    client = Client()
    client.force_login(alice)
    return {"client": client, "version": version, "dataset": dataset}


FORMS = {
    "constitution create": ("/constitutions/", ["name", "slug", "domain"]),
    "category add": (
        "/constitutions/widgets/categories/add/",
        ["name", "kind", "description", "excludes", "example_queries", "target_fpr",
         "languages", "tags", "revision"],
    ),  # fmt: skip
    "dataset start": (
        "/classifiers/datasets/new/",
        ["version", "per_category", "responses", "transforms", "variants_per_example",
         "heldout_families", "generator", "seed", "temperature", "top_p",
         "max_new_tokens_query", "max_new_tokens_response", "redteam_templates",
         "opener_share", "train_fraction", "validation_fraction",
         "calibration_fraction", "test_fraction"],
    ),  # fmt: skip
    "training start": (
        "/classifiers/datasets/{dataset}/train/",
        ["input_mode", "output_mode", "input_epochs", "output_epochs", "seed",
         "target_fpr", "output_loss", "probe_layers", "activate_when_done"],
    ),  # fmt: skip
    "token create": ("/classifiers/tokens/", ["name", "constitution", "mode"]),
    "guard settings": (
        "/classifiers/guard/widgets/",
        ["mode", "shadow_input_model", "shadow_output_model", "max_message_chars",
         "max_new_tokens", "requests_per_minute"],
    ),  # fmt: skip
}

form_values = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "fast", "enforce", "restricted", "1", "0.5", "nan", "inf", "-1e308",
                     "on", "true", "widgets", "x" * 5000, "\x00", "\u202e", "1" * 40]),
)  # fmt: skip


def _form_data(draw: Any, fields: list[str]) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from([*fields, "junk"]), max_size=len(fields) + 1))
    return {key: draw(form_values) for key in keys}


@FUZZ
@given(data=st.data())
def test_random_form_posts_never_crash_and_refusals_write_nothing(forms_world, data) -> None:  # type: ignore[no-untyped-def]
    client = forms_world["client"]
    for name, (url, fields) in FORMS.items():
        fields_data = _form_data(data.draw, fields)
        before = row_counts()
        response = client.post(url.format(dataset=forms_world["dataset"].pk), fields_data)
        assert response.status_code < 500, (name, fields_data, response.content[:300])
        if response.status_code >= 400:
            assert row_counts() == before, (name, fields_data)


@pytest.mark.parametrize("name", list(FORMS))
def test_hostile_form_bodies_get_a_4xx(forms_world, name) -> None:  # type: ignore[no-untyped-def]
    url = FORMS[name][0].format(dataset=forms_world["dataset"].pk)
    client = forms_world["client"]
    before = row_counts()
    cases = [
        client.post(url, {"name": "n" * 3_000_000}),  # over DATA_UPLOAD_MAX_MEMORY_SIZE
        client.post(url, {"name": "nul\x00name", "slug": "nul\x00"}),
        client.post(url, deep(10_000), "application/json"),
    ]
    for response in cases:
        assert_clear_4xx(response)
    assert row_counts() == before
    # Invalid UTF-8 is decoded with replacement characters (Django's choice): the
    # form then judges the text like any other; never a crash.
    mangled = client.post(url, b"name=caf\xe9\xff&slug=\xfe", "application/x-www-form-urlencoded")
    assert mangled.status_code < 500


@pytest.mark.parametrize("field", ["example_queries", "example_responses", "languages", "tags",
                                   "description", "excludes"])  # fmt: skip
def test_a_nul_in_any_category_field_is_refused_by_add_edit_and_autosave(
    forms_world, field
) -> None:  # type: ignore[no-untyped-def]
    from constitutions.models import Category, Constitution

    client = forms_world["client"]
    constitution = Constitution.objects.get(slug="widgets")
    category = constitution.categories.first()
    good = {"name": "New one", "kind": "permitted", "description": "Fine.",
            "example_queries": "one\ntwo", "revision": "0"}  # fmt: skip
    bad = {**good, field: "bad\x00value\nsecond"}
    before = (Category.objects.count(), sorted(
        Category.objects.values_list("pk", "revision", "description", "example_queries")))  # fmt: skip
    assert client.post("/constitutions/widgets/categories/add/",
                       {f"new-{k}": v for k, v in {**good, "name": "Probe"}.items()}
                       ).status_code == 302  # fmt: skip
    Category.objects.filter(name="Probe").delete()
    added = client.post("/constitutions/widgets/categories/add/",
                        {f"new-{k}": v for k, v in bad.items()})  # fmt: skip
    # Django's own check says "Null characters are not allowed." for plain text fields.
    said = (b"NUL", b"Null characters")
    assert added.status_code == 400 and any(w in added.content for w in said)
    prefix = f"c{category.pk}"
    edits = {f"{prefix}-{k}": v for k, v in {**bad, "name": category.name,
             "kind": category.kind, "revision": str(category.revision)}.items()}  # fmt: skip
    edited = client.post(f"/constitutions/widgets/categories/{category.pk}/edit/", edits)
    assert edited.status_code == 400 and any(w in edited.content for w in said)
    saved = client.post(f"/constitutions/widgets/categories/{category.pk}/autosave/", edits,
                        HTTP_HX_REQUEST="true")  # fmt: skip
    assert saved.status_code < 500 and b"Not saved" in saved.content
    after = (Category.objects.count(), sorted(
        Category.objects.values_list("pk", "revision", "description", "example_queries")))  # fmt: skip
    assert after == before


# --- The playground websocket ---------------------------------------------------------

BAD_FRAMES: list[tuple[str, Any]] = [
    ("text", "not json at all"),
    ("text", "[1, 2, 3]"),
    ("text", json.dumps({"type": "chat", "message": "x" * 2_000_000, "constitution": "widgets"})),
    ("bytes", b"\x00\xff binary frame"),
    ("text", json.dumps({"type": "no-such-type"})),
    ("text", json.dumps({"type": "chat", "message": 42, "constitution": "widgets"})),
    ("text", json.dumps({"type": "chat", "message": "hi", "constitution": ["widgets"]})),
    ("text", json.dumps({"type": "chat", "message": "hi\x00", "constitution": "widgets"})),
    ("text", '{"type": "chat", "message": "hi \\ud800", "constitution": "widgets"}'),
    ("text", json.dumps({"type": "chat", "message": "hi", "constitution": "widgets",
                         "max_new_tokens": "lots"})),  # fmt: skip
    ("text", json.dumps({"type": "resume", "conversation_id": "abc"})),
    ("text", deep(10_000)),
    ("text", json.dumps({"type": None})),
]


async def _send_bad_frames(cookie: bytes) -> list[dict[str, Any]]:
    from channels.testing import WebsocketCommunicator

    from guardweb.asgi import application

    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", cookie)]
    communicator = WebsocketCommunicator(application, "/ws/playground/", headers=headers)
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    replies = []
    for kind, frame in BAD_FRAMES:
        if kind == "bytes":
            await communicator.send_to(bytes_data=frame)
        else:
            await communicator.send_to(text_data=frame)
        replies.append(json.loads(await communicator.receive_from(timeout=20)))
    # Still usable afterwards: a well-formed request gets its own answer.
    await communicator.send_json_to({"type": "resume", "conversation_id": 999_999})
    replies.append(json.loads(await communicator.receive_from(timeout=10)))
    await communicator.disconnect()
    return replies


@pytest.mark.django_db(transaction=True)
def test_malformed_websocket_frames_get_an_error_and_the_socket_stays_usable(alice) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import published_constitution

    published_constitution("widgets", user=alice)
    client = Client()
    client.force_login(alice)
    before = row_counts()
    replies = asyncio.run(_send_bad_frames(f"sessionid={client.cookies['sessionid'].value}".encode()))
    assert len(replies) == len(BAD_FRAMES) + 1
    for (_kind, frame), reply in zip(BAD_FRAMES, replies, strict=False):
        assert reply["type"] == "error", (str(frame)[:80], reply)
        assert reply["message"], reply
    assert replies[-1] == {"type": "error", "message": "conversation not found"}
    assert row_counts() == before


# -- YAML import fuzzing: tags, typed scalars, NUL escapes, nesting (#26) -------------

_YAML_VALUES = st.sampled_from([
    "x", "'quoted'", '"nul\\0inside"', '"surrogate \\ud800"', "!foo bar", "!!python/name:os.system",
    "!!python/object/apply:os.system ['true']", "!!int abc", "!!float abc", "!!int 12",
    "!!timestamp 2020-13-45", "!!binary aGk=", "!!set {a, b}", "~", "[]", "{}", "[a, [b, [c]]]",
    "1e999", "-.inf", ".nan", "0x1F", "&anchor v", "*alias", "'" + "n" * 300 + "'",
    "[" * 60 + "]" * 60, "|\n  multi\n  line", ">-\n  folded", "? complex\n: key",
])
_YAML_KEYS = st.sampled_from(["name", "slug", "domain", "kind", "description", "excludes",
                              "example_queries", "tags", "languages", "target_fpr", "extra"])


class _Undo(Exception):
    pass


@st.composite
def yaml_documents(draw: Any) -> str:
    top = [f"{key}: {draw(_YAML_VALUES)}" for key in draw(st.lists(_YAML_KEYS, max_size=4))]
    categories = []
    for _ in range(draw(st.integers(0, 2))):
        fields = draw(st.lists(_YAML_KEYS, min_size=1, max_size=5))
        lines = [f"    {k}: {draw(_YAML_VALUES)}" for k in fields]
        lines[0] = "  - " + lines[0].lstrip()
        categories.append("\n".join(lines))
    if categories:
        top.append("categories:\n" + "\n".join(categories))
    return "schema_version: 1\n" + "\n".join(top) + "\n"


@FUZZ
@given(document=yaml_documents())
def test_random_yaml_imports_are_refused_cleanly_or_imported_whole(db, alice, document) -> None:  # type: ignore[no-untyped-def]
    """Every document either imports, or is refused with line-numbered errors and
    writes nothing; no tag ever runs code or gives another exception."""
    from constitutions import yaml_io

    before = row_counts()
    try:
        with transaction.atomic():
            yaml_io.import_yaml(document, user=alice, mode="new")
            raise _Undo  # an import that succeeds is rolled back: the next example starts clean
    except yaml_io.YamlImportError as exc:
        assert exc.errors and all(e.startswith("line ") for e in exc.errors), exc.errors
    except _Undo:
        pass
    assert row_counts() == before
