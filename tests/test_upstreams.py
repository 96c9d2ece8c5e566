"""Upstream models (#25 item 1): operators register them (page and CLI), policy
authors attach them on a constitution's guard settings, keys are never shown and
never follow a changed URL."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from classifiers.models import GuardPolicy, Upstream
from constitutions.models import Constitution

pytestmark = pytest.mark.django_db

FIELDS = {"name": "vllm", "base_url": "http://127.0.0.1:8001/v1", "model": "llama",
          "api_key": "sk-secret-1", "api_key_env": "", "timeout_s": 30,
          "max_concurrency": 8, "max_tokens": 1024}  # fmt: skip


def test_an_operator_adds_an_upstream_and_its_key_is_never_shown(client, operator, victor):
    client.force_login(operator)
    assert client.post("/classifiers/upstreams/", FIELDS).status_code == 302
    upstream = Upstream.objects.get(name="vllm")
    assert upstream.api_key == "sk-secret-1" and upstream.key_source == "stored"
    client.force_login(victor)
    page = client.get("/classifiers/upstreams/").content.decode()
    assert "vllm" in page and "llama" in page and "sk-secret-1" not in page
    client.force_login(operator)
    edit = client.get(f"/classifiers/upstreams/{upstream.pk}/").content.decode()
    assert "sk-secret-1" not in edit


def test_only_operators_change_upstreams(client, alice):
    client.force_login(alice)  # a policy author, not staff
    assert client.post("/classifiers/upstreams/", FIELDS).status_code == 403
    assert not Upstream.objects.exists()
    upstream = Upstream.objects.create(name="x", base_url="http://127.0.0.1:1/v1", model="m")
    assert client.post(f"/classifiers/upstreams/{upstream.pk}/", FIELDS).status_code == 403
    assert client.post(f"/classifiers/upstreams/{upstream.pk}/delete/").status_code == 403
    assert Upstream.objects.get().name == "x"


def test_a_new_url_forgets_the_stored_key_unless_it_is_given_again(client, operator):
    client.force_login(operator)
    client.post("/classifiers/upstreams/", FIELDS)
    upstream = Upstream.objects.get()
    same_url = {**FIELDS, "api_key": "", "timeout_s": 12}
    client.post(f"/classifiers/upstreams/{upstream.pk}/", same_url)
    upstream.refresh_from_db()
    assert upstream.api_key == "sk-secret-1" and upstream.timeout_s == 12
    moved = {**FIELDS, "api_key": "", "base_url": "http://attacker.example/v1"}
    client.post(f"/classifiers/upstreams/{upstream.pk}/", moved)
    upstream.refresh_from_db()
    assert upstream.base_url == "http://attacker.example/v1" and upstream.api_key == ""


def test_bad_upstream_fields_are_400_and_change_nothing(client, operator):
    client.force_login(operator)
    for bad in ({"base_url": "ftp://x/v1"}, {"name": "a/b"}, {"timeout_s": 0},
                {"max_concurrency": 0}, {"api_key_env": "NOT A NAME"},
                {"api_key_env": "SECRET_KEY"}, {"api_key_env": "DATABASE_URL"}):  # fmt: skip
        response = client.post("/classifiers/upstreams/", {**FIELDS, **bad})
        assert response.status_code == 400, bad
    assert not Upstream.objects.exists()


def test_authors_attach_upstreams_and_set_the_failure_mode_on_guard_settings(client, alice):
    constitution = Constitution.objects.create(slug="fraud", name="Fraud", domain="Banking.")
    upstream = Upstream.objects.create(name="vllm", base_url="http://127.0.0.1:8001/v1", model="m")
    client.force_login(alice)
    page = client.get("/classifiers/guard/fraud/").content.decode()
    assert "vllm" in page
    response = client.post("/classifiers/guard/fraud/", {
        "mode": "enforce", "max_message_chars": 4000, "max_new_tokens": 128,
        "requests_per_minute": 30, "upstreams": [upstream.pk], "failure_mode": "open",
        "guard_timeout_s": 2.5,
    })  # fmt: skip
    assert response.status_code == 302
    policy = GuardPolicy.objects.get(constitution=constitution)
    assert list(policy.upstreams.all()) == [upstream]
    assert policy.failure_mode == "open" and policy.guard_timeout_s == 2.5


def test_the_upstreams_command(capsys):
    Constitution.objects.create(slug="fraud", name="Fraud", domain="Banking.")
    call_command("upstreams", "add", "ollama", "--url", "http://127.0.0.1:11434/v1/",
                 "--model", "llama3", "--api-key-env", "GUARDWEB_UPSTREAM_KEY_OLLAMA")  # fmt: skip
    call_command("upstreams", "attach", "ollama", "--constitution", "fraud")
    call_command("upstreams", "list")
    out = capsys.readouterr().out
    assert "fraud/ollama" in out and "$GUARDWEB_UPSTREAM_KEY_OLLAMA" in out
    assert Upstream.objects.get().base_url == "http://127.0.0.1:11434/v1"  # trailing / dropped
    with pytest.raises(CommandError, match="not an http"):
        call_command("upstreams", "add", "bad", "--url", "file:///etc", "--model", "m")
    with pytest.raises(CommandError, match="no upstream named"):
        call_command("upstreams", "attach", "nope", "--constitution", "fraud")
    call_command("upstreams", "detach", "ollama", "--constitution", "fraud")
    assert not GuardPolicy.objects.get().upstreams.exists()
