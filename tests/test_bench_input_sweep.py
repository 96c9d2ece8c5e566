"""bench input_sweep: export a dataset's splits, sweep seeds without the database."""

from __future__ import annotations

import json

import pytest

from tests.factories import published_constitution
from tests.training_helpers import make_dataset

SETTING = "full epochs=3 backbone_lr=3e-05"


def _row(seed: int, validation: float, test: float, calibration: float = 0.5) -> dict:
    return {"mode": "full", "epochs": 3, "backbone_lr": 3e-5, "seed": seed,
            "validation_tpr": validation, "calibration_tpr": calibration,
            "test_tpr": test}  # fmt: skip


def test_the_validation_best_of_each_subset_is_what_counts():
    from bench.input_sweep import summarise

    rows = [_row(0, 0.9, 0.95), _row(1, 0.8, 0.70), _row(2, 0.7, 0.99)]
    entry = summarise(rows, pick_from=2)[SETTING]
    assert entry["test"] == {"mean": 0.88, "min": 0.7, "max": 0.99}
    # Subsets {0,1} and {0,2} pick seed 0 (0.95); {1,2} picks seed 1 (0.70).
    # (Picking on test would give 0.963.)
    assert entry["test_of_validation_best_of_2"] == {
        "mean": 0.867, "min": 0.7, "share_at_least_0.9": 0.667, "subsets": 3
    }


def test_a_validation_tie_goes_to_calibration_and_nan_never_wins():
    from bench.input_sweep import summarise

    tied = [_row(0, 0.9, 0.5, calibration=0.6), _row(1, 0.9, 0.95, calibration=0.8)]
    assert summarise(tied, 2)[SETTING]["test_of_validation_best_of_2"]["mean"] == 0.95
    missing = [_row(0, float("nan"), 0.2), _row(1, 0.1, 0.9)]
    assert summarise(missing, 2)[SETTING]["test_of_validation_best_of_2"]["mean"] == 0.9


@pytest.mark.django_db
def test_export_then_sweep_without_the_database(alice, tmp_path):
    from bench import input_sweep

    dataset = make_dataset(published_constitution(user=alice), heldout=False, responses=False)
    exported = input_sweep.main(["--export", str(tmp_path), "--dataset", str(dataset.pk)])
    assert exported["sizes"]["train"]["harmful"] > 0
    assert exported["sizes"]["test"]["benign"] > 0
    rows_file = tmp_path / "rows.jsonl"
    result = input_sweep.main(
        ["--splits", str(tmp_path), "--seeds", "0-2", "--mode", "fast", "--epochs", "5",
         "--pick-from", "2", "--device", "cpu", "--rows", str(rows_file),
         "--config", "hidden=64"]
    )  # fmt: skip
    assert [r["seed"] for r in result["rows"]] == [0, 1, 2]
    assert all(r["config"] == {"hidden": 64} for r in result["rows"])
    for row in result["rows"]:
        assert 0.0 <= row["test_tpr"] <= 1.0 and 0.0 <= row["test_deployed_fpr"] <= 1.0
        assert "heldout_transforms_tpr" not in row  # this dataset has none
    summary = result["summary"]["fast epochs=5 backbone_lr=6e-05 hidden=64"]
    assert summary["seeds"] == 3 and summary["test_of_validation_best_of_2"]["subsets"] == 3

    # The saved rows keep every score, so selections and ensembles come afterwards;
    # a row written twice (a rerun appending to the same file) counts once.
    lines = rows_file.read_text().splitlines()
    rows_file.write_text("\n".join(lines + lines[:1]) + "\n")
    again = input_sweep.main(["--analyse", str(rows_file), "--splits", str(tmp_path),
                              "--pick-from", "2"])  # fmt: skip
    assert again["rows"] == 3 and again["summary"] == result["summary"]
    assert again["pooled_selection"]["fast epochs=5 backbone_lr=6e-05 hidden=64"]["subsets"] == 3
    (ensemble,) = again["ensembles"]["fast epochs=5 backbone_lr=6e-05 hidden=64"]
    assert ensemble["seeds"] == [0, 1] and 0.0 <= ensemble["test_tpr"] <= 1.0

    with pytest.raises(SystemExit, match="--target-fpr 0.01"):
        input_sweep.main(["--analyse", str(rows_file), "--splits", str(tmp_path),
                          "--target-fpr", "0.05"])  # fmt: skip
    row = json.loads(lines[0])
    row["scores"]["test"].append(0.5)
    rows_file.write_text(json.dumps(row) + "\n")
    with pytest.raises(SystemExit, match="not these splits"):
        input_sweep.main(["--analyse", str(rows_file), "--splits", str(tmp_path)])


def test_other_config_fields_vary_as_typed_combinations():
    from bench.input_sweep import _config_grid

    grid = _config_grid(["batch_size=16,32,16", "restore_best=false", "dropout=0.2"])
    assert grid == [
        {"batch_size": 16, "restore_best": False, "dropout": 0.2},
        {"batch_size": 32, "restore_best": False, "dropout": 0.2},
    ]
    assert _config_grid([]) == [{}]
    with pytest.raises(ValueError, match="given twice"):
        _config_grid(["batch_size=16", "batch_size=32"])
    for bad, message in (("seed=1", "not a field"), ("nonsense=1", "not a field"),
                         ("batch_size=big", "takes int"), ("hidden=", "at least one"),
                         ("restore_best=ture", "takes bool")):
        with pytest.raises(ValueError, match=message):
            _config_grid([bad])


def test_splits_that_cannot_be_swept_are_refused_before_training(tmp_path, capsys):
    from bench import input_sweep

    with pytest.raises(SystemExit):
        input_sweep.main(["--splits", str(tmp_path)])
    assert "categories.json" in capsys.readouterr().err
