"""Training end to end through the REAL Celery worker and the real models; cancel and
failure leave the live model alone and no artifact folder behind."""

from __future__ import annotations

import pytest
from django.urls import reverse

from classifiers.ml.checkpoints import verify_artifact
from classifiers.models import ActiveModel, ModelVersion
from tests.factories import published_constitution
from tests.training_helpers import (
    FAST_CONFIG,
    make_dataset,
    make_model,
    wait_for_job,
)


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


def _artifact_folders(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_dir() and "-" in p.name)


@pytest.mark.slow
def test_a_run_through_the_worker_makes_live_models_and_rollback_restores_the_old_one(
    celery_worker, client, alice, artifacts
):
    from classifiers.training.services import training_start

    # A looser target for the restricted category: it gets its own, lower thresholds.
    dataset = make_dataset(published_constitution(user=alice, target_fpr=0.5))
    older = make_model(dataset)  # an earlier live model to roll back to
    older.activate()
    flipped = dataset.examples.filter(split="train", label=0).first()
    flipped.meta = {**flipped.meta, "reviewed": {
        "audit": 1, "decision": "flip", "flipped_from": [1, "forbidden widgets"]}}  # fmt: skip
    flipped.save()
    run = training_start(
        dataset=dataset, config={**FAST_CONFIG, "correction_weight": 3},
        user=alice, activate_when_done=True,
    )  # fmt: skip
    run = wait_for_job(run)
    assert run.status == "done", run.error
    models = {m.kind: m for m in run.model_versions.all()}
    assert set(models) == {"input", "output"}
    for model in models.values():
        assert verify_artifact(artifacts / model.path)["checksum"] == model.checksum
        assert model.thresholds["target_fpr"] == FAST_CONFIG["target_fpr"]
        # Per-category targets apply to both classifiers (issue #5, item 6).
        assert model.thresholds["per_category_fpr"] == {"forbidden widgets": 0.5}
        own = model.thresholds["per_category"]["forbidden widgets"]
        assert own <= model.thresholds["global_threshold"]
        assert model.report["splits"]["test"]["classifier"]["n"] > 0
        assert model.is_active()
    # Output reports judge each reply at the threshold the guard would apply.
    assert models["output"].report["splits"]["test"]["classifier"]["per_category_thresholds"]
    halting = models["output"].report["splits"]["test"]["classifier"]["halting"]
    assert sum(halting["harmful"]) + sum(halting["benign"]) == halting["halted"]
    assert run.history["input"] and any("val_auroc" in p for p in run.history["input"])
    training = models["input"].report["training"]
    assert training["correction_weight"] == 3.0 and training["n_corrected"] == 1

    client.force_login(alice)
    page = client.get(models["input"].get_absolute_url())
    assert b"trained with 1 corrected prompt weighing 3.0" in page.content
    client.post(reverse("classifiers:model_activate", args=[older.pk]))
    assert ActiveModel.objects.get(kind="input").model_version == older
    assert ActiveModel.objects.get(kind="output").model_version == models["output"]


@pytest.mark.django_db
def test_a_cancelled_run_keeps_the_live_model_and_leaves_no_artifacts(
    alice, artifacts, monkeypatch
):
    from classifiers.core import jobs
    from classifiers.ml import pipeline
    from classifiers.training.run import run_training_job
    from classifiers.training.services import training_start

    dataset = make_dataset(published_constitution(user=alice))
    live = make_model(dataset)
    live.activate()
    run = training_start(dataset=dataset, config=FAST_CONFIG, user=alice,
                         activate_when_done=True, enqueue=False)  # fmt: skip
    monkeypatch.setattr(jobs, "CANCEL_CHECK_SECONDS", 0.0)
    original = pipeline._train_output

    def cancel_midway(*args, **kwargs):  # the author presses cancel during output training
        run.request_cancel()
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_train_output", cancel_midway)
    run_training_job(run.pk)
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert ActiveModel.objects.get(kind="input").model_version == live
    assert not artifacts.exists() or _artifact_folders(artifacts) == []


@pytest.mark.django_db
def test_a_dataset_without_a_calibration_split_fails_with_a_clear_error(alice, artifacts):
    from classifiers.training.run import run_training_job
    from classifiers.training.services import training_start

    dataset = make_dataset(published_constitution(user=alice), splits=("train", "validation", "test"))
    run = training_start(dataset=dataset, config=FAST_CONFIG, user=alice, enqueue=False)
    run_training_job(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and "calibration" in run.error
    assert not ModelVersion.objects.exists() and not artifacts.exists()


def _queued_run_over_a_live_model(alice):  # type: ignore[no-untyped-def]
    """A dataset whose live input model a queued run (activate when done) would replace."""
    from classifiers.training.services import training_start

    version = published_constitution(user=alice)
    dataset = make_dataset(version)
    live = make_model(dataset)
    live.activate()
    run = training_start(dataset=dataset, config=FAST_CONFIG, user=alice,
                         activate_when_done=True, enqueue=False)  # fmt: skip
    return version, live, run


@pytest.mark.django_db
def test_an_artifact_folder_in_the_way_fails_the_run_and_is_left_alone(alice, artifacts):
    from classifiers.training.run import run_training_job

    version, live, run = _queued_run_over_a_live_model(alice)
    # A file where the output artifact's folder must go: nothing is written, and
    # what this run did not create is never deleted.
    slug_dir = artifacts / version.constitution.slug
    slug_dir.mkdir(parents=True)
    (slug_dir / f"{run.pk}-output").write_text("in the way")
    run_training_job(run.pk)
    run.refresh_from_db()
    assert run.status == "failed" and "already exists" in run.error
    assert not (slug_dir / f"{run.pk}-input").exists()
    assert (slug_dir / f"{run.pk}-output").read_text() == "in the way"
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert ActiveModel.objects.get(kind="input").model_version == live


@pytest.mark.django_db
@pytest.mark.parametrize("fails", ["output save", "rows"])
def test_a_failure_after_the_input_artifact_is_written_removes_both_and_keeps_the_live_model(
    alice, artifacts, monkeypatch, fails
):
    from classifiers.ml import pipeline
    from classifiers.training import run as training_run
    from classifiers.training.run import run_training_job

    version, live, run = _queued_run_over_a_live_model(alice)
    slug_dir = artifacts / version.constitution.slug

    def disk_full(model, directory, **kwargs):  # part of the output folder, then a failure
        assert (slug_dir / f"{run.pk}-input").is_dir()  # the input artifact is written
        directory.mkdir(parents=True)
        (directory / "partial").write_text("half")
        raise OSError(28, "No space left on device")

    def database_down(**kwargs):  # both artifacts written, the rows' transaction fails
        assert (slug_dir / f"{run.pk}-output").is_dir()
        raise RuntimeError("database went away")

    if fails == "output save":
        monkeypatch.setattr(pipeline, "save_output_classifier", disk_full)
    else:
        monkeypatch.setattr(training_run, "activate_model", database_down)
    run_training_job(run.pk)
    run.refresh_from_db()
    assert run.status == "failed"
    assert "No space left" in run.error or "database went away" in run.error
    assert not (slug_dir / f"{run.pk}-input").exists()
    assert not (slug_dir / f"{run.pk}-output").exists()
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert ActiveModel.objects.get(kind="input").model_version == live
