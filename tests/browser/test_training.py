"""The model page in a real browser: charts render, activation updates the page."""

from __future__ import annotations

import pytest

from tests.factories import published_constitution
from tests.training_helpers import make_dataset, make_model

pytestmark = pytest.mark.browser


def test_the_model_page_draws_the_roc_chart_and_activating_updates_it(
    page, asgi_server, live_db, alice, login
):
    from classifiers.models import ActiveModel, TrainingRun

    dataset = make_dataset(published_constitution(user=alice))
    old = make_model(dataset, "output")
    new = make_model(dataset, "output", seed=1)
    new.activate()
    login(alice)
    page.goto(f"{asgi_server}/classifiers/models/{old.pk}/")
    roc = page.locator("#roc-test")
    roc.wait_for()
    page.wait_for_function("document.getElementById('roc-test').dataset.rendered === 'true'")
    box = roc.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100
    # Chart.js painted something: the canvas is not blank.
    painted = page.evaluate(
        """() => { const c = document.getElementById('roc-test');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 1000
    assert page.locator("#halting-test").is_visible()
    page.screenshot(path="/tmp/shots/training_model_page.png", full_page=True)

    # Two models side by side: the ROC chart keeps its frame's height (a responsive
    # chart in a parent that grew with it once ran to thousands of pixels).
    page.goto(f"{asgi_server}/classifiers/models/compare/?a={old.pk}&b={new.pk}")
    page.wait_for_function("document.getElementById('compare-roc').dataset.rendered === 'true'")
    page.wait_for_timeout(500)
    box = page.locator("#compare-roc").bounding_box()
    assert box and box["width"] > 300 and 200 < box["height"] < 400
    page.screenshot(path="/tmp/shots/training_compare_page.png", full_page=True)

    page.goto(f"{asgi_server}/classifiers/models/{old.pk}/")
    page.click("[data-testid=activate]")  # a rollback to the older model
    page.locator("[data-testid=active-badge]").wait_for()
    assert ActiveModel.objects.get(kind="output").model_version == old
    page.screenshot(path="/tmp/shots/training_model_activated.png")

    # The live run page draws its curves from the history JSON.
    run = TrainingRun.objects.create(
        dataset=dataset, status="done", config={"input_mode": "fast"},
        history={"input": [{"step": s, "loss": 1.0 / s} for s in range(1, 30)]
                 + [{"step": 30, "loss": 0.03, "val_auroc": 0.9, "epoch": 1}],
                 "output": []},
    )  # fmt: skip
    page.goto(f"{asgi_server}/classifiers/training/{run.pk}/")
    page.wait_for_function("document.getElementById('history-input').dataset.rendered === 'true'")
    assert page.locator(".badge.status.done").first.is_visible()
    page.screenshot(path="/tmp/shots/training_run_page.png", full_page=True)
