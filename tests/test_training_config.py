"""Training settings: the calibration length of the output classifier."""

from __future__ import annotations

import pytest

from classifiers.ml.pipeline import PipelineConfig
from classifiers.training.config import TrainingError, normalize_config


def test_replies_are_calibrated_longer_than_trained_by_default_and_bounded():
    cfg = normalize_config({"output_max_length": 160})
    assert cfg["output_calibration_max_length"] == 512
    assert PipelineConfig.from_dict(cfg).output_calibration_max_length == 512
    assert (
        normalize_config({"output_calibration_max_length": "384"})[
            "output_calibration_max_length"
        ]
        == 384
    )
    for bad, says in ((10, "between 32 and 4096"), (10**6, "between 32 and 4096"),
                      ("long", "must be numbers")):  # fmt: skip
        with pytest.raises(TrainingError, match=says):
            normalize_config({"output_calibration_max_length": bad})
