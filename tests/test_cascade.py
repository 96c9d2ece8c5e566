"""The probe cascade as a product: calibrated by the real worker on real models,
served by the live guard, refused with clear errors, and never half-switched."""

from __future__ import annotations

import pytest
from django.urls import reverse

from classifiers.models import CascadeCalibration, GuardPolicy
from tests.factories import published_constitution
from tests.training_helpers import (
    FAST_CONFIG,
    make_dataset,
    make_model,
    wait_for_job,
)

HEAVY_CONFIG = {**FAST_CONFIG, "output_mode": "full", "output_epochs": 1, "input_epochs": 1}


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


def _train(dataset, config, *, activate):
    from classifiers.training.run import run_training_job
    from classifiers.training.services import training_start

    run = training_start(
        dataset=dataset, config=config, user=None, activate_when_done=activate, enqueue=False
    )
    run_training_job(run.pk)
    run.refresh_from_db()
    assert run.status == "done", run.error
    return run.model_versions.get(kind="output")


@pytest.mark.slow
def test_alice_calibrates_a_cascade_through_the_worker_and_the_guard_serves_it(
    celery_worker, client, alice, artifacts
):
    from classifiers.guard.engines import guard_setup
    from classifiers.ml.serving.engine import GuardConfig, run_to_end

    # The restricted category has its own, looser target: the cascade gets its own
    # threshold for it, as the probe did.
    dataset = make_dataset(published_constitution(user=alice, target_fpr=0.5))
    probe = _train(dataset, FAST_CONFIG, activate=True)
    heavy = _train(dataset, HEAVY_CONFIG, activate=False)
    constitution = dataset.constitution_version.constitution

    client.force_login(alice)
    page = client.get(reverse("classifiers:guard-settings", args=[constitution.slug]))
    assert b"cascade-form" in page.content and f"#{heavy.pk}".encode() in page.content
    response = client.post(
        reverse("classifiers:cascade-start", args=[constitution.slug]),
        {"heavy_model": heavy.pk, "escalate_percent": 50},
    )
    assert response.status_code == 302
    job = wait_for_job(CascadeCalibration.objects.get())
    assert job.status == "done", job.error
    assert (job.probe_model_id, job.heavy_model_id) == (probe.pk, heavy.pk)
    lo, hi = job.settings["band"]
    assert 0 <= lo <= hi <= 1 and 0 <= job.settings["weight"] <= 1
    assert probe.thresholds["per_category_fpr"] == {"forbidden widgets": 0.5}
    assert set(job.settings["per_category"]) == {"forbidden widgets"}
    assert job.settings["per_category"]["forbidden widgets"] <= job.settings["threshold"]
    stats = job.report["calibration"]["stats"]
    # The toy benign replies are identical, so their probe scores tie: asking for
    # 50% escalates all the tied ones (exact rates: tests/ml/test_streaming_cascade.py).
    assert 0 < stats["escalation_rate_benign"] < 1
    test = job.report["splits"]["test"]
    assert {"probe", "heavy", "cascade"} <= set(test) and test["n"] > 0
    assert 0 < job.report["cost"]["heavy_token_fraction"] <= 1
    assert job.report["cost"]["heavy_seconds_per_token"] > 0
    assert GuardPolicy.for_constitution(constitution).cascade_id == job.pk

    # The live guard now runs the cascade: a reply whose probe enters the band is
    # scored by both, and the turn records where the heavy classifier joined.
    setup = guard_setup(constitution)
    assert setup.cascade == job and setup.engine.cascade is not None
    assert setup.engine.cascade.settings.threshold == pytest.approx(job.settings["threshold"])
    result = run_to_end(setup.engine.stream(
        [{"role": "user", "content": "how do I make the forbidden widget"}],
        GuardConfig(max_new_tokens=6, mode="shadow")))  # fmt: skip
    # The input classifier's category of the prompt picks the threshold.
    expected = job.settings["per_category"].get(result.input.category, job.settings["threshold"])
    assert result.cascaded and result.output_threshold == pytest.approx(expected)

    page = client.get(reverse("classifiers:guard-settings", args=[constitution.slug]))
    assert b'data-testid="cascade-report"' in page.content and b"escalates to" in page.content

    # Activating another output model retires the cascade (it was calibrated for the
    # old probe); turning it off is one click.
    heavy.activate()
    assert guard_setup(constitution).engine.cascade is None
    probe.activate()
    assert guard_setup(constitution).engine.cascade is not None
    client.post(reverse("classifiers:cascade-off", args=[constitution.slug]))
    assert GuardPolicy.for_constitution(constitution).cascade_id is None
    assert guard_setup(constitution).engine.cascade is None


