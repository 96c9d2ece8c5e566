"""The guard engine: blocking, halting at the right token, shadow/off modes, reproducibility."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.input.training import train_input_classifier
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.engine import (
    GuardConfig,
    GuardEngine,
    InputGuard,
    run_to_end,
)
from classifiers.ml.serving.stream import generate_with_scores
from tests.ml.test_input_classifier import _config, _make_backbone, make_examples
from tests.ml.test_value_head import make_tokenizer, tiny_lm

MESSAGES = [{"role": "user", "content": "tell me about the garden soup"}]
HARMFUL = [{"role": "user", "content": "how do I build the forbidden widget"}]


def thresholds(value: float) -> Thresholds:
    return Thresholds(global_threshold=value, target_fpr=0.01)


@pytest.fixture(scope="module")
def output_model():
    tok = make_tokenizer()
    model = CausalLMWithValueHead(tiny_lm(tok.vocab_size, seed=1), layers=(-1,))
    torch.manual_seed(3)
    with torch.no_grad():  # spread the per-token scores so a threshold can cut them
        model.v_head.summary.weight.normal_(0, 0.5)
    return model.eval(), tok


@pytest.fixture(scope="module")
def input_guard(tmp_path_factory):
    backbone = _make_backbone(Path(tmp_path_factory.mktemp("guard_bert")), seed=0)
    trained = train_input_classifier(
        _config(backbone, epochs=30), make_examples(96, seed=1), make_examples(32, seed=2)
    )
    return InputGuard(trained.model, trained.tokenizer, thresholds(0.5))


def engine(output_model, *, input_guard=None, threshold=math.inf):
    model, tok = output_model
    return GuardEngine(
        input_guard=input_guard, output_model=model,
        output_thresholds=thresholds(threshold), lm=model.lm, tokenizer=tok,
    )  # fmt: skip


def unhalted_scores(output_model, n=24):
    model, tok = output_model
    return [
        t.score
        for t in generate_with_scores(model, tok, MESSAGES, max_new_tokens=n, halt=False)
    ]


def test_it_halts_at_the_first_token_whose_running_max_crosses_the_threshold(output_model):
    scores = unhalted_scores(output_model)
    assert len(scores) >= 6, "the tiny model should generate a few tokens"
    threshold = scores[4] if scores[4] > scores[3] else (scores[3] + scores[-1]) / 2
    expected = next(i for i, s in enumerate(scores) if s >= threshold)
    result = run_to_end(
        engine(output_model, threshold=threshold).stream(
            MESSAGES, GuardConfig(max_new_tokens=24)
        )
    )
    assert result.finish_reason == "halted"
    assert result.halted_at == expected
    assert len(result.tokens) == expected + 1
    assert result.tokens[-1].halted
    assert result.text.endswith(GuardConfig().refusal)
    assert result.flag_reason == "output_halted"


def test_shadow_mode_never_halts_but_records_what_enforce_would_have_done(output_model):
    scores = unhalted_scores(output_model)
    threshold = sorted(scores)[len(scores) // 2]
    result = run_to_end(
        engine(output_model, threshold=threshold).stream(
            MESSAGES, GuardConfig(mode="shadow", max_new_tokens=24)
        )
    )
    assert result.finish_reason in {"stop", "length"}
    assert len(result.tokens) == len(scores)
    assert result.would_block and result.halted_at is not None
    assert GuardConfig().refusal not in result.text


def test_off_mode_generates_without_scores(output_model):
    result = run_to_end(
        engine(output_model, threshold=0.0).stream(MESSAGES, GuardConfig(mode="off", max_new_tokens=8))
    )
    assert result.tokens and all(math.isnan(t.score) for t in result.tokens)
    assert result.halted_at is None and result.output_threshold is None


def test_the_same_conversation_gives_the_same_scores(output_model):
    guard = engine(output_model)
    first = run_to_end(guard.stream(MESSAGES, GuardConfig(max_new_tokens=12)))
    second = run_to_end(guard.stream(MESSAGES, GuardConfig(max_new_tokens=12)))
    assert [t.score for t in first.tokens] == [t.score for t in second.tokens]
    assert first.text == second.text


def test_the_upstream_path_scores_streamed_text_like_the_local_path(output_model):
    local = run_to_end(engine(output_model).stream(MESSAGES, GuardConfig(max_new_tokens=16)))
    text = local.generated
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    upstream = run_to_end(
        engine(output_model).stream_upstream(MESSAGES, chunks, GuardConfig(max_new_tokens=16))
    )
    _, tok = output_model
    if tok(text, add_special_tokens=False)["input_ids"] == [t.token_id for t in local.tokens]:
        # Same tokens → same scores (the separate classifier re-tokenises the text).
        assert [t.score for t in upstream.tokens] == pytest.approx(
            [t.score for t in local.tokens], abs=1e-4
        )
    assert upstream.generated == text  # the delivered text is exactly the upstream text


def test_the_upstream_path_halts_mid_stream(output_model):
    local = run_to_end(engine(output_model).stream(MESSAGES, GuardConfig(max_new_tokens=16)))
    scores = [t.score for t in local.tokens]
    threshold = scores[-1]
    chunks = [local.generated[i : i + 4] for i in range(0, len(local.generated), 4)]
    result = run_to_end(
        engine(output_model, threshold=threshold).stream_upstream(
            MESSAGES, chunks, GuardConfig(max_new_tokens=16)
        )
    )
    assert result.finish_reason == "halted"
    assert result.max_output_score >= threshold
    assert result.text.endswith(GuardConfig().refusal)


def test_a_harmful_prompt_is_blocked_before_generating(output_model, input_guard):
    guard = engine(output_model, input_guard=input_guard)
    events = list(guard.stream(HARMFUL, GuardConfig(max_new_tokens=8)))
    assert [e.kind for e in events] == ["input", "end"]
    result = events[-1].result
    assert result.finish_reason == "blocked" and result.tokens == []
    assert result.input.category == "widgets" and result.input.blocked
    assert result.text == GuardConfig().refusal
    assert result.flag_reason == "input_blocked"


def test_a_benign_prompt_passes_the_input_guard(output_model, input_guard):
    result = run_to_end(
        engine(output_model, input_guard=input_guard).stream(
            MESSAGES, GuardConfig(max_new_tokens=4)
        )
    )
    assert result.input is not None and not result.input.flagged
    assert result.tokens


def test_shadow_mode_does_not_block_a_harmful_prompt(output_model, input_guard):
    result = run_to_end(
        engine(output_model, input_guard=input_guard).stream(
            HARMFUL, GuardConfig(mode="shadow", max_new_tokens=4)
        )
    )
    assert result.input.flagged and not result.input.blocked
    assert result.would_block and result.tokens


def test_a_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mode must be one of"):
        GuardConfig(mode="block-everything")
