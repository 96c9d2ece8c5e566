from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(serialized_rollback=True)
def test_the_role_groups_exist_after_migrating():
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "policy_author",
        "reviewer",
        "viewer",
    }


def test_the_login_page_needs_no_login(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b"Log in to Guardweb" in response.content


def test_the_home_page_redirects_anonymous_users_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/")


@pytest.mark.parametrize("path", ["/constitutions/", "/classifiers/", "/admin/"])
def test_other_pages_need_login_too(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "login" in response["Location"]


def test_alice_logs_in_and_sees_her_roles(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    home = client.get("/")
    assert home.status_code == 200
    assert b"Welcome, alice" in home.content
    assert b"policy_author" in home.content


def test_a_wrong_password_shows_an_error(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
