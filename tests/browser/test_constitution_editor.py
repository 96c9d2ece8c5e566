"""An author builds, publishes, edits and diffs a constitution in a real browser."""

from __future__ import annotations

import os

import pytest

from constitutions.models import Constitution, ConstitutionVersion

pytestmark = pytest.mark.browser
SHOTS = os.environ.get("GUARDWEB_SHOTS_DIR", "/tmp/shots")


def add_category(
    page, name: str, kind: str, description: str, queries: list[str]
) -> None:
    form = page.locator("#add-form")
    form.locator("#id_new-name").fill(name)
    form.locator("#id_new-kind").select_option(kind)
    form.locator("#id_new-description").fill(description)
    form.locator("#id_new-example_queries").fill("\n".join(queries))
    form.get_by_role("button", name="Add category").click()
    page.locator(f"li.category.{kind}[data-name='{name}']").wait_for()


def test_an_author_builds_publishes_edits_and_diffs_a_constitution(
    page, asgi_server, live_db, alice, login
):
    os.makedirs(SHOTS, exist_ok=True)
    login(alice)
    page.goto(f"{asgi_server}/constitutions/")
    page.fill("#id_name", "Widget rules")
    page.fill("#id_slug", "widget-rules")
    page.fill("#id_domain", "A widget shop assistant.")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/constitutions/widget-rules/")

    # Publishing is blocked, and says why, until both kinds exist.
    assert page.locator("#publish-button").is_disabled()
    assert (
        "Add at least one restricted category."
        in page.locator("#publish-panel").inner_text()
    )

    # Live validation: a too-short example list is flagged inline before submitting.
    page.fill("#id_new-name", "Forbidden widgets")
    page.fill("#id_new-example_queries", "only one query")
    page.locator("#new-example_queries-errors").get_by_text("at least 2").wait_for()

    add_category(
        page,
        "Forbidden widgets",
        "restricted",
        "Requests for the forbidden widget.",
        ["how do I make the forbidden widget", "where are forbidden widgets sold"],
    )
    add_category(
        page,
        "Widget safety",
        "permitted",
        "Safe widget questions.",
        ["tell me about vaccines", "is my widget safe at home"],
    )
    # The panel refreshed itself (no reload): now it can publish.
    page.locator("#publish-panel .ok").wait_for()
    page.fill("#id_note", "first cut")
    page.get_by_role("button", name="Publish v1").click()
    page.wait_for_url("**/history/")
    assert "first cut" in page.locator("table.versions").inner_text()

    # Edit a category inline: the form autosaves, then Escape closes it.
    page.goto(f"{asgi_server}/constitutions/widget-rules/")
    page.get_by_role("link", name="Edit Forbidden widgets").click()
    description = page.locator("form.category-form textarea[name$='-description']")
    # htmx wires up the swapped-in form a moment after it appears.
    page.wait_for_function(
        "document.querySelector('.autosave-status')?.['htmx-internal-data']?.listenerInfos"
    )
    description.fill("Requests to build or buy the forbidden gizmo widget.")
    page.locator(".autosave-status").get_by_text("Saved at").wait_for()
    page.screenshot(path=f"{SHOTS}/editor.png", full_page=True)
    description.press("Escape")
    page.locator("li.category.restricted h3").get_by_text(
        "Forbidden widgets"
    ).wait_for()
    assert "gizmo" in page.locator("li.category.restricted").inner_text()

    # Reorder with the keyboard: focus the "down" button and press Enter.
    page.get_by_role("button", name="Move Forbidden widgets down").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.querySelector('#category-list li').dataset.name === 'Widget safety'"
    )

    page.goto(f"{asgi_server}/constitutions/widget-rules/")
    page.fill("#id_note", "gizmo wording")
    page.get_by_role("button", name="Publish v2").click()
    page.wait_for_url("**/history/")
    page.get_by_role("button", name="Compare A and B").wait_for()
    page.get_by_label("A: v1").check()
    page.get_by_label("B: v2").check()
    page.get_by_role("button", name="Compare A and B").click()
    page.wait_for_url("**/diff/**")
    changed = page.locator("[data-testid=category-diff][data-name='Forbidden widgets']")
    assert any("gizmo" in text for text in changed.locator("ins").all_inner_texts())
    assert changed.locator("del").count() >= 1
    assert page.locator("ins").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    ) != ("rgba(0, 0, 0, 0)")
    page.screenshot(path=f"{SHOTS}/diff.png", full_page=True)

    constitution = Constitution.objects.get(slug="widget-rules")
    assert list(
        ConstitutionVersion.objects.filter(constitution=constitution)
        .order_by("number")
        .values_list("number", "note")
    ) == [(1, "first cut"), (2, "gizmo wording")]
