"""Continuous batching of concurrent generations: each row must get exactly what it
would get alone (tokens; scores up to float rounding), whoever shares its batch."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from classifiers.ml.batched_streaming import ContinuousBatcher
from classifiers.ml.streaming import generate_plain, generate_with_scores
from classifiers.ml.value_head import CausalLMWithValueHead
from tests.ml.test_value_head import make_tokenizer, tiny_lm

PROMPTS = [
    [{"role": "user", "content": "tell me about vaccines"}],
    [{"role": "user", "content": "hi"}],
    [
        {"role": "user", "content": "what is the history of the printing press in europe"},
        {"role": "assistant", "content": "it began in mainz"},
        {"role": "user", "content": "and after that, how did it spread to other cities"},
    ],
]
N_TOKENS = 16


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    lm = tiny_lm(tok.vocab_size, seed=3)
    probe = CausalLMWithValueHead(lm, layers=(1, -1))
    other = CausalLMWithValueHead(lm, layers=(0,))  # another constitution's probe
    torch.manual_seed(4)
    with torch.no_grad():  # a visible spread of scores, so comparisons mean something
        probe.v_head.summary.weight.normal_(0, 0.5)
        other.v_head.summary.weight.normal_(0, 0.5)
    return tok, lm, probe.eval(), other.eval()


@pytest.fixture
def batcher(models):
    tok, lm, _, _ = models
    b = ContinuousBatcher(lm, tok, max_batch=8)
    yield b
    b.close()


def _solo(tok, model, messages, **kw):
    """What the unbatched path gives one request alone."""
    kw.setdefault("max_new_tokens", N_TOKENS)
    return list(generate_with_scores(model, tok, messages, **kw))


def _solo_plain(tok, lm, messages):
    return list(generate_plain(lm, tok, messages, max_new_tokens=N_TOKENS))


def _assert_same(got, want):
    assert [t.token_id for t in got] == [t.token_id for t in want]
    assert [t.text for t in got] == [t.text for t in want]
    assert [t.halted for t in got] == [t.halted for t in want]
    for g, w in zip(got, want, strict=True):
        if w.prob != w.prob:  # unguarded: NaN both
            assert g.prob != g.prob
        else:
            assert g.prob == pytest.approx(w.prob, abs=1e-4)
            assert g.score == pytest.approx(w.score, abs=1e-4)


def _slow_first_step():
    """A should_stop that stalls the batcher's first step, so requests sent meanwhile
    are all waiting when it resumes and join the same batch."""
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        if calls[0] == 1:
            time.sleep(0.3)
        return False

    return should_stop


def _run_concurrently(jobs):
    results: list = [None] * len(jobs)
    errors: list = []

    def run(i, job):
        try:
            results[i] = list(job())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for i, thread in enumerate(threads):
        thread.start()
        if i == 0:
            time.sleep(0.05)  # the first one is admitted and stalls its step
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_rows_get_what_they_would_get_alone(models, batcher):
    tok, lm, probe, _ = models
    want = [_solo(tok, probe, m) for m in PROMPTS]
    jobs = [
        lambda m=m, i=i: batcher.stream(
            m, guard=probe, max_new_tokens=N_TOKENS,
            should_stop=_slow_first_step() if i == 0 else None,
        )  # fmt: skip
        for i, m in enumerate(PROMPTS)
    ]
    got = _run_concurrently(jobs)
    assert batcher.stats.max_batch == 3  # really one batch
    for g, w in zip(got, want, strict=True):
        assert len(g) == N_TOKENS
        _assert_same(g, w)


def test_a_request_joining_mid_stream_changes_nothing_for_either_row(models, batcher):
    tok, lm, probe, _ = models
    long_prompt, short_prompt = PROMPTS[2], PROMPTS[1]
    want_long = _solo(tok, probe, long_prompt, max_new_tokens=30)
    want_short = _solo(tok, probe, short_prompt)
    first = batcher.stream(long_prompt, guard=probe, max_new_tokens=30)
    got_long = [next(first) for _ in range(8)]  # the long one is 8 tokens in
    second = batcher.stream(short_prompt, guard=probe, max_new_tokens=N_TOKENS)
    got_short = [next(second)]  # the short one has joined
    got_long += list(first)
    got_short += list(second)
    assert batcher.stats.max_batch == 2
    _assert_same(got_long, want_long)
    _assert_same(got_short, want_short)


def test_rows_with_different_heads_and_unguarded_rows_share_a_batch(models, batcher):
    tok, lm, probe, other = models
    want = [
        _solo(tok, probe, PROMPTS[0]),
        _solo(tok, other, PROMPTS[1]),
        _solo_plain(tok, lm, PROMPTS[2]),
    ]
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=_slow_first_step()),
        lambda: batcher.stream(PROMPTS[1], guard=other, max_new_tokens=N_TOKENS),
        lambda: batcher.stream(PROMPTS[2], max_new_tokens=N_TOKENS),
    ])  # fmt: skip
    assert batcher.stats.max_batch == 3
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)


def test_a_row_halts_at_its_own_threshold_while_the_others_go_on(models, batcher):
    tok, lm, probe, _ = models
    reference = _solo(tok, probe, PROMPTS[0])
    # Halt where the running max first reaches its value at token 5.
    threshold = reference[5].score - 1e-6
    halt_at = next(t.index for t in reference if t.score >= threshold)
    want_halted = _solo(tok, probe, PROMPTS[0], threshold=threshold)
    assert want_halted[-1].halted and want_halted[-1].index == halt_at
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               threshold=threshold, should_stop=_slow_first_step()),
        lambda: batcher.stream(PROMPTS[1], max_new_tokens=N_TOKENS),
    ])  # fmt: skip
    _assert_same(got[0], want_halted)
    _assert_same(got[1], _solo_plain(tok, lm, PROMPTS[1]))
    assert len(got[1]) == N_TOKENS


def test_seeded_sampling_does_not_depend_on_the_batch(models, batcher):
    tok, lm, probe, _ = models
    kw = dict(temperature=1.0, top_p=0.9, seed=7)
    want = [_solo(tok, probe, m, **kw) for m in PROMPTS[:2]]
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=_slow_first_step(), **kw),
        lambda: batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=N_TOKENS, **kw),
    ])  # fmt: skip
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)


def test_a_stopped_or_abandoned_row_leaves_and_the_rest_finish(models, batcher):
    tok, lm, probe, _ = models
    want = _solo(tok, probe, PROMPTS[2], max_new_tokens=30)
    stop = threading.Event()
    keeps = batcher.stream(PROMPTS[2], guard=probe, max_new_tokens=30)
    stops = batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=30, should_stop=stop.is_set)
    leaves = batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=30)
    got = [next(keeps)]
    stopped = [next(stops), next(stops)]
    next(leaves)
    leaves.close()  # the reader went away (a dropped client)
    stop.set()
    stopped += list(stops)
    got += list(keeps)
    _assert_same(got, want)
    assert len(stopped) < 30
    deadline = time.monotonic() + 5
    while batcher._rows and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher._rows == []  # nobody left behind decoding for no one


def test_a_failed_forward_fails_its_rows_and_the_batcher_keeps_serving(models, batcher):
    tok, lm, probe, _ = models
    original = batcher.lm.forward
    calls = [0]

    def flaky(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:  # prefill, step 1 fine; step 2 fails
            raise RuntimeError("out of memory (simulated)")
        return original(*args, **kwargs)

    batcher.lm.forward = flaky
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            list(batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS))
    finally:
        del batcher.lm.forward
    _assert_same(
        list(batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS)),
        _solo(tok, probe, PROMPTS[0]),
    )


def test_a_head_on_another_model_is_refused(models, batcher):
    tok, _, _, _ = models
    stranger = CausalLMWithValueHead(tiny_lm(tok.vocab_size, seed=9))
    with pytest.raises(ValueError, match="this batcher's model"):
        batcher.stream(PROMPTS[0], guard=stranger, max_new_tokens=4)


def test_a_bad_request_fails_alone(models, batcher):
    tok, lm, probe, _ = models

    def broken_stop() -> bool:
        raise RuntimeError("callback broke")

    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=_slow_first_step()),
        lambda: _expect_error(batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=N_TOKENS,
                                             should_stop=broken_stop), "callback broke"),
        lambda: _expect_error(batcher.stream(None, max_new_tokens=N_TOKENS), None),
    ])  # fmt: skip
    _assert_same(got[0], _solo(tok, probe, PROMPTS[0]))
    assert list(batcher.stream(PROMPTS[1], max_new_tokens=0)) == []


def _expect_error(tokens, match):
    with pytest.raises(Exception, match=match):
        list(tokens)
    return []
