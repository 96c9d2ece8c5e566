"""The training pipeline in-process (no worker): rows, artifacts, failure paths."""

from __future__ import annotations

import pytest

from classifiers.ml.checkpoints import verify_artifact
from tests.training_helpers import FAST_CONFIG, make_constitution, make_dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR


def test_a_run_makes_two_calibrated_evaluated_models_with_verified_artifacts(
    alice, artifacts
):
    from classifiers.models import ModelVersion
    from classifiers.services_training import training_start
    from classifiers.tasks.training import run_training_job

    dataset = make_dataset(make_constitution(user=alice))
    run = training_start(
        dataset=dataset, config=FAST_CONFIG, user=alice, activate_when_done=True,
        enqueue=False,
    )
    lines: list[str] = []
    run_training_job(run.pk, echo=lines.append)
    run.refresh_from_db()
    assert run.status == "done", run.error
    models = {m.kind: m for m in ModelVersion.objects.filter(training_run=run)}
    assert set(models) == {"input", "output"}
    for model in models.values():
        assert model.is_active()
        manifest = verify_artifact(artifacts / model.path)
        assert manifest["checksum"] == model.checksum
        assert 0.0 <= model.threshold <= 1.0
        assert set(model.report["splits"]) == {"test", "heldout_transforms"}
    input_report = models["input"].report["splits"]["test"]
    assert input_report["classifier"]["auroc"] is not None
    assert {"keyword", "refusal"} <= set(input_report["baselines"])
    assert "halting" in models["output"].report["splits"]["test"]["classifier"]
    assert run.history["input"] and run.history["output"]
    assert any(line.startswith("train input") for line in lines)
