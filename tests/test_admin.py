"""The classifiers app in the admin: every table readable by staff, secrets hidden,
product-made records read-only, a conversation erasable."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from classifiers.models import ApiToken, Conversation, GeneratorEndpoint, ReviewItem
from tests.review_helpers import flagged_conversation

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(make_user):  # type: ignore[no-untyped-def]
    return make_user("root", is_superuser=True, is_staff=True)


def test_every_classifiers_table_is_in_the_admin_and_its_list_opens(client, root):
    from django.apps import apps

    registered = {m for m in admin.site._registry if m._meta.app_label == "classifiers"}
    tables = {m for m in apps.get_app_config("classifiers").get_models()
              if not m._meta.auto_created}  # fmt: skip
    # Rows that only make sense inside their parent's page.
    inner = {"DatasetExample", "Turn", "TrafficPrompt", "EvaluationPrompt", "LabelAuditItem"}
    assert {m.__name__ for m in tables - registered} == inner
    client.force_login(root)
    for model in registered:
        url = reverse(f"admin:classifiers_{model._meta.model_name}_changelist")
        assert client.get(url).status_code == 200, model


def test_secrets_never_show_and_product_records_are_read_only(client, root, alice):
    token, raw = ApiToken.issue(user=alice, name="ci")
    endpoint = GeneratorEndpoint.objects.create(
        name="vllm", base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-secret-key"
    )
    client.force_login(root)
    page = client.get(reverse("admin:classifiers_apitoken_change", args=[token.pk])).content
    assert token.key_hash.encode() not in page and raw.encode() not in page
    page = client.get(reverse("admin:classifiers_generatorendpoint_change",
                              args=[endpoint.pk])).content  # fmt: skip
    assert b"sk-secret-key" not in page and b'name="api_key"' not in page
    listing = client.get(reverse("admin:classifiers_generatorendpoint_changelist")).content
    assert b"sk-secret-key" not in listing and b">set<" in listing
    assert client.get(reverse("admin:classifiers_apitoken_add")).status_code == 403
    assert client.post(reverse("admin:classifiers_apitoken_change", args=[token.pk]),
                       {"name": "renamed"}).status_code == 403  # fmt: skip


def test_a_conversation_is_erased_with_its_turns_and_review_item(client, root):
    conversation = flagged_conversation(None)
    client.force_login(root)
    url = reverse("admin:classifiers_conversation_delete", args=[conversation.pk])
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not Conversation.objects.exists() and not ReviewItem.objects.exists()


def test_people_who_are_not_staff_get_no_admin(client, alice):
    client.force_login(alice)
    response = client.get(reverse("admin:classifiers_apitoken_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]