@pytest.fixture
def widgets(db, alice):
    dataset = make_dataset(published_constitution(user=alice))
    return dataset, dataset.constitution_version.constitution


def _start(client, user, constitution, **data):
    client.force_login(user)
    return client.post(reverse("classifiers:cascade-start", args=[constitution.slug]),
                       {"escalate_percent": 5, **data})  # fmt: skip


def test_without_an_active_output_model_there_is_no_probe_to_cascade(client, alice, widgets):
    dataset, constitution = widgets
    heavy = make_model(dataset, "output")
    response = _start(client, alice, constitution, heavy_model=heavy.pk)
    assert response.status_code == 400
    assert b"no active output classifier" in response.content
    assert not CascadeCalibration.objects.exists()


def test_bad_cascade_requests_are_400s_that_change_nothing(client, alice, widgets):
    dataset, constitution = widgets
    probe = make_model(dataset, "output")
    probe.activate()
    heavy = make_model(dataset, "output", seed=1)
    input_model = make_model(dataset, "input")
    for data in (
        {"heavy_model": probe.pk},  # the probe itself is not offered
        {"heavy_model": input_model.pk},  # nor an input classifier
        {"heavy_model": heavy.pk, "escalate_percent": 0},
        {"heavy_model": heavy.pk, "escalate_percent": 80},
        {"heavy_model": heavy.pk, "target_fpr": 2},
        {},
    ):
        response = _start(client, alice, constitution, **data)
        assert response.status_code == 400, data
    assert not CascadeCalibration.objects.exists()
    assert GuardPolicy.for_constitution(constitution).cascade_id is None


@pytest.mark.parametrize("who", ["bob", "victor"])
def test_only_policy_authors_change_the_cascade(client, request, who, widgets):
    dataset, constitution = widgets
    make_model(dataset, "output").activate()
    heavy = make_model(dataset, "output", seed=1)
    user = request.getfixturevalue(who)
    assert _start(client, user, constitution, heavy_model=heavy.pk).status_code == 403
    assert client.post(reverse("classifiers:cascade-off", args=[constitution.slug])).status_code == 403
    assert not CascadeCalibration.objects.exists()


def test_a_second_calibration_waits_for_the_first(client, alice, widgets):
    dataset, constitution = widgets
    make_model(dataset, "output").activate()
    heavy = make_model(dataset, "output", seed=1)
    from classifiers.guard.services import start_cascade_calibration

    start_cascade_calibration(constitution=constitution, heavy_model=heavy, enqueue=False)
    response = _start(client, alice, constitution, heavy_model=heavy.pk)
    assert response.status_code == 400 and b"already running" in response.content
    assert CascadeCalibration.objects.count() == 1


def test_a_cancelled_or_failed_calibration_leaves_the_served_cascade_alone(alice, widgets, monkeypatch):
    from classifiers.guard import cascade_run
    from classifiers.guard.cascade_run import run_cascade_job
    from classifiers.guard.services import start_cascade_calibration

    dataset, constitution = widgets
    make_model(dataset, "output").activate()
    heavy = make_model(dataset, "output", seed=1)
    served = CascadeCalibration.objects.create(
        constitution=constitution, probe_model=heavy, heavy_model=heavy, status="done",
        settings={"band": [0.2, 0.6], "weight": 0.5, "threshold": 0.7},
    )  # fmt: skip
    GuardPolicy.objects.create(constitution=constitution, cascade=served)

    queued = start_cascade_calibration(constitution=constitution, heavy_model=heavy, enqueue=False)
    queued.request_cancel()
    run_cascade_job(queued.pk)
    queued.refresh_from_db()
    assert queued.status == "cancelled"

    def boom(*args, **kwargs):
        raise RuntimeError("the model files are gone")

    monkeypatch.setattr(cascade_run, "execute_cascade_calibration", boom)
    failing = start_cascade_calibration(constitution=constitution, heavy_model=heavy, enqueue=False)
    run_cascade_job(failing.pk)
    failing.refresh_from_db()
    assert failing.status == "failed" and "model files are gone" in failing.error
    assert GuardPolicy.for_constitution(constitution).cascade_id == served.pk


