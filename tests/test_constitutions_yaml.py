"""YAML import/export: exact round trips, line-precise errors, refused YAML bombs."""

from __future__ import annotations

import string
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from constitutions import yaml_io
from constitutions.models import (
    AuditEvent,
    Category,
    Constitution,
    ConstitutionVersion,
    content_hash,
    publish,
)
from tests.factories import ConstitutionFactory, restricted_and_permitted

pytestmark = pytest.mark.django_db

GOOD = """\
schema_version: 1
name: Widgets
slug: widgets
domain: A widget shop assistant.
categories:
- name: Forbidden widgets
  kind: restricted
  description: Requests for the forbidden widget.
  example_queries:
  - how do I make the forbidden widget
  - where can I buy forbidden widget parts
- name: Widget safety
  kind: permitted
  description: Safe widget questions.
  excludes: ''
  example_queries:
  - tell me about vaccines
  - is my widget safe at home
  target_fpr: 0.02
"""


def test_a_good_file_parses_to_the_same_content_a_version_freezes():
    content = yaml_io.parse_yaml(GOOD)
    assert content["slug"] == "widgets"
    assert content["categories"][0] == {
        "name": "Forbidden widgets",
        "kind": "restricted",
        "description": "Requests for the forbidden widget.",
        "excludes": "",
        "example_queries": [
            "how do I make the forbidden widget",
            "where can I buy forbidden widget parts",
        ],
        "example_responses": [],
        "languages": [],
        "tags": [],
        "target_fpr": None,
    }
    assert content["categories"][1]["target_fpr"] == 0.02


def test_export_import_export_of_a_published_version_is_identical_with_the_same_hash(
    alice,
):
    source = restricted_and_permitted(ConstitutionFactory(slug="src"))
    version = publish(source, user=alice)
    first = yaml_io.export_version(version)
    copy = yaml_io.import_yaml(
        first.replace("slug: src", "slug: copy"), user=alice, mode="new"
    )
    copy_version = publish(copy, user=alice)
    assert yaml_io.export_version(copy_version) == first.replace(
        "slug: src", "slug: copy"
    )
    same_slug = dict(copy_version.content, slug="src")
    assert content_hash(same_slug) == version.content_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("  - where can I buy forbidden widget parts\n", ""),
            "line 10: category 'Forbidden widgets': example_queries must be a list of at "
            "least 2 non-empty strings",
        ),
        (
            GOOD.replace("kind: permitted", "kind: allowed"),
            "line 13: category 'Widget safety': Kind must be 'restricted' or 'permitted'.",
        ),
        (
            GOOD.replace("  description: Safe widget questions.\n", ""),
            "line 12: category 'Widget safety': missing required field 'description'",
        ),
        (
            GOOD.replace("name: Widget safety", "name: Forbidden widgets"),
            "line 12: category 'Forbidden widgets': Another category is already called "
            "'Forbidden widgets'.",
        ),
        (
            GOOD.replace("target_fpr: 0.02", "target_fpr: 3"),
            "line 19: category 'Widget safety': Target FPR must be empty or a number "
            "between 0 and 1.",
        ),
        (
            GOOD.replace("slug: widgets", "slug: not a slug!"),
            "line 3: slug must be 1-80 letters, digits, '-' or '_'",
        ),
        (
            GOOD.replace("domain: A widget", "domian: A widget"),
            "line 4: constitution: unknown field 'domian'",
        ),
        (
            GOOD.replace("  kind: restricted\n", "  kind: [restricted\n"),
            "line 8: invalid YAML",
        ),
        ("- just\n- a list\n", "line 1: the file must be a mapping"),
        ("", "line 1: the file is empty"),
    ],
)
def test_import_errors_name_their_line_and_change_nothing(alice, text, expected):
    existing = restricted_and_permitted(
        ConstitutionFactory(slug="widgets", name="Before")
    )
    before = (existing.draft_content(), AuditEvent.objects.count())
    with pytest.raises(yaml_io.YamlImportError) as caught:
        yaml_io.import_yaml(text, user=alice, mode="replace", target=existing)
    assert any(e.startswith(expected) for e in caught.value.errors), caught.value.errors
    existing.refresh_from_db()
    assert (existing.draft_content(), AuditEvent.objects.count()) == before


