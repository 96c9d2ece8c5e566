"""bench input_sweep: export a dataset's splits, sweep seeds without the database."""

from __future__ import annotations

import pytest

from tests.training_helpers import make_constitution, make_dataset


def _row(seed: int, validation: float, test: float) -> dict:
    return {"epochs": 3, "backbone_lr": 3e-5, "seed": seed, "validation_tpr": validation,
            "calibration_tpr": 0.5, "test_tpr": test}  # fmt: skip


def test_the_validation_best_of_each_subset_is_what_counts():
    from bench.input_sweep import summarise

    rows = [_row(0, 0.9, 0.95), _row(1, 0.8, 0.70), _row(2, 0.7, 0.99)]
    entry = summarise(rows, pick_from=2)["epochs=3 backbone_lr=3e-05"]
    assert entry["test"] == {"mean": 0.88, "min": 0.7, "max": 0.99}
    # Subsets {0,1} and {0,2} pick seed 0 (0.95); {1,2} picks seed 1 (0.70).
    assert entry["test_of_validation_best_of_2"] == {
        "mean": 0.867, "min": 0.7, "share_at_least_0.9": 0.667, "subsets": 3
    }


@pytest.mark.django_db
def test_export_then_sweep_without_the_database(alice, tmp_path):
    from bench import input_sweep

    dataset = make_dataset(make_constitution(user=alice), heldout=False, responses=False)
    exported = input_sweep.main(["--export", str(tmp_path), "--dataset", str(dataset.pk)])
    assert exported["sizes"]["train"]["harmful"] > 0
    assert exported["sizes"]["test"]["benign"] > 0
    result = input_sweep.main(
        ["--splits", str(tmp_path), "--seeds", "0-2", "--mode", "fast", "--epochs", "5",
         "--pick-from", "2", "--device", "cpu", "--rows", str(tmp_path / "rows.jsonl")]
    )  # fmt: skip
    assert [r["seed"] for r in result["rows"]] == [0, 1, 2]
    for row in result["rows"]:
        assert 0.0 <= row["test_tpr"] <= 1.0 and 0.0 <= row["test_deployed_fpr"] <= 1.0
        assert "heldout_transforms_tpr" not in row  # this dataset has none
    summary = result["summary"]["epochs=5 backbone_lr=3e-05"]
    assert summary["seeds"] == 3 and summary["test_of_validation_best_of_2"]["subsets"] == 3
    # The saved rows keep every score, so ensembles are computed afterwards.
    again = input_sweep.main(["--analyse", str(tmp_path / "rows.jsonl"), "--splits",
                              str(tmp_path), "--pick-from", "2"])  # fmt: skip
    assert again["rows"] == 3 and again["summary"] == result["summary"]
    (ensemble,) = again["ensembles"]["epochs=5 backbone_lr=3e-05"]
    assert ensemble["seeds"] == [0, 1] and 0.0 <= ensemble["test_tpr"] <= 1.0