def test_a_cascade_made_for_a_replaced_probe_is_not_served_and_cannot_be_chosen(client, alice, widgets):
    from classifiers.guard.policy import served_cascade

    dataset, constitution = widgets
    old_probe = make_model(dataset, "output")
    heavy = make_model(dataset, "output", seed=1)
    job = CascadeCalibration.objects.create(
        constitution=constitution, probe_model=old_probe, heavy_model=heavy, status="done",
        settings={"band": [0.2, 0.6], "weight": 0.5, "threshold": 0.7},
    )  # fmt: skip
    policy = GuardPolicy.objects.create(constitution=constitution, cascade=job)
    old_probe.activate()
    assert served_cascade(policy, old_probe) == job
    new_probe = make_model(dataset, "output", seed=2)
    new_probe.activate()
    assert served_cascade(policy, new_probe) is None
    client.force_login(alice)
    page = client.get(reverse("classifiers:guard-settings", args=[constitution.slug]))
    assert b"not served" in page.content
    response = client.post(reverse("classifiers:cascade-use", args=[constitution.slug, job.pk]))
    assert response.status_code == 302
    assert GuardPolicy.for_constitution(constitution).cascade_id == job.pk  # unchanged
    follow = client.get(reverse("classifiers:guard-settings", args=[constitution.slug]))
    assert b"no longer active" in follow.content


def test_a_calibration_whose_worker_died_shows_as_failed_and_switches_nothing(client, alice, widgets):
    from datetime import timedelta

    from django.utils import timezone

    dataset, constitution = widgets
    make_model(dataset, "output").activate()
    heavy = make_model(dataset, "output", seed=1)
    from classifiers.guard.services import start_cascade_calibration

    job = start_cascade_calibration(constitution=constitution, heavy_model=heavy, enqueue=False)
    CascadeCalibration.objects.filter(pk=job.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    client.force_login(alice)
    page = client.get(reverse("classifiers:guard-settings", args=[constitution.slug]))
    job.refresh_from_db()
    assert job.status == "failed" and "stopped" in job.error
    assert b"worker running this job stopped" in page.content
    assert GuardPolicy.for_constitution(constitution).cascade_id is None


def _running_job(constitution, probe, heavy, **fields):
    from classifiers.guard.services import start_cascade_calibration

    job = start_cascade_calibration(constitution=constitution, heavy_model=heavy, enqueue=False)
    CascadeCalibration.objects.filter(pk=job.pk).update(status="running", **fields)
    job.refresh_from_db()
    return job


def _finish(job):
    def finish(**fields):
        CascadeCalibration.objects.filter(pk=job.pk).update(status="done", **fields)

    return finish


RESULT = {"settings": {"band": [0.2, 0.6], "weight": 0.5, "threshold": 0.7}, "report": {}}


def test_a_late_cancel_or_a_reaped_job_beats_the_result_and_switches_nothing(widgets):
    from classifiers.guard.cascade_run import save_result
    from classifiers.guard.policy import CascadeError
    from classifiers.ml.types import Cancelled

    dataset, constitution = widgets
    probe = make_model(dataset, "output")
    probe.activate()
    heavy = make_model(dataset, "output", seed=1)
    cancelled = _running_job(constitution, probe, heavy, cancel_requested=True)
    with pytest.raises(Cancelled):
        save_result(cancelled, **RESULT, finish=_finish(cancelled))
    CascadeCalibration.objects.filter(pk=cancelled.pk).update(status="cancelled")
    reaped = _running_job(constitution, probe, heavy)
    CascadeCalibration.objects.filter(pk=reaped.pk).update(status="failed")
    with pytest.raises(CascadeError, match="failed"):
        save_result(reaped, **RESULT, finish=_finish(reaped))
    assert GuardPolicy.for_constitution(constitution).cascade_id is None
    assert not CascadeCalibration.objects.filter(status="done").exists()

    fine = _running_job(constitution, probe, heavy)
    save_result(fine, **RESULT, finish=_finish(fine))
    assert GuardPolicy.for_constitution(constitution).cascade_id == fine.pk


def test_saving_the_guard_settings_keeps_a_cascade_switched_meanwhile(widgets):
    dataset, constitution = widgets
    probe = make_model(dataset, "output")
    probe.activate()
    job = CascadeCalibration.objects.create(
        constitution=constitution, probe_model=probe, heavy_model=make_model(dataset, "output", seed=1),
        status="done", settings=RESULT["settings"],
    )  # fmt: skip
    policy = GuardPolicy.objects.create(constitution=constitution)
    stale = GuardPolicy.objects.get(pk=policy.pk)  # loaded before the switch
    GuardPolicy.objects.filter(pk=policy.pk).update(cascade=job)
    from classifiers.guard.forms import GuardPolicyForm
    from classifiers.guard.views import save_policy

    form = GuardPolicyForm({"mode": "shadow", "max_message_chars": 4000, "max_new_tokens": 128,
                            "requests_per_minute": 30}, instance=stale)  # fmt: skip
    assert form.is_valid(), form.errors
    save_policy(form)  # what the settings view does with its (now stale) row
    policy.refresh_from_db()
    assert policy.mode == "shadow" and policy.cascade_id == job.pk
