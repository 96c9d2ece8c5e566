"""Alice starts a dataset build in the browser and watches it finish live."""

from __future__ import annotations

import pytest

from classifiers.datasets import generators
from classifiers.models import Dataset
from tests.datasets_helpers import FakeGenerator
from tests.factories import SHOP, published_constitution

pytestmark = pytest.mark.browser


def test_alice_starts_a_run_watches_it_finish_live_and_filters_examples(
    page, asgi_server, live_db, celery_worker, alice, login, monkeypatch
):  # type: ignore[no-untyped-def]
    # The worker thread shares this process: a slowed-down fake generator makes the
    # progress visible without the cost of the real model (tested elsewhere).
    monkeypatch.setattr(generators, "local_generator", lambda: FakeGenerator(delay=1.0))
    published_constitution(user=alice, categories=SHOP)
    frames: list[str] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))),
    )
    errors: list[str] = []  # uncaught script errors (a mis-ordered htmx extension)
    page.on("pageerror", lambda err: errors.append(str(err)))
    login(alice)
    page.goto(f"{asgi_server}/classifiers/datasets/new/")
    page.fill("#id_per_category", "12")
    page.check("input[name=transforms][value=base64]")
    page.check("input[name=transforms][value=roleplay_wrapper]")
    page.check("input[name=heldout_families][value=encoding]")
    page.screenshot(path="/tmp/shots/datasets-form.png", full_page=True)
    page.click("[data-testid=start]")
    page.wait_for_url("**/classifiers/datasets/*/")
    dataset = Dataset.objects.get()
    progress = f"#job-progress-dataset-{dataset.pk}"
    page.wait_for_selector(f"{progress}[data-status=running]", timeout=30_000)
    page.screenshot(path="/tmp/shots/datasets-running.png", full_page=True)
    page.wait_for_selector(f"{progress}[data-status=done]", timeout=60_000)
    # The live updates came over the websocket (the 2 s poll is only a fallback).
    assert any('data-status="running"' in f for f in frames), (frames, errors)
    assert any('data-status="done"' in f for f in frames)
    page.wait_for_selector("[data-testid=category-chart]")  # the page reloaded
    page.screenshot(path="/tmp/shots/datasets-done.png", full_page=True)

    total = dataset.examples.count()
    harmful = dataset.examples.filter(label=1).count()
    assert 0 < harmful < total
    page.select_option("select[name=label]", "1")
    page.wait_for_function(
        "n => document.querySelector('#examples p').textContent.trim()"
        ".startsWith(n + ' matching')",
        arg=str(harmful),
    )
    labels = page.locator("#examples tr.example-row").evaluate_all(
        "rows => rows.map(r => r.dataset.label)"
    )
    assert labels and set(labels) == {"1"}
    assert "label=1" in page.url  # filters are in the address bar
    page.locator("#examples tr.example-row a").first.click()
    page.wait_for_selector("#conversation [data-testid=full-conversation]")
    assert "label 1" in page.locator("#conversation").inner_text()
    page.screenshot(path="/tmp/shots/datasets-browser.png", full_page=True)
    assert not errors


def test_alice_combines_two_datasets_from_the_list(
    page, asgi_server, live_db, alice, login
):  # type: ignore[no-untyped-def]
    from tests.factories import published_constitution
    from tests.test_combine_datasets import make_second_run
    from tests.test_label_audit import make_generated_dataset

    version = published_constitution(user=alice)
    first, second = make_generated_dataset(version), make_second_run(version)
    other = make_second_run(published_constitution("fences", user=alice))
    login(alice)
    page.goto(f"{asgi_server}/classifiers/datasets/")
    # Two constitutions' datasets: a clear refusal that keeps the ticks.
    page.check(f"[data-testid=combine-{first.pk}]")
    page.check(f"[data-testid=combine-{other.pk}]")
    page.click("[data-testid=combine]")
    page.wait_for_selector("[data-testid=combine-error]")
    assert "different constitution versions" in page.inner_text("[data-testid=combine-error]")
    assert page.is_checked(f"[data-testid=combine-{other.pk}]")
    assert Dataset.objects.count() == 3

    page.uncheck(f"[data-testid=combine-{other.pk}]")
    page.check(f"[data-testid=combine-{second.pk}]")
    page.click("[data-testid=combine]")
    page.wait_for_selector("[data-testid=combined-from]")
    combined = Dataset.objects.latest("pk")
    assert page.url.endswith(f"/classifiers/datasets/{combined.pk}/")
    card = page.inner_text("[data-testid=combined-from]")
    assert f"dataset #{first.pk}" in card and f"dataset #{second.pk}" in card
    assert "3 source queries repeating an earlier part's were left out" in card
    page.screenshot(path="/tmp/shots/datasets-combined.png", full_page=True)
