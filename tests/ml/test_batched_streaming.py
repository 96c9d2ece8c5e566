"""Continuous batching of concurrent generations: each row must get exactly what it
would get alone (tokens; scores up to float rounding), whoever shares its batch."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.batching import ContinuousBatcher
from classifiers.ml.serving.stream import generate_plain, generate_with_scores
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


def _first_step_waits_for(batcher, n_others):
    """A should_stop for the first request (made before any is sent): its first
    check waits until the `n_others` requests sent with it have arrived too, so they
    all share the first step."""
    calls = [0]
    everyone = batcher.stats.submitted + n_others + 1

    def should_stop() -> bool:
        calls[0] += 1
        if calls[0] == 1:
            deadline = time.monotonic() + 20
            while batcher.stats.submitted < everyone and time.monotonic() < deadline:
                time.sleep(0.005)
        return False

    return should_stop


class Parking:
    """A should_stop that parks the batcher's worker at the start of a step (when
    `park` is set) until `release()`: the test acts while no step runs."""

    def __init__(self, at_call: int | None = None) -> None:
        self.calls = 0
        self.at_call = at_call
        self.park = threading.Event()
        self.parked = threading.Event()
        self.gate = threading.Event()

    def __call__(self) -> bool:
        self.calls += 1
        if self.calls == self.at_call:
            self.park.set()
        if self.park.is_set() and not self.gate.is_set():
            self.parked.set()
            self.gate.wait(20)
        return False

    def wait_parked(self) -> None:
        assert self.parked.wait(20), "the worker never reached the parking step"

    def release(self) -> None:
        self.gate.set()


def _run_concurrently(jobs):
    results: list = [None] * len(jobs)
    errors: list = []

    def run(i, job):
        try:
            results[i] = list(job())
        except BaseException as exc:  # surfaced below (pytest's failures included)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def test_concurrent_rows_get_what_they_would_get_alone(models, batcher):
    tok, lm, probe, _ = models
    want = [_solo(tok, probe, m) for m in PROMPTS]
    hold = _first_step_waits_for(batcher, 2)  # before anyone is sent
    jobs = [
        lambda m=m, i=i: batcher.stream(
            m, guard=probe, max_new_tokens=N_TOKENS,
            should_stop=hold if i == 0 else None,
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
    parking = Parking(at_call=9)  # the long one parks 8 tokens in
    first = batcher.stream(long_prompt, guard=probe, max_new_tokens=30, should_stop=parking)
    second = batcher.stream(short_prompt, guard=probe, max_new_tokens=N_TOKENS)
    got: dict[str, list] = {}
    reader = threading.Thread(target=lambda: got.update(long=list(first)))
    reader.start()
    parking.wait_parked()
    joiner = threading.Thread(target=lambda: got.update(short=list(second)))
    joiner.start()
    deadline = time.monotonic() + 20
    while not batcher._waiting and time.monotonic() < deadline:
        time.sleep(0.005)
    parking.release()  # the short one joins the long one's 10th step
    reader.join(60)
    joiner.join(60)
    assert batcher.stats.max_batch == 2
    _assert_same(got["long"], want_long)
    _assert_same(got["short"], want_short)


def test_rows_with_different_heads_and_unguarded_rows_share_a_batch(models, batcher):
    tok, lm, probe, other = models
    want = [
        _solo(tok, probe, PROMPTS[0]),
        _solo(tok, other, PROMPTS[1]),
        _solo_plain(tok, lm, PROMPTS[2]),
    ]
    hold = _first_step_waits_for(batcher, 2)  # before anyone is sent
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=hold),
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
    hold = _first_step_waits_for(batcher, 1)  # before anyone is sent
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               threshold=threshold, should_stop=hold),
        lambda: batcher.stream(PROMPTS[1], max_new_tokens=N_TOKENS),
    ])  # fmt: skip
    _assert_same(got[0], want_halted)
    _assert_same(got[1], _solo_plain(tok, lm, PROMPTS[1]))
    assert len(got[1]) == N_TOKENS


def test_seeded_sampling_does_not_depend_on_the_batch(models, batcher):
    tok, lm, probe, _ = models
    kw = dict(temperature=1.0, top_p=0.9, seed=7)
    want = [_solo(tok, probe, m, **kw) for m in PROMPTS[:2]]
    hold = _first_step_waits_for(batcher, 1)  # before anyone is sent
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=hold, **kw),
        lambda: batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=N_TOKENS, **kw),
    ])  # fmt: skip
    for g, w in zip(got, want, strict=True):
        _assert_same(g, w)


def test_a_stopped_or_abandoned_row_leaves_at_the_next_step(models, batcher):
    tok, lm, probe, _ = models
    want = _solo(tok, probe, PROMPTS[2], max_new_tokens=30)
    parking = Parking()
    stop = threading.Event()
    keeps = batcher.stream(PROMPTS[2], guard=probe, max_new_tokens=30, should_stop=parking)
    stops = batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=30, should_stop=stop.is_set)
    leaves = batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=30)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(keeps))
    reader.start()
    first_of_others = [next(stops), next(leaves)]  # both are in the batch
    parking.park.set()
    parking.wait_parked()  # no step runs now
    row_steps = batcher.stats.row_steps
    keeps_done = parking.calls - 2  # calls: one at admission, one per step so far
    leaves.close()  # the reader went away (a dropped client)
    stop.set()  # the user pressed Stop
    parking.release()
    reader.join(60)
    _assert_same(got, want)
    # From the parked step on only `keeps` was decoded: the other two left at once.
    assert batcher.stats.row_steps - row_steps == 30 - keeps_done
    rest = list(stops)
    assert len(first_of_others[0:1] + rest) < 30
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

    hold = _first_step_waits_for(batcher, 2)  # before anyone is sent
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=hold),
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


def test_a_broken_head_fails_its_own_rows_only(models, batcher):
    tok, lm, probe, _ = models
    broken = CausalLMWithValueHead(lm)

    def explode(*args, **kwargs):
        raise RuntimeError("head weights missing")

    broken.v_head.forward = explode
    hold = _first_step_waits_for(batcher, 1)  # before anyone is sent
    got = _run_concurrently([
        lambda: batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS,
                               should_stop=hold),
        lambda: _expect_error(batcher.stream(PROMPTS[1], guard=broken, max_new_tokens=N_TOKENS),
                              "head weights missing"),
    ])  # fmt: skip
    _assert_same(got[0], _solo(tok, probe, PROMPTS[0]))


def test_a_request_that_cannot_join_fails_alone(models, batcher):
    tok, lm, probe, _ = models
    original = batcher._join
    calls = [0]

    def flaky_join(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # the second request's merge into the batch fails
            raise RuntimeError("cannot allocate the merged cache")
        return original(*args, **kwargs)

    batcher._join = flaky_join
    parking = Parking(at_call=3)
    first = batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS, should_stop=parking)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(first))
    reader.start()
    parking.wait_parked()  # the first is decoding; now the second arrives
    second = batcher.stream(PROMPTS[1], guard=probe, max_new_tokens=N_TOKENS)
    failed = threading.Thread(target=_expect_error, args=(second, "cannot allocate"))
    failed.start()
    deadline = time.monotonic() + 20
    while not batcher._waiting and time.monotonic() < deadline:
        time.sleep(0.005)
    parking.release()
    failed.join(60)
    reader.join(60)
    _assert_same(got, _solo(tok, probe, PROMPTS[0]))


def test_an_unexpected_failure_fails_the_batch_but_not_the_batcher(models, batcher):
    tok, lm, probe, _ = models
    original = batcher._drop_finished
    calls = [0]

    def flaky_drop():
        calls[0] += 1
        if calls[0] == 4:
            raise RuntimeError("bookkeeping bug")
        return original()

    batcher._drop_finished = flaky_drop
    hold = _first_step_waits_for(batcher, 1)  # before anyone is sent
    _run_concurrently([
        lambda: _expect_error(
            batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS, should_stop=hold),
            "bookkeeping bug"),
        lambda: _expect_error(batcher.stream(PROMPTS[1], max_new_tokens=N_TOKENS),
                              "bookkeeping bug"),
    ])  # fmt: skip
    _assert_same(
        list(batcher.stream(PROMPTS[0], guard=probe, max_new_tokens=N_TOKENS)),
        _solo(tok, probe, PROMPTS[0]),
    )


def test_only_full_attention_models_are_batched():
    from types import SimpleNamespace

    from classifiers.ml.serving.batching import supports_batching

    assert supports_batching(SimpleNamespace(layer_types=["full_attention"] * 2))
    assert not supports_batching(SimpleNamespace(layer_types=["full_attention", "sliding_attention"]))
    assert not supports_batching(SimpleNamespace(sliding_window=4096))
    assert supports_batching(SimpleNamespace(sliding_window=4096, use_sliding_window=False))
    assert supports_batching(SimpleNamespace())


LONG = [{"role": "user", "content": " ".join(["describe the printing press and its history"] * 12)}]


def test_a_long_prompt_is_prefilled_in_chunks_and_gets_what_it_would_get_alone(models):
    tok, lm, probe, _ = models
    batcher = ContinuousBatcher(lm, tok, max_batch=8, prefill_chunk=8)
    try:
        got = list(batcher.stream(LONG, guard=probe, max_new_tokens=N_TOKENS))
    finally:
        batcher.close()
    _assert_same(got, _solo(tok, probe, LONG))


def test_running_streams_keep_decoding_while_a_long_prompt_prefills(models):
    """#26 item 2: one long prompt does not stall the others; it is prefilled a
    chunk per step and the running row decodes a token between chunks."""
    from classifiers.ml.output.encoding import prompt_token_ids

    tok, lm, _, _ = models
    chunk = 4
    batcher = ContinuousBatcher(lm, tok, max_batch=8, prefill_chunk=chunk)
    short_steps = [0]
    seen_by_long: list[int] = []

    def short_stop() -> bool:  # called on the worker thread before each of its steps
        short_steps[0] += 1
        return False

    def long_stop() -> bool:  # before each of its chunks, then each of its steps
        seen_by_long.append(short_steps[0])
        return False

    try:
        short = batcher.stream(PROMPTS[1], max_new_tokens=64, should_stop=short_stop)
        first = next(short)  # the short stream is running
        long_tokens = list(batcher.stream(LONG, max_new_tokens=4, should_stop=long_stop))
        rest = list(short)
    finally:
        batcher.close()
    chunks = -(-len(prompt_token_ids(tok, LONG)) // chunk)
    assert chunks > 10 and long_tokens and [first, *rest]
    # Between two chunks of the long prompt, the short row took a step.
    during = seen_by_long[: chunks]
    assert during[-1] - during[0] >= chunks - 2, (during, len(rest))


def test_the_counters_are_told_while_generating_and_when_idle(models):
    tok, lm, _, _ = models
    told = []
    batcher = ContinuousBatcher(lm, tok, max_batch=4, on_stats=lambda s: told.append(s.steps))
    try:
        tokens = list(batcher.stream(PROMPTS[0], max_new_tokens=6))
    finally:
        batcher.close()
    assert told and told[-1] == batcher.stats.steps >= len(tokens) - 1  # the final count too
