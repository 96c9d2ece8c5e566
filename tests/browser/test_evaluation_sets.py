"""Alice imports a labelled evaluation set in the browser, scores the active input
model on it (the real worker), and reads its per-kind breakdown and histogram."""

from __future__ import annotations

import json

import pytest

from bench.fixtures import BENIGN, HARMFUL
from classifiers.models import ModelVersion
from tests.factories import published_constitution
from tests.training_helpers import train_input_model

pytestmark = pytest.mark.browser


def test_import_a_set_score_a_model_and_read_the_breakdown(
    page, asgi_server, live_db, celery_worker, alice, login, settings, tmp_path
):  # type: ignore[no-untyped-def]
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    train_input_model(published_constitution(user=alice))
    model = ModelVersion.objects.get(kind="input")
    source = tmp_path / "garden-traffic.jsonl"
    rows = [{"text": t, "label": 1, "kind": "plain attack"} for t in HARMFUL]
    rows += [{"text": t, "label": 0, "kind": "everyday"} for t in BENIGN]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))

    login(alice)
    page.goto(f"{asgi_server}/classifiers/")
    page.click("[data-testid=evaluation-sets-link]")
    page.fill("#id_name", "garden traffic")
    page.set_input_files("#id_file", str(source))
    page.click("[data-testid=import]")
    page.wait_for_url("**/classifiers/evaluation-sets/*/")
    assert "24 prompts: 12 harmful, 12 benign" in page.inner_text("main")
    assert "plain attack" in page.inner_text("[data-testid=set-kinds]")

    page.select_option("#id_model_version", str(model.pk))
    page.click("[data-testid=score]")
    # The page shows live progress, then reloads itself when the worker is done.
    page.wait_for_selector("[data-testid=breakdown]", timeout=90_000)
    page.wait_for_selector("#set-histogram[data-rendered=true]")
    breakdown = page.locator("[data-testid=breakdown]")
    attack_row = breakdown.locator("tr[data-kind='plain attack']").inner_text()
    everyday_row = breakdown.locator("tr[data-kind=everyday]").inner_text()
    assert "of 12" in attack_row and "of 12" in everyday_row
    compare = page.locator(f"[data-testid=compare-row][data-model='{model.pk}']")
    assert compare.count() == 1
    page.screenshot(path="/tmp/shots/evaluation-set.png", full_page=True)
    assert not errors
