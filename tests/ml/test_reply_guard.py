"""ReplyGuard: text from elsewhere is released only after the tokens ending it are scored."""

from __future__ import annotations

import math

import pytest

from classifiers.ml.serving.reply import ReplyGuard
from classifiers.ml.serving.stream import StreamingScorer
from tests.ml.test_streaming import MESSAGES, RESPONSE, spread_probe


def guard(threshold=math.inf, *, enforce=True):
    model, tok = spread_probe()
    scorer = StreamingScorer(model, tok)
    scorer.start(MESSAGES)
    return ReplyGuard(scorer, threshold=threshold, enforce=enforce)


def scored_ends(reply: ReplyGuard) -> int:
    return reply.scorer.ends[-1] if reply.scorer.ends else 0


def test_nothing_is_released_before_the_tokens_that_end_it_are_scored():
    reply = guard()
    released, covered = "", 0
    for ch in RESPONSE:  # character by character, the hardest case for merges
        for token in reply.feed(ch):
            released += token.text
        # Released text never reaches past the furthest scored token (the token
        # still held back, which may merge with what follows, releases nothing; a
        # re-tokenisation may re-score text that already left, never release more).
        covered = max(covered, scored_ends(reply))
        assert len(released) == reply.released <= covered
        assert RESPONSE.startswith(released)
    assert len(released) < len(RESPONSE)  # the last token waits for the end
    for token in reply.finish():
        released += token.text
    assert released == RESPONSE
    assert reply.halted_at is None


def test_the_crossing_token_and_everything_after_it_are_withheld():
    scores = [t.score for t in guard(enforce=False).feed(RESPONSE, final=True)]
    rising = [i for i in range(1, len(scores)) if scores[i] > scores[i - 1]]
    halt = rising[len(rising) // 2]
    reply = guard(scores[halt])
    out = reply.feed(RESPONSE)  # the whole reply arrives in one chunk
    assert out[-1].halted and out[-1].index == halt and out[-1].text == ""
    released = "".join(t.text for t in out)
    assert RESPONSE.startswith(released) and len(released) < len(RESPONSE)
    assert reply.stopped and reply.halted_at == halt
    assert reply.feed(" more text") == [] and reply.finish() == []


def test_shadow_scoring_reports_the_crossing_but_releases_everything():
    scores = [t.score for t in guard(enforce=False).feed(RESPONSE, final=True)]
    reply = guard(max(scores), enforce=False)
    out = reply.feed(RESPONSE[:30]) + reply.feed(RESPONSE[30:]) + reply.finish()
    assert "".join(t.text for t in out) == RESPONSE
    assert reply.halted_at is not None and not reply.stopped
    assert reply.max_score == max(scores)


def test_chunks_and_one_piece_give_the_same_scores():
    whole = guard().feed(RESPONSE, final=True)
    chunked_guard = guard()
    chunked = []
    for i in range(0, len(RESPONSE), 7):
        chunked += chunked_guard.feed(RESPONSE[i : i + 7])
    chunked += chunked_guard.finish()
    assert chunked_guard.scorer.scores == pytest.approx([t.score for t in whole], abs=1e-4)
