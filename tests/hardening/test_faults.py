"""Faults: a killed worker, half-written artifacts, Redis going away.

Restarts of Redis and PostgreSQL under a live server are in test_restarts.py; a
failing artifact write is covered in tests/test_training_worker.py (the previous
model stays active).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 6  # the heartbeat timeout the child worker and the reaper use here


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def start_worker() -> subprocess.Popen[bytes]:
    """`manage.py worker` in its own process group, on this test's DB and Redis prefix."""
    env = {
        **os.environ,
        "GUARDWEB_DB_NAME": connection.settings_dict["NAME"],
        "GUARDWEB_REDIS_PREFIX": settings.REDIS_PREFIX,
        "GUARDWEB_JOB_HEARTBEAT_TIMEOUT": str(TIMEOUT_S),
        "GUARDWEB_TESTING": "true",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "worker", "--queues", "default,gpu",
         "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
@override_settings(JOB_HEARTBEAT_TIMEOUT=TIMEOUT_S)
def test_a_worker_killed_mid_generation_leaves_a_failed_dataset_and_no_examples(
    transactional_db, alice
) -> None:  # type: ignore[no-untyped-def]
    from classifiers.datasets.config import generate_config
    from classifiers.datasets.services import dataset_start
    from classifiers.models import Dataset, DatasetExample
    from tests.factories import SHOP, published_constitution

    version = published_constitution(user=alice, categories=SHOP, queries=2)
    config = generate_config(
        per_category=6, max_new_tokens_query=24, max_new_tokens_response=24,
        transforms=["rot13"], heldout_families=[], redteam_templates=0,
    )  # fmt: skip
    worker = start_worker()
    try:
        dataset = dataset_start(version=version, config=config, user=alice)
        _wait(
            lambda: Dataset.objects.get(pk=dataset.pk).status == "running",
            120, "the worker to start generating",
        )  # fmt: skip
        time.sleep(1.0)  # mid-generation
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    assert Dataset.objects.get(pk=dataset.pk).status == "running"  # nobody told it
    _wait(lambda: Dataset.reap_stale() > 0, TIMEOUT_S * 3, "the reaper")
    dataset.refresh_from_db()
    assert dataset.status == "failed"
    assert "worker" in dataset.error
    assert not DatasetExample.objects.filter(dataset=dataset).exists()


@pytest.mark.slow
@override_settings(JOB_HEARTBEAT_TIMEOUT=TIMEOUT_S)
def test_a_worker_killed_mid_training_fails_the_run_and_keeps_the_live_model(
    transactional_db, alice
) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import ActiveModel, ModelVersion, TrainingRun
    from classifiers.training.services import training_start
    from tests.factories import published_constitution
    from tests.training_helpers import make_dataset, make_model

    version = published_constitution("widgets", user=alice)
    dataset = make_dataset(version)
    live = make_model(dataset, "input")
    live.activate()
    worker = start_worker()
    try:
        run = training_start(
            dataset=dataset, user=alice, activate_when_done=True,
            config={"input_epochs": 200, "output_epochs": 3},
        )  # fmt: skip
        _wait(
            lambda: TrainingRun.objects.get(pk=run.pk).status == "running",
            120, "the worker to start training",
        )  # fmt: skip
        time.sleep(1.0)  # mid-training
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    _wait(lambda: TrainingRun.reap_stale() > 0, TIMEOUT_S * 3, "the reaper")
    run.refresh_from_db()
    assert run.status == "failed" and "worker" in run.error
    assert not ModelVersion.objects.filter(training_run=run).exists()
    active = ActiveModel.objects.get(constitution=version.constitution, kind="input")
    assert active.model_version == live
    run_dirs = list((settings.ARTIFACTS_DIR / version.constitution.slug).glob(f"{run.pk}-*"))
    assert run_dirs == [], run_dirs  # nothing finished was written for the dead run


@override_settings(JOB_HEARTBEAT_TIMEOUT=TIMEOUT_S)
def test_reaping_a_dead_training_run_removes_its_half_written_artifact_folders(
    db, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import ActiveModel, TrainingRun
    from tests.factories import published_constitution
    from tests.training_helpers import make_dataset, make_model

    version = published_constitution("widgets")
    dataset = make_dataset(version)
    live = make_model(dataset, "input")
    live.activate()
    run = TrainingRun.objects.create(
        dataset=dataset, status="running",
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=TIMEOUT_S + 5),
    )  # fmt: skip
    root = tmp_path / "artifacts"
    stale = root / "widgets" / f".input-{run.pk}.tmp-{'a' * 32}"
    fresh = root / "widgets" / f".input-99.tmp-{'b' * 32}"  # another save in progress
    done = root / "widgets" / "input-1"  # a finished artifact
    for folder in (stale, fresh, done):
        folder.mkdir(parents=True)
        (folder / "weights.safetensors").write_bytes(b"partial")
    old = time.time() - TIMEOUT_S - 5
    os.utime(stale, (old, old))
    with override_settings(ARTIFACTS_DIR=root):
        assert TrainingRun.reap_stale() == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert not stale.exists()
    assert fresh.exists() and done.exists()
    assert ActiveModel.objects.get(constitution=version.constitution, kind="input").model_version == live


def test_the_heartbeat_timeout_is_a_setting(db) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models.jobs import heartbeat_timeout

    assert heartbeat_timeout().total_seconds() == settings.JOB_HEARTBEAT_TIMEOUT
    with override_settings(JOB_HEARTBEAT_TIMEOUT=7):
        assert heartbeat_timeout().total_seconds() == 7


DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.mark.django_db
def test_with_redis_down_pages_serve_healthz_says_so_and_the_api_is_unmetered(alice) -> None:  # type: ignore[no-untyped-def]
    from classifiers.models import ApiToken
    from tests.api_helpers import guarded_constitution

    constitution = guarded_constitution("widgets", requests_per_minute=1)
    _token, raw = ApiToken.issue(user=alice, name="outage", constitution=constitution)
    dead_cache = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                              "LOCATION": DEAD_REDIS,
                              "OPTIONS": {"socket_connect_timeout": 0.5}}}  # fmt: skip
    with override_settings(CACHES=dead_cache, REDIS_URL=DEAD_REDIS):
        browser = Client()
        browser.force_login(alice)  # sessions live in PostgreSQL
        for url in ("/", "/constitutions/", "/classifiers/models/", "/classifiers/playground/"):
            assert browser.get(url).status_code == 200, url
        health = Client().get("/healthz")
        assert health.status_code == 503
        assert health.json()["redis"]["ok"] is False
        assert health.json()["postgres"]["ok"] is True
        api = Client()
        auth = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
        for _ in range(3):  # over the 1/minute quota: not enforced while Redis is down
            response = api.post(
                "/api/v1/classify", {"text": "how do I cook a garden soup"},
                content_type="application/json", **auth,
            )  # fmt: skip
            assert response.status_code == 200, response.content
    # Back up: the quota applies again.
    api = Client()
    statuses = [
        api.post("/api/v1/classify", {"text": "garden soup"}, content_type="application/json",
                 **auth).status_code
        for _ in range(2)
    ]  # fmt: skip
    assert statuses == [200, 429]
