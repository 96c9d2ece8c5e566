"""bench correction_weight on a tiny reviewed dataset (fast mode, real PostgreSQL)."""

from __future__ import annotations

import pytest

from classifiers.models import DatasetExample
from tests.factories import published_constitution
from tests.training_helpers import make_dataset

pytestmark = pytest.mark.django_db


def test_rows_per_weight_and_seed_with_corrected_prompts_marked(alice):
    from bench import correction_weight

    dataset = make_dataset(published_constitution(user=alice), heldout=False, responses=False)
    # Two benign prompts a reviewer flipped from harmful: one in train, one in test.
    for split in ("train", "test"):
        row = DatasetExample.objects.filter(dataset=dataset, split=split, label=0).first()
        row.meta = {"reviewed": {"audit": 1, "decision": "flip",
                                 "flipped_from": [1, "forbidden widgets"]}}  # fmt: skip
        row.save()
    result = correction_weight.main(
        ["--dataset", str(dataset.pk), "--weights", "1,5", "--seeds", "0,1",
         "--mode", "fast", "--epochs", "5"]
    )  # fmt: skip
    assert result["n_corrected_train"] == 1 and result["n_test"]["corrected_benign"] == 1
    assert [(r["weight"], r["seed"]) for r in result["rows"]] == [
        (1.0, 0), (1.0, 1), (5.0, 0), (5.0, 1)
    ]
    for row in result["rows"]:
        assert 0.0 <= row["test_tpr_at_fpr"] <= 1.0
        assert sum(t["corrected"] for t in row["top_benign"]) == 1  # the flipped one
        assert "text" not in row["top_benign"][0]
    assert set(result["summary"]) == {"1", "5"}
