"""Model rules, validation, race-free saves and the diff, below the views."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from constitutions import services
from constitutions.diff import diff_contents, list_segments, text_segments
from constitutions.forms import ConstitutionCreateForm
from constitutions.models import ConstitutionVersion, ImmutableError
from tests.factories import (
    CategoryFactory,
    ConstitutionFactory,
    restricted_and_permitted,
)

VALID = {
    "name": "Forbidden widgets",
    "kind": "restricted",
    "description": "Requests for the forbidden widget.",
    "excludes": "",
    "example_queries": ["how do I make the forbidden widget", "where to buy one"],
    "example_responses": [],
    "languages": [],
    "tags": [],
    "target_fpr": None,
}


def test_a_valid_category_has_no_errors():
    assert services.validate_category(VALID) == {}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"name": "  "}, "name", "Name is required."),
        ({"description": ""}, "description", "Description is required."),
        ({"example_queries": ["one"]}, "example_queries", "at least 2"),
        ({"kind": "maybe"}, "kind", "Kind must be"),
        ({"target_fpr": 1.5}, "target_fpr", "between 0 and 1"),
        ({"target_fpr": float("nan")}, "target_fpr", "between 0 and 1"),
        ({"tags": ["ok", ""]}, "tags", "non-empty strings"),
    ],
)
def test_invalid_categories_name_the_field_and_the_reason(change, field, message):
    errors = services.validate_category({**VALID, **change})
    assert any(message in m for m in errors[field])


def test_duplicate_names_are_refused_case_insensitively():
    errors = services.validate_category(VALID, other_names=["forbidden WIDGETS"])
    assert "already called" in errors["name"][0]


def test_the_slug_import_is_reserved():
    form = ConstitutionCreateForm({"name": "x", "slug": "import", "domain": "d"})
    assert not form.is_valid() and "reserved" in form.errors["slug"][0]


@pytest.mark.django_db
def test_published_versions_never_change_and_the_draft_stays_equal_to_them(alice):
    constitution = restricted_and_permitted()
    version = services.publish_draft(constitution, user=alice, note="n")
    assert version.content == constitution.draft_content()
    assert len(version.content_hash) == 64
    with pytest.raises(ImmutableError):
        version.note = "changed"
        version.save()
    with pytest.raises(ImmutableError):
        version.delete()
    assert ConstitutionVersion.objects.get(pk=version.pk).note == "n"


@pytest.mark.django_db
def test_publish_blockers_explain_what_is_missing():
    constitution = ConstitutionFactory()
    assert services.publish_blockers(constitution) == [
        "Add at least one restricted category.",
        "Add at least one permitted category.",
    ]
    CategoryFactory(constitution=constitution, example_queries=["only one"])
    reasons = services.publish_blockers(constitution)
    assert any("at least 2 example queries" in r for r in reasons)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_saves_from_one_revision_let_exactly_one_win(alice):
    category = CategoryFactory()
    results: list[str] = []
    barrier = threading.Barrier(2)

    def save(text: str) -> None:
        try:
            barrier.wait()
            services.update_category(
                category,
                {**services.category_values(category), "description": text},
                seen_revision=0,
                user=alice,
            )
            results.append("saved")
        except services.Conflict:
            results.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(t,)) for t in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["conflict", "saved"]
    category.refresh_from_db()
    assert category.revision == 1


def test_text_segments_mark_word_insertions_and_deletions():
    segments = text_segments("the red widget", "the blue widget")
    assert [(s.op, s.text) for s in segments] == [
        ("equal", "the "),
        ("delete", "red"),
        ("insert", "blue"),
        ("equal", " widget"),
    ]


def test_list_segments_work_item_by_item():
    ops = [(s.op, s.text) for s in list_segments(["a", "b"], ["a", "c"])]
    assert ops == [("equal", "a\n"), ("delete", "b\n"), ("insert", "c\n")]


def test_diff_contents_reports_added_removed_changed_and_moved_categories():
    def cat(name: str, **extra: object) -> dict[str, object]:
        return {**VALID, "name": name, **extra}

    old = {"name": "W", "domain": "d", "categories": [cat("a"), cat("b"), cat("c")]}
    new = {
        "name": "W2",
        "domain": "d",
        "categories": [cat("c"), cat("a", description="new"), cat("d")],
    }
    diff = diff_contents(old, new)
    statuses = {c.name: c.status for c in diff.categories}
    assert statuses == {"a": "changed", "b": "removed", "c": "moved", "d": "added"}
    assert [f.field for f in diff.header] == ["name"]
    assert diff.summary.startswith("name/domain changed")
    assert not diff_contents(old, old).changed


@pytest.mark.django_db
def test_the_admin_lists_every_model_and_keeps_versions_read_only(admin_client, alice):
    constitution = restricted_and_permitted()
    version = services.publish_draft(constitution, user=alice)
    for path in ["constitution", "category", "constitutionversion", "auditevent"]:
        assert admin_client.get(f"/admin/constitutions/{path}/").status_code == 200
    url = f"/admin/constitutions/constitutionversion/{version.pk}/change/"
    assert admin_client.post(url, {"note": "changed"}).status_code == 403
    assert (
        admin_client.get("/admin/constitutions/constitutionversion/add/").status_code
        == 403
    )