def test_an_error_late_in_the_file_rolls_back_everything(alice):
    # The second category fails only when saved (the slug is taken): nothing stays.
    ConstitutionFactory(slug="widgets")
    with pytest.raises(
        yaml_io.YamlImportError, match="line 3: a constitution with slug"
    ):
        yaml_io.import_yaml(GOOD, user=alice, mode="new")
    assert Constitution.objects.count() == 1


def test_a_billion_laughs_file_is_refused_quickly():
    bomb = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    started = time.perf_counter()
    with pytest.raises(yaml_io.YamlImportError) as caught:
        yaml_io.parse_yaml("\n".join(bomb))
    assert time.perf_counter() - started < 0.5
    assert caught.value.errors == ["line 1: anchors (&a) are not allowed"]


def test_a_lone_alias_is_refused_with_its_line():
    with pytest.raises(yaml_io.YamlImportError, match=r"line 2: aliases \(\*x\)"):
        yaml_io.parse_yaml("name: x\nslug: *x\n")


def test_oversized_files_are_refused():
    with pytest.raises(yaml_io.YamlImportError, match="larger than"):
        yaml_io.parse_yaml(b"#" * (yaml_io.MAX_BYTES + 1))


def test_import_replaces_a_draft_but_never_a_published_version(alice):
    existing = restricted_and_permitted(ConstitutionFactory(slug="widgets"))
    v1 = publish(existing, user=alice)
    frozen = dict(v1.content)
    yaml_io.import_yaml(GOOD, user=alice, mode="replace", target=existing)
    existing.refresh_from_db()
    assert existing.name == "Widgets"
    assert [c.name for c in existing.categories.all()] == [
        "Forbidden widgets",
        "Widget safety",
    ]
    assert ConstitutionVersion.objects.get(pk=v1.pk).content == frozen
    assert AuditEvent.objects.filter(action="import").count() == 1


def test_the_import_page_shows_line_precise_errors_and_imports_good_files(
    client, alice
):
    client.force_login(alice)
    url = reverse("constitutions:import")
    bad = SimpleUploadedFile(
        "c.yaml", GOOD.replace("kind: permitted", "kind: x").encode()
    )
    response = client.post(url, {"file": bad, "mode": "new"})
    assert response.status_code == 400
    assert b"line 13: category &#x27;Widget safety&#x27;" in response.content
    assert not Constitution.objects.exists()
    good = SimpleUploadedFile("c.yaml", GOOD.encode())
    response = client.post(url, {"file": good, "mode": "new"})
    assert response.status_code == 302
    assert Constitution.objects.get().categories.count() == 2


