"""Training and model-registry pages for every role; forbidden POSTs change nothing."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from classifiers.models import ActiveModel, TrainingRun
from tests.factories import published_constitution
from tests.training_helpers import make_dataset, make_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset(alice):
    return make_dataset(published_constitution(user=alice))


@pytest.fixture
def no_enqueue(monkeypatch):
    sent: list[int] = []
    from classifiers.training import tasks as training

    monkeypatch.setattr(training.train_classifier, "delay", sent.append)
    return sent


def _form(**overrides):
    data = {
        "input_mode": "fast", "output_mode": "fast", "input_epochs": 5,
        "output_epochs": 2, "seed": 0, "target_fpr": 0.01,
        "output_loss": "running_max", "probe_layers": "-1",
    }  # fmt: skip
    data.update(overrides)
    return data


def test_alice_starts_a_run_that_is_queued_and_sent_to_the_worker(
    client, alice, dataset, no_enqueue, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    url = reverse("classifiers:training_new", args=[dataset.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            url, _form(activate_when_done="on", probe_layers="6,-1", correction_weight="4")
        )
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert run.status == "queued" and run.activate_when_done
    assert run.config["probe_layers"] == [6, -1] and run.config["target_fpr"] == 0.01
    assert run.config["correction_weight"] == 4.0
    assert no_enqueue == [run.pk]


def test_the_form_says_how_many_training_prompts_have_corrected_labels(client, alice, dataset):
    rows = list(dataset.examples.filter(split="train")[:3])
    rows[0].meta = {"reviewed": {"audit": 1, "decision": "flip", "flipped_from": [1, "x"]}}
    rows[1].meta = {"source": "feedback", "decision": "false_positive"}
    rows[2].meta = {"reviewed": {"audit": 1, "decision": "keep"}}  # kept: not corrected
    for row in rows:
        row.save()
    client.force_login(alice)
    page = client.get(reverse("classifiers:training_new", args=[dataset.pk]))
    assert page.status_code == 200
    assert b"training split has 2 prompts with a corrected label" in page.content


def test_a_bad_form_shows_errors_and_starts_nothing(client, alice, dataset, no_enqueue):
    client.force_login(alice)
    url = reverse("classifiers:training_new", args=[dataset.pk])
    response = client.post(url, _form(target_fpr="2", probe_layers="top"))
    assert response.status_code == 400
    assert b"errorlist" in response.content
    response = client.post(url, _form(probe_layers="top"))
    assert response.status_code == 400 and b"probe_layers" in response.content
    for weight in ("0.5", "nan", "many", "1000"):
        response = client.post(url, _form(correction_weight=weight))
        assert response.status_code == 400 and b"errorlist" in response.content, weight
    assert not TrainingRun.objects.exists() and not no_enqueue


def test_an_unfinished_dataset_cannot_be_trained_on(client, alice, dataset, no_enqueue):
    type(dataset).objects.filter(pk=dataset.pk).update(status="running")
    client.force_login(alice)
    response = client.post(reverse("classifiers:training_new", args=[dataset.pk]), _form())
    assert response.status_code == 400 and b"not done" in response.content
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize("who", ["bob", "victor", "charlie"])
def test_non_authors_get_403_on_every_post_and_nothing_changes(
    client, request, who, dataset, no_enqueue
):
    user = request.getfixturevalue(who)
    model = make_model(dataset)
    run = TrainingRun.objects.create(dataset=dataset, config={}, status="running")
    client.force_login(user)
    posts = [
        reverse("classifiers:training_new", args=[dataset.pk]),
        reverse("classifiers:training_cancel", args=[run.pk]),
        reverse("classifiers:model_activate", args=[model.pk]),
    ]
    for url in posts:
        assert client.post(url, _form()).status_code == 403, url
    run.refresh_from_db()
    assert not run.cancel_requested
    assert TrainingRun.objects.count() == 2  # the run above and the model's own
    assert not ActiveModel.objects.exists()


@pytest.mark.parametrize("who", ["bob", "victor"])
def test_readers_see_every_page(client, request, who, dataset):
    a, b = make_model(dataset), make_model(dataset, seed=1)
    client.force_login(request.getfixturevalue(who))
    pages = [
        reverse("classifiers:models"),
        reverse("classifiers:model", args=[a.pk]),
        reverse("classifiers:training", args=[a.training_run_id]),
        reverse("classifiers:training_new", args=[dataset.pk]),
        reverse("classifiers:model_compare") + f"?a={a.pk}&b={b.pk}",
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"data-testid=\"activate\"" not in response.content


def test_charlie_without_a_role_gets_403_on_reads(client, charlie, dataset):
    model = make_model(dataset)
    client.force_login(charlie)
    for url in (reverse("classifiers:models"), reverse("classifiers:model", args=[model.pk]),
                reverse("classifiers:model_report", args=[model.pk])):
        assert client.get(url).status_code == 403


def test_activation_switches_the_live_model_and_an_older_one_rolls_back(
    client, alice, dataset
):
    old, new = make_model(dataset), make_model(dataset, seed=1)
    client.force_login(alice)
    client.post(reverse("classifiers:model_activate", args=[new.pk]))
    assert ActiveModel.objects.get(kind="input").model_version == new
    page = client.get(reverse("classifiers:model", args=[old.pk])).content.decode()
    assert "Roll back to this model" in page
    response = client.post(
        reverse("classifiers:model_activate", args=[old.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and 'data-testid="active-badge"' in response.content.decode()
    assert "<html" not in response.content.decode()  # the partial only
    assert ActiveModel.objects.get(kind="input").model_version == old
    assert ActiveModel.objects.count() == 1


def test_alice_cancels_a_running_run(client, alice, dataset):
    run = TrainingRun.objects.create(dataset=dataset, config={}, status="running")
    client.force_login(alice)
    response = client.post(reverse("classifiers:training_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.cancel_requested and run.status == "running"  # the worker ends it


def test_the_report_exports_as_json(client, victor, dataset):
    model = make_model(dataset, "output")
    client.force_login(victor)
    response = client.get(reverse("classifiers:model_report", args=[model.pk]))
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    document = json.loads(response.content)
    assert document["model"] == model.pk and document["kind"] == "output"
    assert document["report"]["splits"]["test"]["classifier"]["roc"]["fpr"]
    assert "halting" in document["report"]["splits"]["test"]["classifier"]


def test_the_model_page_carries_chart_data_and_the_registry_lists_metrics(
    client, bob, dataset
):
    model = make_model(dataset, "output")
    model.activate()
    client.force_login(bob)
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    assert 'id="roc-test"' in page and 'id="halting-test"' in page
    assert 'id="model-splits"' in page and "vendor/chart.umd.min.js" in page
    # The target-FPR column only when the target is not the 1% already shown.
    assert "TPR at 1% FPR" in page and "TPR at the target FPR" not in page
    report = model.report
    report["splits"]["test"]["classifier"]["target_fpr"] = 0.05
    model.report = report
    model.save(update_fields=["report"])
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    assert "TPR at the target FPR (0.05)" in page
    listing = client.get(reverse("classifiers:models")).content.decode()
    assert f"#{model.pk}" in listing and "active" in listing
    assert f"{model.metrics['auroc']:.3f}" in listing


def test_the_model_page_shows_each_rate_with_its_interval_and_what_is_too_small(
    client, bob, dataset
):
    from classifiers.ml.eval.calibrate import calibrate_thresholds

    model = make_model(dataset)
    test = model.report["splits"]["test"]["classifier"]
    # A threshold calibrated on 10 benign prompts, as the demo's tiny splits give.
    model.thresholds = calibrate_thresholds(
        [i / 10 for i in range(10)] + [0.95] * 5, [0] * 10 + [1] * 5,
        ["garden care"] * 10 + ["forbidden widgets"] * 5, target_fpr=0.01,
    ).to_dict()  # fmt: skip
    model.save(update_fields=["thresholds"])
    client.force_login(bob)
    page = client.get(reverse("classifiers:model", args=[model.pk])).content.decode()
    low, high = test["tpr_interval"]
    assert f"[{low:.2f}–{high:.2f}]" in page  # the TPR's 95% interval, beside it
    assert 'data-testid="split-warnings"' in page and "10 harmful examples" in page
    assert 'data-testid="calibration-warnings"' in page
    assert "Calibrated on 10 benign prompts (a 1.0% target needs about 500)" in page
    listing = client.get(reverse("classifiers:models")).content.decode()
    assert 'data-testid="rough-threshold"' in listing


def test_the_progress_poll_stops_with_286_once_the_run_is_terminal(client, bob, dataset):
    run = TrainingRun.objects.create(dataset=dataset, config={}, status="running")
    client.force_login(bob)
    url = reverse("classifiers:training_progress", args=[run.pk])
    assert client.get(url).status_code == 200
    TrainingRun.objects.filter(pk=run.pk).update(status="done")
    assert client.get(url).status_code == 286
    history = client.get(reverse("classifiers:training_history", args=[run.pk])).json()
    assert history["status"] == "done"


def test_unknown_ids_are_404(client, bob):
    client.force_login(bob)
    assert client.get(reverse("classifiers:model", args=[999999])).status_code == 404
    assert client.get(reverse("classifiers:model_compare") + "?a=x&b=1").status_code == 404
