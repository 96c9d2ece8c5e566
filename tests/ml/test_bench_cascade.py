"""Smoke test of bench/cascade.py on tiny random models (no database, no SmolLM2)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.cascade import _cap, run_bench, synthetic_examples
from classifiers.ml.output.model import OutputClassifierConfig
from classifiers.ml.pipeline import with_response_label
from tests.ml.test_output_classifier import toy_examples
from tests.ml.test_value_head import make_tokenizer, tiny_lm


def test_run_bench_reports_options_and_cascade():
    tok = make_tokenizer()
    lm = tiny_lm(tok.vocab_size, layers=4)
    heavy_calls: list[int] = []

    def heavy_trainer(train, validation):
        assert train and validation  # trained on the bench's data

        def score(items):
            heavy_calls.append(len(items))
            return [0.9 if "forbidden" in e.response else 0.1 for e in items]

        return score

    cfg = OutputClassifierConfig(lr=0.05, epochs=5, batch_size=8, window=4)
    test = toy_examples(20, seed=2)
    report = run_bench(
        toy_examples(24),
        toy_examples(20, seed=1),
        test,
        lm=lm,
        tokenizer=tok,
        heavy_trainer=heavy_trainer,
        base_cfg=cfg,
        escalate_fraction=0.2,
    )
    names = [o["name"] for o in report["probe_options"]]
    assert names == [
        "last/running_max",
        "last/window",
        "multi/running_max",
        "multi/window",
    ]
    c = report["cascade"]
    assert c["heavy"]["auroc"] == 1.0  # the keyword heavy is perfect on toy data
    stats = c["stats_shared_activations"]
    # Heavy ran once on everything (baseline), then once on just the escalations.
    assert heavy_calls[0] == len(test)
    escalated = heavy_calls[1] if len(heavy_calls) > 1 else 0
    assert stats["heavy_calls"] == escalated
    assert stats["escalation_rate"] == pytest.approx(escalated / len(test))
    costs = c["cost_s_per_item"]
    expected = (len(test) * costs["probe_head"] + escalated * costs["heavy"]) / (
        len(test) * costs["heavy"]
    )
    assert stats["relative_cost"] == pytest.approx(expected)
    lo, hi = c["band"]
    assert lo <= hi
    assert report["sizes"] == {
        "train": 24,
        "validation": 20,
        "test": 20,
        "test_positive": 10,
    }


def test_cap_balances_labels_and_response_labels():
    examples = synthetic_examples(40)
    capped = _cap(examples, 10, seed=0)
    assert len(capped) == 10 and sum(e.label for e in capped) == 5
    assert _cap(examples, None, 0) == examples
    relabelled = dataclasses.replace(examples[0], meta={"response_label": 1})
    no_reply = dataclasses.replace(examples[1], response="")
    out = with_response_label([relabelled, no_reply])
    assert [e.label for e in out] == [1]