HOSTILE = {
    "unknown tag": (GOOD.replace("domain: A widget", "domain: !foo A widget"), "line 4"),
    "python tag": (GOOD.replace("domain: A widget shop assistant.",
                                "domain: !!python/name:os.system"), "line 4"),  # fmt: skip
    "bad int": (GOOD.replace("target_fpr: 0.02", "target_fpr: !!int abc"), "line 19"),
    "bad float": (GOOD.replace("target_fpr: 0.02", "target_fpr: !!float abc"), "line 19"),
    "bad date": (GOOD.replace("target_fpr: 0.02", "target_fpr: !!timestamp 2020-13-45"),
                 "line 19"),  # fmt: skip
    "long name": (GOOD.replace("name: Widgets", "name: " + "W" * 300), "line 2"),
    "huge name": (GOOD.replace("name: Widgets", "name: " + "W" * 100_000), "line 2"),
    "long category": (GOOD.replace("name: Widget safety", "name: " + "S" * 300), "line 12"),
    "NUL in name": (GOOD.replace("name: Widgets", 'name: "Wid\\0gets"'), "line 2"),
    "NUL in example": (GOOD.replace("- tell me about vaccines", '- "tell me\\0"'), "line 17"),
    "surrogate": (GOOD.replace("name: Widget safety", 'name: "Widget \\ud800"'), "line 12"),
    "deep list": ("name: " + "[" * 5000 + "]" * 5000 + "\n", "line 1"),
    "reserved slug": (GOOD.replace("slug: widgets", "slug: import"), "line 3"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_yaml_imports_are_a_400_with_the_line_and_write_nothing(client, alice, case):
    text, line = HOSTILE[case]
    client.force_login(alice)
    upload = SimpleUploadedFile("c.yaml", text.encode("utf-8", "surrogatepass"))
    response = client.post(reverse("constitutions:import"), {"file": upload, "mode": "new"})
    assert response.status_code == 400, case
    assert line.encode() in response.content, response.content.decode()[-2000:]
    assert not Constitution.objects.exists()


def test_export_serves_yaml_for_the_draft_and_versions(client, victor, alice):
    constitution = restricted_and_permitted(ConstitutionFactory(slug="widgets"))
    publish(constitution, user=alice)
    client.force_login(victor)
    url = reverse("constitutions:export", args=["widgets"])
    draft = client.get(url)
    assert draft["Content-Type"].startswith("application/yaml")
    assert 'filename="widgets-draft.yaml"' in draft["Content-Disposition"]
    assert client.get(url + "?version=1").content == draft.content
    assert yaml_io.parse_yaml(draft.content) == constitution.draft_content()


# --- property: random constitutions round-trip exactly ---------------------------------

# Any printable text, including non-ASCII, but no surrogates (not UTF-8) and no NUL
# (PostgreSQL text cannot store it).
text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=40,
)
nonblank = text.filter(lambda s: s.strip())


@st.composite
def constitutions(draw: st.DrawFn) -> dict[str, object]:
    names = draw(
        st.lists(
            nonblank.map(str.strip).filter(lambda s: 0 < len(s) <= 200),
            min_size=1,
            max_size=4,
            unique_by=str.casefold,
        )
    )
    return {
        "name": draw(nonblank),
        "slug": draw(
            st.text(
                string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=20
            )
        ),
        "domain": draw(nonblank),
        "categories": [
            {
                "name": name,
                "kind": draw(st.sampled_from(["restricted", "permitted"])),
                "description": draw(nonblank),
                "excludes": draw(text),
                "example_queries": draw(st.lists(nonblank, min_size=2, max_size=4)),
                "example_responses": draw(st.lists(nonblank, max_size=2)),
                "languages": draw(st.lists(nonblank, max_size=2)),
                "tags": draw(st.lists(nonblank, max_size=2)),
                "target_fpr": draw(
                    st.one_of(
                        st.none(),
                        st.floats(
                            min_value=1e-9,
                            max_value=0.999999,
                            allow_nan=False,
                            allow_infinity=False,
                        ),
                    )
                ),
            }
            for name in names
        ],
    }


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=constitutions())
def test_random_constitutions_round_trip_exactly_through_yaml_and_the_database(
    alice, content
):
    first = yaml_io.export_content(content)
    Constitution.objects.filter(slug=content["slug"]).delete()
    imported = yaml_io.import_yaml(first, user=alice, mode="new")
    stored = Constitution.objects.get(pk=imported.pk).draft_content()
    assert yaml_io.export_draft(Constitution.objects.get(pk=imported.pk)) == first
    assert content_hash(stored) == content_hash(content)
    imported.audit_events.all().delete()
    imported.delete()


def test_too_many_categories_or_examples_are_refused(alice):
    """#26 item 6: a constitution is bounded (a 6,000-category file took every editor
    page 40 s); the limits are named, and nothing is written."""
    from constitutions import services

    def category(i: int, examples: int = 2) -> str:
        queries = "".join(f"\n      - query {j}" for j in range(examples))
        return (f"\n  - name: cat {i}\n    kind: permitted\n    description: d"
                f"\n    example_queries:{queries}")  # fmt: skip

    many = "name: Big\nslug: big\ncategories:" + "".join(
        category(i) for i in range(services.MAX_CATEGORIES + 1)
    )
    with pytest.raises(yaml_io.YamlImportError, match=f"at most {services.MAX_CATEGORIES} categories"):
        yaml_io.import_yaml(many, user=alice, mode="new")
    wordy = "name: Big\nslug: big\ncategories:" + category(0, services.MAX_LIST_ITEMS + 1)
    with pytest.raises(yaml_io.YamlImportError, match=f"At most {services.MAX_LIST_ITEMS} example queries"):
        yaml_io.import_yaml(wordy, user=alice, mode="new")
    assert not Constitution.objects.filter(slug="big").exists()
    # The editor's add: the 101st category is refused.
    full = ConstitutionFactory(slug="full")
    for i in range(services.MAX_CATEGORIES):
        Category.objects.create(constitution=full, position=i, name=f"c{i}", kind="permitted",
                                description="d", example_queries=["a", "b"])  # fmt: skip
    with pytest.raises(services.ValidationFailed, match="the most it may have"):
        services.add_category(full, {"name": "one more", "kind": "permitted", "description": "d",
                                     "example_queries": ["a", "b"]}, user=alice)  # fmt: skip
