"""The real packaged models for the few ML tests that need them (cached per machine)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from classifiers.ml import registry

ROOT = Path(__file__).resolve().parents[2]


@cache
def smollm_dir() -> Path:
    """SmolLM2 converted under the data dir (the same cache the app uses)."""
    data_dir = Path(os.getenv("GUARDWEB_DATA_DIR", ROOT / "var"))
    return registry.generator_dir(data_dir=data_dir)
