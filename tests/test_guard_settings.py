from __future__ import annotations

import pytest

from classifiers.models import GuardPolicy
from constitutions.models import AuditEvent, Constitution

pytestmark = pytest.mark.django_db


@pytest.fixture
def constitution():
    return Constitution.objects.create(slug="fraud", name="Fraud", domain="Banking help.")


def post(client, user, **data):  # type: ignore[no-untyped-def]
    client.force_login(user)
    fields = {"mode": "enforce", "max_message_chars": 4000, "max_new_tokens": 128, "requests_per_minute": 30}
    fields.update(data)
    return client.post("/classifiers/guard/fraud/", fields)


def test_alice_switches_a_constitution_to_shadow_mode_and_it_is_audited(client, alice, constitution):
    response = post(client, alice, mode="shadow")
    assert response.status_code == 302
    assert GuardPolicy.objects.get(constitution=constitution).mode == "shadow"
    assert AuditEvent.objects.filter(constitution=constitution, action="guard").exists()


@pytest.mark.parametrize("who", ["bob", "victor"])
def test_reviewers_and_viewers_can_read_but_not_change_the_settings(client, request, who, constitution):
    user = request.getfixturevalue(who)
    client.force_login(user)
    assert client.get("/classifiers/guard/fraud/").status_code == 200
    assert post(client, user, mode="off").status_code == 403
    assert GuardPolicy.for_constitution(constitution).mode == "enforce"


def test_a_bad_mode_or_limit_is_a_400_with_errors_and_changes_nothing(client, alice, constitution):
    assert post(client, alice, mode="banana").status_code == 400
    response = post(client, alice, max_new_tokens=100000)
    assert response.status_code == 400
    assert b"less than or equal to 512" in response.content
    # 0 tokens would make every reply empty.
    response = post(client, alice, max_new_tokens=0)
    assert response.status_code == 400 and b"greater than or equal to 1" in response.content
    assert GuardPolicy.for_constitution(constitution).max_new_tokens == 128


def test_an_unknown_constitution_is_a_404(client, alice):
    client.force_login(alice)
    assert client.get("/classifiers/guard/nope/").status_code == 404
