"""The API token page: create (shown once, stored hashed), list and revoke your own."""

from __future__ import annotations

import pytest
from django.urls import reverse

from classifiers.models import ApiToken
from constitutions.models import Constitution
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/classifiers/tokens/"


def login(client, user):  # type: ignore[no-untyped-def]
    assert client.login(username=user.username, password=PASSWORD)
    return client


@pytest.fixture
def widgets():  # type: ignore[no-untyped-def]
    return Constitution.objects.create(
        slug="widgets", name="Widgets policy", domain="Gardens."
    )


def test_the_page_is_named_tokens():
    assert reverse("classifiers:tokens") == URL


@pytest.mark.parametrize("persona", ["alice", "bob", "victor"])
def test_every_role_may_open_the_page(client, persona, request):
    user = request.getfixturevalue(persona)
    response = login(client, user).get(URL)
    assert response.status_code == 200
    assert b"New token" in response.content


def test_users_without_a_role_get_403_and_create_nothing(client, charlie):
    login(client, charlie)
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"name": "x"}).status_code == 403
    assert not ApiToken.objects.exists()


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get(URL)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_creating_shows_the_raw_token_once_and_stores_only_its_hash(
    client, bob, widgets
):
    login(client, bob)
    response = client.post(
        URL, {"name": "ci", "constitution": widgets.pk, "mode": "enforce"}
    )
    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert raw.startswith("gw_") and raw.encode() in response.content
    assert response["Cache-Control"] == "no-store"
    token = ApiToken.objects.get()
    assert (token.user, token.name, token.constitution, token.mode) == (
        bob,
        "ci",
        widgets,
        "enforce",
    )
    row = ApiToken.objects.filter(pk=token.pk).values().get()
    assert all(raw not in str(value) for value in row.values())
    assert ApiToken.authenticate(raw) == token
    again = client.get(URL)
    assert (
        raw.encode() not in again.content and token.key_prefix.encode() in again.content
    )


def test_an_invalid_form_is_a_400_and_creates_nothing(client, alice):
    login(client, alice)
    response = client.post(URL, {"name": "", "mode": "loud"})
    assert response.status_code == 400
    assert b"This field is required" in response.content
    assert not ApiToken.objects.exists()


def test_users_see_only_their_own_tokens(client, alice, bob):
    ApiToken.issue(user=alice, name="alice-token")
    ApiToken.issue(user=bob, name="bob-token")
    content = login(client, bob).get(URL).content
    assert b"bob-token" in content and b"alice-token" not in content


def test_revoking_your_token_makes_the_api_refuse_it(client, victor):
    token, raw = ApiToken.issue(user=victor, name="old")
    login(client, victor)
    response = client.post(f"{URL}{token.pk}/revoke/")
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    api = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.status_code == 401
    assert b"revoked" in client.get(URL).content


def test_another_users_token_cannot_be_revoked(client, alice, bob):
    token, _ = ApiToken.issue(user=alice, name="mine")
    login(client, bob)
    assert client.post(f"{URL}{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_revoke_needs_post(client, alice):
    token, _ = ApiToken.issue(user=alice, name="mine")
    assert login(client, alice).get(f"{URL}{token.pk}/revoke/").status_code == 405
    token.refresh_from_db()
    assert token.revoked_at is None


@pytest.mark.django_db
def test_only_policy_authors_create_shadow_or_off_tokens(client, bob, alice):
    client.force_login(bob)
    for mode in ("shadow", "off"):
        response = client.post("/classifiers/tokens/", {"name": "trial", "mode": mode})
        assert response.status_code == 400
        assert b"Only policy authors" in response.content
    assert not ApiToken.objects.filter(user=bob).exists()
    client.force_login(alice)
    assert client.post("/classifiers/tokens/", {"name": "trial", "mode": "shadow"}).status_code == 200
