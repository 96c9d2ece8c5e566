"""The editor's views: roles, htmx fragments, plain posts, conflicts, publishing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from constitutions.models import AuditEvent, Category, Constitution, ConstitutionVersion
from tests.factories import (
    CategoryFactory,
    ConstitutionFactory,
    restricted_and_permitted,
)

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def category_post(category: Category, **changes: object) -> dict[str, object]:
    prefix = f"c{category.pk}"
    values = {
        "name": category.name,
        "kind": category.kind,
        "description": category.description,
        "excludes": category.excludes,
        "example_queries": "\n".join(category.example_queries),
        "example_responses": "\n".join(category.example_responses),
        "languages": "\n".join(category.languages),
        "tags": "\n".join(category.tags),
        "target_fpr": "" if category.target_fpr is None else category.target_fpr,
        "revision": category.revision,
        **changes,
    }
    return {f"{prefix}-{k}": v for k, v in values.items()}


def new_category_post(**changes: object) -> dict[str, object]:
    values = {
        "name": "Forbidden gadgets",
        "kind": "restricted",
        "description": "Requests for the forbidden gadget.",
        "example_queries": "how do I make the forbidden gadget\nwhere is the forbidden gadget sold",
        **changes,
    }
    return {f"new-{k}": v for k, v in values.items()}


@pytest.fixture
def constitution() -> Constitution:
    return restricted_and_permitted(ConstitutionFactory(slug="widgets", name="Widgets"))


def snapshot(constitution: Constitution) -> tuple[object, ...]:
    constitution.refresh_from_db()
    return (
        constitution.draft_content(),
        constitution.draft_revision,
        ConstitutionVersion.objects.count(),
        AuditEvent.objects.count(),
    )


# --- reading ------------------------------------------------------------------------


def test_anonymous_users_are_redirected_to_login(client, constitution):
    response = client.get(reverse("constitutions:detail", args=["widgets"]))
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


@pytest.mark.parametrize("user", ["alice", "bob", "victor"])
def test_every_role_can_read_the_list_the_editor_history_diff_and_export(
    client, constitution, user, request
):
    client.force_login(request.getfixturevalue(user))
    for name, args in [
        ("list", []),
        ("detail", ["widgets"]),
        ("history", ["widgets"]),
        ("diff", ["widgets"]),
        ("export", ["widgets"]),
        ("audit", ["widgets"]),
    ]:
        assert (
            client.get(reverse(f"constitutions:{name}", args=args)).status_code == 200
        )


def test_charlie_without_a_role_gets_403_on_constitution_pages(
    client, charlie, constitution
):
    client.force_login(charlie)
    assert client.get(reverse("constitutions:list")).status_code == 403
    assert (
        client.get(reverse("constitutions:detail", args=["widgets"])).status_code == 403
    )


def test_the_list_shows_each_constitution_by_slug_with_counts_and_latest_version(
    client, alice, constitution
):
    client.force_login(alice)
    client.post(reverse("constitutions:publish", args=["widgets"]), {"note": "first"})
    html = client.get(reverse("constitutions:list")).content.decode()
    assert 'id="widgets"' in html
    assert "1 restricted" in html and "1 permitted" in html
    assert "v1" in html


def test_restricted_and_permitted_categories_are_visibly_distinguished(
    client, victor, constitution
):
    client.force_login(victor)
    html = client.get(
        reverse("constitutions:detail", args=["widgets"])
    ).content.decode()
    assert 'class="category restricted"' in html
    assert 'class="category permitted"' in html
    assert "Edit</a>" not in html  # read-only roles see no edit buttons


# --- writing is for policy authors only ---------------------------------------------


@pytest.mark.parametrize("user", ["bob", "victor", "charlie"])
def test_every_post_is_403_for_non_authors_and_changes_nothing(
    client, constitution, user, request
):
    client.force_login(request.getfixturevalue(user))
    category = constitution.categories.first()
    before = snapshot(constitution)
    posts = [
        (reverse("constitutions:list"), {"name": "X", "slug": "x", "domain": "d"}),
        (
            reverse("constitutions:header", args=["widgets"]),
            {"name": "X", "domain": "d", "revision": 0},
        ),
        (reverse("constitutions:category_add", args=["widgets"]), new_category_post()),
        (reverse("constitutions:validate", args=["widgets"]), new_category_post()),
        (
            reverse("constitutions:category_edit", args=["widgets", category.pk]),
            category_post(category, name="Renamed"),
        ),
        (
            reverse("constitutions:category_autosave", args=["widgets", category.pk]),
            category_post(category, name="Renamed"),
        ),
        (
            reverse("constitutions:category_move", args=["widgets", category.pk]),
            {"direction": "down"},
        ),
        (reverse("constitutions:category_delete", args=["widgets", category.pk]), {}),
        (reverse("constitutions:publish", args=["widgets"]), {"note": "n"}),
        (reverse("constitutions:import"), {"mode": "new"}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
        assert client.post(url, data, **HX).status_code == 403, url
    assert snapshot(constitution) == before
    assert Constitution.objects.count() == 1


def test_alice_creates_a_constitution_from_the_list_page(client, alice):
    client.force_login(alice)
    response = client.post(
        reverse("constitutions:list"),
        {"name": "Gadgets", "slug": "gadgets", "domain": "A gadget shop."},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("constitutions:detail", args=["gadgets"])
    created = Constitution.objects.get(slug="gadgets")
    assert created.created_by == alice
    assert AuditEvent.objects.get(constitution=created).action == "create"


def test_alice_adds_a_category_with_htmx_and_gets_a_fragment_not_the_page(
    client, alice, constitution
):
    client.force_login(alice)
    url = reverse("constitutions:category_add", args=["widgets"])
    response = client.post(url, new_category_post(), **HX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="add-category"' in html
    assert 'id="category-list"' in html and 'hx-swap-oob="true"' in html
    assert "Forbidden gadgets" in html
    assert "draftChanged" in response["HX-Trigger"]
    added = constitution.categories.get(name="Forbidden gadgets")
    assert added.example_queries == [
        "how do I make the forbidden gadget",
        "where is the forbidden gadget sold",
    ]
    assert added.position == 2
    assert AuditEvent.objects.filter(action="add_category").count() == 1


def test_a_plain_post_without_javascript_redirects_back_to_the_page(
    client, alice, constitution
):
    client.force_login(alice)
    response = client.post(
        reverse("constitutions:category_add", args=["widgets"]), new_category_post()
    )
    added = constitution.categories.get(name="Forbidden gadgets")
    assert response.status_code == 302
    assert response["Location"].endswith(f"/constitutions/widgets/#cat-{added.pk}")


def test_a_boosted_request_gets_the_whole_page(client, alice, constitution):
    client.force_login(alice)
    response = client.get(
        reverse("constitutions:detail", args=["widgets"]) + "?fragment=audit",
        HTTP_HX_BOOSTED="true",
        **HX,
    )
    assert b"<html" in response.content


def test_an_htmx_fragment_request_gets_only_that_fragment(client, alice, constitution):
    client.force_login(alice)
    response = client.get(
        reverse("constitutions:detail", args=["widgets"]) + "?fragment=publish_panel",
        **HX,
    )
    html = response.content.decode()
    assert "<html" not in html and html.strip().startswith(
        '<section id="publish-panel"'
    )


def test_invalid_categories_are_refused_with_inline_messages(
    client, alice, constitution
):
    client.force_login(alice)
    data = new_category_post(
        name="widget safety", description="", example_queries="only one"
    )
    response = client.post(
        reverse("constitutions:category_add", args=["widgets"]), data, **HX
    )
    html = response.content.decode()
    assert "Another category is already called" in html
    assert "Description is required." in html
    assert "at least 2 example queries" in html
    assert constitution.categories.count() == 2


def test_the_validate_endpoint_returns_out_of_band_messages_per_field(
    client, alice, constitution
):
    client.force_login(alice)
    response = client.post(
        reverse("constitutions:validate", args=["widgets"]),
        {**new_category_post(name="", example_queries="one"), "prefix": "new"},
        **HX,
    )
    html = response.content.decode()
    assert 'id="new-name-errors"' in html and "Name is required." in html
    assert (
        'id="new-description-errors" class="errorlist live" hx-swap-oob="true"></ul>'
        in html
    )
    assert "at least 2 example queries" in html


def test_alice_edits_a_category_and_the_change_is_audited_with_its_fields(
    client, alice, constitution
):
    client.force_login(alice)
    category = constitution.categories.get(name="Forbidden widgets")
    url = reverse("constitutions:category_edit", args=["widgets", category.pk])
    response = client.post(url, category_post(category, description="New text."), **HX)
    assert response.status_code == 200
    assert b"New text." in response.content and b"<html" not in response.content
    category.refresh_from_db()
    assert category.description == "New text." and category.revision == 1
    assert category.updated_by == alice
    event = AuditEvent.objects.get(action="edit_category")
    assert event.user == alice and event.detail["fields"] == ["description"]


def test_autosave_saves_and_reports_the_time_and_new_revision(
    client, alice, constitution
):
    client.force_login(alice)
    category = constitution.categories.first()
    url = reverse("constitutions:category_autosave", args=["widgets", category.pk])
    response = client.post(url, category_post(category, excludes="Nothing."), **HX)
    html = response.content.decode()
    assert "Saved at " in html
    assert (
        f'name="c{category.pk}-revision" value="1"' in html
        and 'hx-swap-oob="true"' in html
    )
    category.refresh_from_db()
    assert category.excludes == "Nothing."


def test_autosave_does_not_save_invalid_values(client, alice, constitution):
    client.force_login(alice)
    category = constitution.categories.first()
    url = reverse("constitutions:category_autosave", args=["widgets", category.pk])
    response = client.post(url, category_post(category, description=""), **HX)
    assert b"Not saved" in response.content
    category.refresh_from_db()
    assert category.description and category.revision == 0


# --- the edit conflict --------------------------------------------------------------


def test_two_saves_from_the_same_revision_conflict_and_overwrite_with_mine_works(
    client, make_user, alice, constitution
):
    other = make_user("olga", "policy_author")
    category = constitution.categories.get(name="Forbidden widgets")
    url = reverse("constitutions:category_edit", args=["widgets", category.pk])
    client.force_login(other)
    first = client.post(url, category_post(category, description="Olga's text."), **HX)
    assert first.status_code == 200

    client.force_login(alice)
    second = client.post(
        url, category_post(category, description="Alice's text."), **HX
    )
    html = second.content.decode()
    assert second.status_code == 409
    assert "Edit conflict" in html and "olga" in html
    assert "Olga&#x27;s text." in html and "Alice&#x27;s text." in html
    assert "Keep theirs" in html and "Overwrite with mine" in html
    category.refresh_from_db()
    assert category.description == "Olga's text."  # nothing silently overwritten
    # The conflict form carries the current revision: re-submitting overwrites.
    assert f'name="c{category.pk}-revision" value="{category.revision}"' in html

    third = client.post(url, category_post(category, description="Alice's text."), **HX)
    assert third.status_code == 200
    category.refresh_from_db()
    assert category.description == "Alice's text." and category.revision == 2


def test_a_plain_post_conflict_rerenders_the_form_with_both_values(
    client, alice, constitution
):
    client.force_login(alice)
    category = constitution.categories.first()
    Category.objects.filter(pk=category.pk).update(
        description="Changed elsewhere.", revision=5
    )
    url = reverse("constitutions:category_edit", args=["widgets", category.pk])
    response = client.post(url, category_post(category, description="Mine."))
    html = response.content.decode()
    assert response.status_code == 409 and "<html" in html
    assert "Changed elsewhere." in html and "Mine." in html


def test_a_stale_header_save_conflicts(client, alice, constitution):
    client.force_login(alice)
    url = reverse("constitutions:header", args=["widgets"])
    ok = client.post(url, {"name": "Widgets 2", "domain": "d1", "revision": 0}, **HX)
    assert ok.status_code == 200
    stale = client.post(url, {"name": "Widgets 3", "domain": "d2", "revision": 0}, **HX)
    assert stale.status_code == 409
    assert b"Widgets 2" in stale.content and b"Widgets 3" in stale.content
    constitution.refresh_from_db()
    assert constitution.name == "Widgets 2"


def test_resaving_values_identical_to_the_stored_ones_is_not_a_conflict(
    client, alice, constitution
):
    client.force_login(alice)
    category = constitution.categories.first()
    autosave = reverse("constitutions:category_autosave", args=["widgets", category.pk])
    edit = reverse("constitutions:category_edit", args=["widgets", category.pk])
    client.post(autosave, category_post(category, excludes="Same."), **HX)
    # The submit raced the autosave and still carries revision 0.
    response = client.post(edit, category_post(category, excludes="Same."), **HX)
    assert response.status_code == 200


# --- reorder, delete, publish -------------------------------------------------------


def test_moving_a_category_down_swaps_positions_and_focuses_the_moved_button(
    client, alice, constitution
):
    client.force_login(alice)
    first = constitution.categories.get(name="Forbidden widgets")
    url = reverse("constitutions:category_move", args=["widgets", first.pk])
    response = client.post(url, {"direction": "down"}, **HX)
    assert response.status_code == 200
    assert [c.name for c in constitution.categories.all()] == [
        "Widget safety",
        "Forbidden widgets",
    ]
    assert b"autofocus" in response.content
    assert AuditEvent.objects.filter(action="reorder").count() == 1
    # Moving past the end changes nothing.
    client.post(url, {"direction": "down"}, **HX)
    assert [c.name for c in constitution.categories.all()] == [
        "Widget safety",
        "Forbidden widgets",
    ]


def test_deleting_a_category_removes_it_and_is_audited(client, alice, constitution):
    client.force_login(alice)
    category = constitution.categories.get(name="Widget safety")
    url = reverse("constitutions:category_delete", args=["widgets", category.pk])
    response = client.post(url, {"revision": category.revision}, **HX)
    assert response.status_code == 200 and b"Widget safety" not in response.content
    assert not Category.objects.filter(pk=category.pk).exists()
    assert AuditEvent.objects.get(action="delete_category").detail["values"][
        "name"
    ] == ("Widget safety")


def test_deleting_from_a_stale_revision_is_a_conflict(client, alice, constitution):
    client.force_login(alice)
    category = constitution.categories.first()
    Category.objects.filter(pk=category.pk).update(revision=3)
    url = reverse("constitutions:category_delete", args=["widgets", category.pk])
    response = client.post(url, {"revision": 0}, **HX)
    assert response.status_code == 409
    assert Category.objects.filter(pk=category.pk).exists()


def test_publishing_freezes_a_numbered_version_with_hash_note_and_author(
    client, alice, constitution
):
    client.force_login(alice)
    url = reverse("constitutions:publish", args=["widgets"])
    response = client.post(url, {"note": "first cut"})
    assert response.status_code == 302
    version = ConstitutionVersion.objects.get(constitution=constitution)
    assert (version.number, version.note, version.published_by) == (
        1,
        "first cut",
        alice,
    )
    assert version.content == constitution.draft_content()
    history = client.get(
        reverse("constitutions:history", args=["widgets"])
    ).content.decode()
    assert (
        "first cut" in history
        and version.content_hash[:12] in history
        and "alice" in history
    )
    # An unchanged draft is not published again.
    client.post(url, {"note": "again"})
    assert ConstitutionVersion.objects.count() == 1


def test_a_note_over_the_limit_is_refused_and_nothing_is_published(
    client, alice, constitution
):
    client.force_login(alice)
    url = reverse("constitutions:publish", args=["widgets"])
    response = client.post(url, {"note": "x" * 1_000_000})
    assert response.status_code == 400
    assert "at most 2000 characters" in response.content.decode()
    assert not ConstitutionVersion.objects.exists()


def test_a_draft_without_a_permitted_category_cannot_be_published_and_says_why(
    client, alice
):
    constitution = ConstitutionFactory(slug="half")
    CategoryFactory(constitution=constitution)
    client.force_login(alice)
    page = client.get(reverse("constitutions:detail", args=["half"])).content.decode()
    assert "Add at least one permitted category." in page
    assert 'id="publish-button" disabled' in page
    client.post(reverse("constitutions:publish", args=["half"]), {})
    assert not ConstitutionVersion.objects.exists()


def test_the_page_shows_the_latest_20_audit_events_and_links_the_full_trail(
    client, alice, constitution
):
    client.force_login(alice)
    category = constitution.categories.first()
    url = reverse("constitutions:category_edit", args=["widgets", category.pk])
    for i in range(25):
        category.refresh_from_db()
        client.post(url, category_post(category, excludes=f"edit number {i}."), **HX)
    page = client.get(
        reverse("constitutions:detail", args=["widgets"])
    ).content.decode()
    assert "edited &#x27;Forbidden widgets&#x27;: excludes" in page
    assert page.count('<span class="action">edit_category</span>') == 20
    full = client.get(reverse("constitutions:audit", args=["widgets"])).content.decode()
    assert full.count('<span class="action">edit_category</span>') == 25


def test_the_diff_view_highlights_insertions_and_deletions(client, alice, constitution):
    client.force_login(alice)
    client.post(reverse("constitutions:publish", args=["widgets"]), {})
    category = constitution.categories.get(name="Widget safety")
    Category.objects.filter(pk=category.pk).update(
        description="Safe questions about gadgets."
    )
    client.post(reverse("constitutions:publish", args=["widgets"]), {})
    html = client.get(
        reverse("constitutions:diff", args=["widgets"]) + "?a=1&b=2"
    ).content.decode()
    assert "<del>widgets</del>" in html and "<ins>gadgets</ins>" in html
    draft = client.get(reverse("constitutions:diff", args=["widgets"])).content.decode()
    assert "No differences." in draft  # draft vs latest, right after publishing
