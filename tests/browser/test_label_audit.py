"""Alice audits a dataset's labels in the browser; Bob flips the planted error in
place (htmx); Alice applies the decisions and lands on the new dataset."""

from __future__ import annotations

import pytest

from classifiers.models import LabelAudit
from tests.factories import published_constitution
from tests.test_label_audit import PLANTED, PLANTED_ID, make_generated_dataset

pytestmark = pytest.mark.browser


def test_audit_decide_and_apply_in_the_browser(
    page, asgi_server, live_db, celery_worker, alice, bob, login
):  # type: ignore[no-untyped-def]
    dataset = make_generated_dataset(published_constitution(user=alice))
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    login(alice)
    page.goto(f"{asgi_server}/classifiers/datasets/{dataset.pk}/")
    page.fill("#id_folds", "4")
    page.fill("#id_spot_check", "3")
    page.click("[data-testid=audit-start] button[type=submit]")
    page.wait_for_url("**/classifiers/audits/*/")
    audit = LabelAudit.objects.get()
    # The page reloads itself when the worker finishes, showing the queue.
    page.wait_for_selector("[data-testid=audit-summary]", timeout=90_000)
    page.screenshot(path="/tmp/shots/audit-queue.png", full_page=True)
    row = page.locator(f"[data-testid=audit-item][data-source={PLANTED_ID}]")
    assert PLANTED in row.inner_text()

    page.context.clear_cookies()
    login(bob)
    page.goto(f"{asgi_server}/classifiers/audits/{audit.pk}/")
    row = page.locator(f"[data-testid=audit-item][data-source={PLANTED_ID}]")
    assert row.locator("select[name=new_category]").input_value() == "garden care"
    # Keyboard triage: j selects the first row (the least confident suspect), 2 flips.
    assert (
        page.locator("tr.audit-item").first.get_attribute("data-source") == PLANTED_ID
    )
    page.keyboard.press("j")
    page.keyboard.press("2")
    # Swapped in place: the row now says what was decided, without a reload, and the
    # selection moved on to the next row.
    page.wait_for_selector(
        f"[data-testid=audit-item][data-source={PLANTED_ID}][data-decision=flip]"
    )
    page.wait_for_selector("tr.audit-item.selected:nth-child(2)")
    assert (
        "garden care"
        in page.locator(f"[data-source={PLANTED_ID}] .decided").inner_text()
    )
    assert page.locator("[data-testid=apply]").count() == 0  # reviewers do not apply
    page.screenshot(path="/tmp/shots/audit-decided.png", full_page=True)

    page.context.clear_cookies()
    login(alice)
    page.goto(f"{asgi_server}/classifiers/audits/{audit.pk}/")
    page.click("[data-testid=apply] button")
    page.wait_for_selector("[data-testid=audited-from]")
    audit.refresh_from_db()
    assert page.url.endswith(f"/classifiers/datasets/{audit.applied_dataset_id}/")
    assert set(
        audit.applied_dataset.examples.filter(source_id=PLANTED_ID).values_list(
            "label", flat=True
        )
    ) == {0}
    page.screenshot(path="/tmp/shots/audit-applied.png", full_page=True)
    assert not errors, errors


def test_a_reviewer_reads_the_learned_order_likely_errors_first(
    page, asgi_server, live_db, alice, bob, login
):  # type: ignore[no-untyped-def]
    from tests.test_label_audit import decide_first, make_habit_audit

    audit = make_habit_audit(alice)
    decide_first(audit, bob, 10)
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    login(bob)
    page.goto(f"{asgi_server}/classifiers/audits/{audit.pk}/")
    assert page.locator("text=Likely wrong first").count() == 0  # nothing learned yet
    page.click("[data-testid=learn] button")
    page.wait_for_url("**/classifiers/audits/*/?show=likely")
    assert float(page.locator("[data-testid=learned-auroc]").inner_text()) > 0.9
    rows = page.locator("tr.audit-item")
    first_ten = [rows.nth(i).get_attribute("data-source") for i in range(10)]
    assert all(int(source[-2:]) % 2 for source in first_ten), first_ten
    assert "P(wrong)" in rows.first.inner_text()
    page.screenshot(path="/tmp/shots/audit-learned-order.png", full_page=True)
    # Keyboard triage in the learned order: j selects the top row, 3 drops it.
    page.keyboard.press("j")
    page.keyboard.press("3")
    page.wait_for_selector(
        f"[data-testid=audit-item][data-source={first_ten[0]}][data-decision=drop]"
    )
    assert audit.items.get(source_id=first_ten[0]).decision == "drop"
    # The error rate still rests on the 10 decided in the queue's random order.
    page.goto(f"{asgi_server}/classifiers/audits/{audit.pk}/?show=decided")
    assert page.locator("[data-testid=sample-size]").inner_text() == "10"
    assert not errors, errors
