"""Incremental scoring (KV cache), push_text re-tokenisation, guarded generation."""

from __future__ import annotations

import math

import pytest
import torch

from classifiers.ml.output.encoding import prompt_token_ids, response_token_ids
from classifiers.ml.output.scoring import (
    CummaxAggregator,
    EmaAggregator,
    aggregate_scores,
)
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.stream import (
    StreamingScorer,
    generate_plain,
    generate_with_scores,
)
from classifiers.ml.serving.tokens import IncrementalDecoder
from tests.ml.test_value_head import make_tokenizer, tiny_lm

MESSAGES = [{"role": "user", "content": "tell me about vaccines"}]
RESPONSE = (
    "the immunization schedule for vaccines is well documented, "
    "unbelievably thorough 2024-05-01 ok"
)


def spread_probe():
    """A tiny LM with a two-layer probe whose scores visibly vary (seeded)."""
    tok = make_tokenizer()
    model = CausalLMWithValueHead(tiny_lm(tok.vocab_size, seed=1), layers=(1, -1))
    torch.manual_seed(2)
    with torch.no_grad():  # a visible spread of scores, so comparisons mean something
        model.v_head.summary.weight.normal_(0, 0.5)
    return model.eval(), tok


@pytest.fixture(scope="module")
def setup():
    return spread_probe()


def _full_forward_probs(model, tok, response_ids):
    prompt = prompt_token_ids(tok, MESSAGES)
    ids = torch.tensor([prompt + response_ids])
    with torch.no_grad():
        values = model(ids).values[0, len(prompt) :]
    return torch.sigmoid(values)


def test_push_one_token_at_a_time_matches_full_forward(setup):
    model, tok = setup
    response = response_token_ids(tok, RESPONSE)
    want = _full_forward_probs(model, tok, response)
    scorer = StreamingScorer(model, tok)
    scorer.start(MESSAGES)
    got = [s for t in response for s in scorer.push([t])]
    assert [s.token_id for s in got] == response
    assert [s.index for s in got] == list(range(len(response)))
    assert torch.allclose(torch.tensor([s.prob for s in got]), want, atol=1e-4)
    assert [s.score for s in got] == pytest.approx(
        torch.cummax(want, 0).values.tolist(), abs=1e-4
    )
    assert want.std() > 0.01  # the scores actually vary
    # Chunks of several tokens give the same scores.
    scorer.start(MESSAGES)
    chunked = scorer.push(response[:5]) + scorer.push(response[5:])
    assert torch.allclose(torch.tensor([s.prob for s in chunked]), want, atol=1e-4)


def test_push_text_equals_push_of_final_tokenisation(setup):
    model, tok = setup
    reference = StreamingScorer(model, tok, aggregator="ema", ema_alpha=0.3)
    reference.start(MESSAGES)
    reference.push(response_token_ids(tok, RESPONSE))
    scorer = StreamingScorer(model, tok, aggregator="ema", ema_alpha=0.3)
    scorer.start(MESSAGES)
    rollbacks = []
    original = scorer._rollback
    scorer._rollback = lambda n: (rollbacks.append(n), original(n))  # type: ignore
    for ch in RESPONSE:  # character by character: merges force rollbacks
        scorer.push_text(ch)
    scorer.finish()
    # Holding back the last word settles every token before it: no rollback
    # (character by character, a one-token hold-back rolled back several times).
    assert not rollbacks
    assert scorer.token_ids == reference.token_ids
    assert scorer.probs == pytest.approx(reference.probs, abs=1e-4)
    assert scorer.scores == pytest.approx(reference.scores, abs=1e-4)
    prompt_len = len(prompt_token_ids(tok, MESSAGES))
    assert scorer._cache.get_seq_length() == prompt_len + len(scorer.token_ids)


def test_aggregators():
    agg = CummaxAggregator()
    assert [agg.update(p) for p in [0.1, 0.5, 0.2]] == [0.1, 0.5, 0.5]
    ema = EmaAggregator(alpha=0.5)
    assert ema.update(0.3) == pytest.approx(0.3)
    # Weights: 0.5 * odds(0.3) for the old token, odds(0.8) = 4 for the new one.
    odds_old = 0.3 / 0.7
    want = (0.5 * odds_old * 0.3 + 4 * 0.8) / (0.5 * odds_old + 4)
    assert ema.update(0.8) == pytest.approx(want)
    assert aggregate_scores([0.1, 0.5, 0.2]) == [0.1, 0.5, 0.5]


def test_incremental_decoder_handles_multibyte_tokens():
    class ByteTok:  # each token is one byte of UTF-8
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    text = "naïve ☕ ok"
    dec = IncrementalDecoder(ByteTok())
    pieces = [dec.add(b) for b in text.encode("utf-8")]
    assert "".join(pieces) == text
    assert "\ufffd" not in "".join(pieces)


def test_generate_with_scores_halts_at_first_crossing(setup):
    model, tok = setup
    free = list(
        generate_with_scores(
            model, tok, MESSAGES, max_new_tokens=20, halt=False, threshold=0.0
        )
    )
    assert len(free) == 20 and not any(t.halted for t in free)
    scores = [t.score for t in free]
    assert scores == sorted(scores)  # cummax never decreases
    # Threshold: the score at the first strict rise after the start.
    k = next(i for i in range(1, 20) if scores[i] > scores[i - 1] + 1e-6)
    threshold = scores[k]
    halted = list(
        generate_with_scores(
            model, tok, MESSAGES, max_new_tokens=20, threshold=threshold
        )
    )
    first = next(i for i, s in enumerate(scores) if s >= threshold)
    assert len(halted) == first + 1
    assert halted[-1].halted and not any(t.halted for t in halted[:-1])
    assert [t.token_id for t in halted] == [t.token_id for t in free[: first + 1]]
    # The generator's own scores equal a full forward over prompt + response.
    want = _full_forward_probs(model, tok, [t.token_id for t in free])
    assert torch.allclose(torch.tensor([t.prob for t in free]), want, atol=1e-4)
    # Unguarded path: same tokens, no scores.
    plain = list(generate_plain(model, tok, MESSAGES, max_new_tokens=20))
    assert [t.token_id for t in plain] == [t.token_id for t in free]
    assert all(math.isnan(t.prob) for t in plain)
    assert "".join(t.text for t in free) == tok.decode(
        [t.token_id for t in free], skip_special_tokens=True
    )


def test_sampling_is_seeded_and_stops_on_request(setup):
    model, tok = setup

    def run(seed):
        return [
            (t.token_id, t.score)
            for t in generate_with_scores(
                model,
                tok,
                MESSAGES,
                max_new_tokens=12,
                temperature=1.0,
                top_p=0.9,
                seed=seed,
            )
        ]

    assert run(5) == run(5)
    assert run(5) != run(6)
    calls = iter(range(100))
    stopped = list(
        generate_with_scores(
            model,
            tok,
            MESSAGES,
            max_new_tokens=12,
            should_stop=lambda: next(calls) >= 3,
        )
    )
    assert len(stopped) == 3


def test_a_rollback_crops_the_cache_and_rescoring_gives_the_same_scores(setup):
    model, tok = setup
    scorer = StreamingScorer(model, tok)
    scorer.start(MESSAGES)
    scorer.push_text(RESPONSE, final=True)
    before = list(scorer.scores)
    kept = scorer.token_ids[:-3]
    tail = scorer.token_ids[-3:]
    scorer.rollback(3)
    assert scorer.token_ids == kept and len(scorer.ends) == len(kept)
    rescored = scorer.push(tail)
    assert [t.score for t in rescored] == pytest.approx(before[-3:], abs=1e-4)
