"""The served probe cascade: when the heavy classifier joins, what the stream scores,
how band, weight and threshold are calibrated, and the engine halting on it."""

from __future__ import annotations

import math

import pytest
import torch

from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.eval.cascade_calibration import calibrate_cascade, evaluate_cascade
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.batching import ContinuousBatcher
from classifiers.ml.serving.cascade import (
    CascadeSettings,
    StreamingCascade,
    ensemble_score,
    replay,
)
from classifiers.ml.serving.engine import (
    CascadeGuard,
    GuardConfig,
    GuardEngine,
    InputDecision,
    run_to_end,
)
from classifiers.ml.serving.stream import StreamingScorer, generate_with_scores
from tests.ml.test_value_head import make_tokenizer, tiny_lm

MESSAGES = [{"role": "user", "content": "tell me about the garden soup"}]


class RecordingHeavy:
    def __init__(self, scores):
        self.scores, self.started_with, self.pushed = scores, None, []

    def start(self, token_ids):
        self.started_with = list(token_ids)
        return self.scores[len(token_ids) - 1]

    def push(self, token_id):
        self.pushed.append(token_id)
        return self.scores[len(self.started_with) + len(self.pushed) - 1]


def test_a_stream_that_never_reaches_the_band_never_opens_the_heavy_classifier():
    opened = []
    cascade = StreamingCascade(CascadeSettings((0.4, 0.8), 0.5, 0.9), lambda: opened.append(1))
    scores = [cascade.step(t, p).score for t, p in enumerate([0.1, 0.3, 0.2, 0.35])]
    assert opened == [] and not cascade.escalated
    assert scores == [0.1, 0.3, 0.3, 0.35]  # the probe alone, as a running max


def test_entering_the_band_starts_the_heavy_classifier_on_the_whole_prefix_once():
    heavy = RecordingHeavy([0.9, 0.9, 0.95, 0.2, 0.1])
    opened = []
    cascade = StreamingCascade(
        CascadeSettings((0.4, 0.8), 0.25, 0.9), lambda: opened.append(heavy) or heavy
    )
    steps = [cascade.step(t, p) for t, p in zip([11, 12, 13, 14, 15], [0.1, 0.2, 0.5, 0.5, 0.6],
                                                 strict=True)]  # fmt: skip
    assert len(opened) == 1 and cascade.escalated_at == 2
    assert heavy.started_with == [11, 12, 13] and heavy.pushed == [14, 15]
    assert [s.escalated_now for s in steps] == [False, False, True, False, False]
    assert steps[1].heavy_score is None and steps[2].heavy_score == 0.95
    raw = ensemble_score(0.5, 0.95, 0.25)
    assert steps[2].score == pytest.approx(raw)
    # The heavy one later says benign, but the halting score is a running max.
    assert steps[4].score == pytest.approx(raw)
    assert cascade.heavy_tokens == 5


def test_a_probe_score_that_jumps_over_the_band_stands_alone():
    opened = []
    cascade = StreamingCascade(CascadeSettings((0.4, 0.6), 0.5, 0.5), lambda: opened.append(1))
    assert cascade.step(1, 0.1).score == 0.1
    assert cascade.step(2, 0.97).score == 0.97
    assert cascade.step(3, 0.97).score == 0.97
    assert opened == []


def test_settings_are_validated_and_round_trip():
    with pytest.raises(ValueError, match="band"):
        CascadeSettings((0.7, 0.3), 0.5, 0.5)
    with pytest.raises(ValueError, match="weight"):
        CascadeSettings((0.3, 0.7), 1.5, 0.5)
    s = CascadeSettings((0.3, 0.7), 0.25, 0.6)
    assert CascadeSettings.from_dict(s.to_dict()) == s


def _calibration_split(n_benign=40, n_harmful=20):
    """Per-token running scores: benign probe scores peak over 0.05..0.6, harmful
    ones rise through 0.57 to 0.57..0.95, so the probe confuses the middle; the
    heavy classifier separates it."""
    probe, heavy, labels = [], [], []
    for i in range(n_benign):
        peak = 0.05 + 0.55 * i / (n_benign - 1)
        probe.append([peak / 2, peak, peak])
        heavy.append([0.05, 0.1, 0.1])
        labels.append(0)
    for i in range(n_harmful):
        peak = max(0.57, 0.5 + 0.45 * i / (n_harmful - 1))
        probe.append([0.1, 0.57, peak])  # rising through the band
        heavy.append([0.2, 0.9, 0.95])
        labels.append(1)
    return probe, heavy, labels


def test_calibration_sets_the_benign_escalation_rate_and_the_target_fpr():
    probe, heavy, labels = _calibration_split()
    calibration = calibrate_cascade(probe, heavy, labels, target_fpr=0.05, escalate_fraction=0.1)
    settings, stats = calibration.settings, calibration.stats
    benign_peaks = [max(p) for p, y in zip(probe, labels, strict=True) if y == 0]
    assert settings.band[1] == pytest.approx(max(benign_peaks))  # hi: the top benign score
    assert stats["escalation_rate_benign"] == pytest.approx(0.1)  # 4 of 40
    assert stats["escalation_rate_harmful"] == 1.0  # every harmful stream rises through lo
    # The heavy classifier separates what the probe cannot: the cascade catches all.
    assert stats["tpr_at_threshold"] == 1.0
    finals = [replay(p, h, settings).final for p, h in zip(probe, heavy, strict=True)]
    benign = [f for f, y in zip(finals, labels, strict=True) if y == 0]
    assert sum(f >= settings.threshold for f in benign) / len(benign) <= 0.05
    assert {row["weight"] for row in calibration.weights} == {0.25, 0.5, 0.75}


def test_the_cascade_beats_the_probe_where_the_heavy_classifier_is_better():
    probe, heavy, labels = _calibration_split()
    settings = calibrate_cascade(probe, heavy, labels, target_fpr=0.05, escalate_fraction=0.1).settings
    report = evaluate_cascade(
        probe, heavy, labels, settings, probe_threshold=0.58, heavy_threshold=0.5, target_fpr=0.05
    )
    assert report["cascade"]["tpr_at_threshold"] > report["probe"]["tpr_at_threshold"]
    assert report["n"] == 60 and report["n_benign"] == 40
    # Heavy tokens: escalated streams only, from their first token.
    assert 0 < report["heavy_token_fraction"] < 1


def test_a_category_with_its_own_target_gets_its_own_cascade_threshold():
    probe, heavy, labels = _calibration_split()
    categories = ["pathogens" if i % 2 else "weapons" for i in range(len(labels))]
    common = dict(target_fpr=0.05, escalate_fraction=0.1, categories=categories)
    loose = calibrate_cascade(
        probe, heavy, labels, per_category_fpr={"pathogens": 0.5},
        predicted_categories=categories, **common,
    ).settings  # fmt: skip
    assert set(loose.per_category) == {"pathogens"}
    assert loose.per_category["pathogens"] < loose.threshold  # a looser target blocks more
    assert loose.threshold_for("pathogens") == loose.per_category["pathogens"]
    assert loose.threshold_for("weapons") == loose.threshold == loose.threshold_for(None)
    assert CascadeSettings.from_dict(loose.to_dict()) == loose
    assert hash(loose) == hash(CascadeSettings.from_dict(loose.to_dict()))  # still hashable
    # Calibrated on the cascade's scores of the benign streams assigned to it.
    finals = [replay(p, h, loose).final for p, h in zip(probe, heavy, strict=True)]
    assigned = [f for f, y, c in zip(finals, labels, categories, strict=True)
                if y == 0 and c == "pathogens"]  # fmt: skip
    assert sum(f >= loose.per_category["pathogens"] for f in assigned) / len(assigned) <= 0.5
    # Reported as served: each example judged at its input category's threshold.
    report = evaluate_cascade(
        probe, heavy, labels, loose, probe_threshold=0.5, heavy_threshold=0.5,
        target_fpr=0.05, predicted_categories=categories,
    )  # fmt: skip
    applied = [loose.threshold_for(c) for c in categories]
    benign = [f >= t for f, t, y in zip(finals, applied, labels, strict=True) if y == 0]
    assert report["cascade"]["fpr_at_threshold"] == pytest.approx(sum(benign) / len(benign))
    one = evaluate_cascade(probe, heavy, labels, loose, probe_threshold=0.5,
                           heavy_threshold=0.5, target_fpr=0.05)  # fmt: skip
    assert report["cascade"]["fpr_at_threshold"] >= one["cascade"]["fpr_at_threshold"]
    plain = calibrate_cascade(probe, heavy, labels, **common).settings
    assert plain.per_category == {} and plain.threshold == loose.threshold
    with pytest.raises(ValueError, match="categories"):
        calibrate_cascade(
            probe, heavy, labels, target_fpr=0.05, escalate_fraction=0.1,
            per_category_fpr={"pathogens": 0.5},
        )  # fmt: skip


def test_bad_calibration_input_is_a_clear_error():
    with pytest.raises(ValueError, match="benign"):
        calibrate_cascade([[0.9]], [[0.9]], [1], target_fpr=0.01, escalate_fraction=0.1)
    with pytest.raises(ValueError, match="same tokens"):
        calibrate_cascade([[0.1, 0.2]], [[0.1]], [0], target_fpr=0.01, escalate_fraction=0.1)
    with pytest.raises(ValueError, match="escalate_fraction"):
        calibrate_cascade([[0.1]], [[0.1]], [0], target_fpr=0.01, escalate_fraction=0.0)


# ------------------------------------------------------------------ in the engine


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    probe = CausalLMWithValueHead(tiny_lm(tok.vocab_size, seed=1), layers=(-1,))
    heavy = CausalLMWithValueHead(tiny_lm(tok.vocab_size, seed=2), layers=(-1,))
    torch.manual_seed(3)
    with torch.no_grad():  # spread the per-token scores so a threshold can cut them
        probe.v_head.summary.weight.normal_(0, 0.5)
        heavy.v_head.summary.weight.normal_(0, 0.5)
    return probe.eval(), heavy.eval(), tok


def _engine(models, settings, *, opened=None, batched=False):
    probe, heavy, tok = models
    cascade = CascadeGuard(settings, heavy, tok)
    if opened is not None:
        original = cascade.open
        cascade.open = lambda messages: opened.append(messages) or original(messages)
    return GuardEngine(
        input_guard=None, output_model=probe,
        output_thresholds=Thresholds(global_threshold=0.99, target_fpr=0.01),
        lm=probe.lm, tokenizer=tok, cascade=cascade,
        batcher=ContinuousBatcher(probe.lm, tok, max_batch=4) if batched else None,
    )  # fmt: skip


def _probe_and_heavy_scores(models, n=16):
    probe, heavy, tok = models
    tokens = list(generate_with_scores(probe, tok, MESSAGES, max_new_tokens=n, halt=False))
    scorer = StreamingScorer(heavy, tok)
    scorer.start(MESSAGES)
    heavy_scores = [t.score for t in scorer.push([t.token_id for t in tokens])]
    return tokens, heavy_scores


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "continuous-batching"])
def test_the_engine_scores_a_stream_exactly_as_the_replay_of_both_classifiers(models, batched):
    tokens, heavy_scores = _probe_and_heavy_scores(models)
    probe_scores = [t.score for t in tokens]
    lo = probe_scores[len(probe_scores) // 2]  # escalate half-way through
    settings = CascadeSettings((lo, 1.0), 0.5, 2.0)  # a threshold that never halts
    opened = []
    result = run_to_end(_engine(models, settings, opened=opened, batched=batched).stream(
        MESSAGES, GuardConfig(max_new_tokens=len(tokens))))  # fmt: skip
    expected = replay(probe_scores, heavy_scores, settings)
    assert [t.token_id for t in result.tokens] == [t.token_id for t in tokens]
    assert [t.score for t in result.tokens] == pytest.approx(expected.scores, abs=1e-5)
    assert len(opened) == 1 and result.cascaded
    assert result.escalated_at == expected.escalated_at
    assert result.tokens[expected.escalated_at].heavy is not None
    assert result.tokens[expected.escalated_at - 1].heavy is None if expected.escalated_at else True


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "continuous-batching"])
def test_the_engine_halts_on_the_cascade_score_and_never_escalates_below_the_band(models, batched):
    tokens, heavy_scores = _probe_and_heavy_scores(models)
    probe_scores = [t.score for t in tokens]
    settings = CascadeSettings((probe_scores[3], 1.0), 0.5, 0.0)
    expected = replay(probe_scores, heavy_scores, settings)
    threshold = expected.scores[8]
    settings = CascadeSettings(settings.band, 0.5, threshold)
    engine = _engine(models, settings, batched=batched)
    result = run_to_end(engine.stream(MESSAGES, GuardConfig(max_new_tokens=16)))
    first = next(i for i, s in enumerate(expected.scores) if s >= threshold)
    assert result.finish_reason == "halted" and result.halted_at == first
    assert len(result.tokens) == first + 1 and result.output_threshold == threshold

    opened = []
    quiet = CascadeSettings((1.0, 1.0), 0.5, 2.0)  # no probe score reaches the band
    result = run_to_end(_engine(models, quiet, opened=opened).stream(
        MESSAGES, GuardConfig(max_new_tokens=16)))  # fmt: skip
    assert opened == [] and result.escalated_at is None
    assert [t.score for t in result.tokens] == pytest.approx(probe_scores, abs=1e-6)


class _CategoryOnly:
    """The input classifier's verdict on the prompt: a category, never a block."""

    def __init__(self, category):
        self.category = category

    def decide(self, conversations, *, mode):
        return [InputDecision(0.0, self.category, 1.0, 1.0, False, False) for _ in conversations]


def test_the_engine_halts_on_the_threshold_of_the_prompt_s_category(models):
    tokens, heavy_scores = _probe_and_heavy_scores(models)
    probe_scores = [t.score for t in tokens]
    band = (probe_scores[3], 1.0)
    expected = replay(probe_scores, heavy_scores, CascadeSettings(band, 0.5, 0.0))
    strict = expected.scores[8]
    settings = CascadeSettings(band, 0.5, 2.0, {"garden": strict})  # 2.0 never halts
    first = next(i for i, v in enumerate(expected.scores) if v >= strict)
    # A "garden" prompt halts at its own threshold; any other falls back to 2.0.
    for category, halted_at, threshold in (("garden", first, strict), ("weather", None, 2.0)):
        engine = _engine(models, settings)
        engine.input_guard = _CategoryOnly(category)
        result = run_to_end(engine.stream(MESSAGES, GuardConfig(max_new_tokens=16)))
        assert result.halted_at == halted_at, category
        assert result.output_threshold == threshold


def test_the_upstream_path_runs_the_cascade_too(models):
    probe, heavy, tok = models
    tokens, heavy_scores = _probe_and_heavy_scores(models)
    text = tok.decode([t.token_id for t in tokens])
    settings = CascadeSettings((0.0, 1.0), 0.5, 2.0)  # escalate at once
    result = run_to_end(_engine(models, settings).stream_upstream(
        MESSAGES, [text[i:i + 5] for i in range(0, len(text), 5)], GuardConfig()))  # fmt: skip
    assert result.cascaded and result.escalated_at == 0
    assert result.generated == text
    scored = [t for t in result.tokens if t.heavy is not None]
    assert scored and all(not math.isnan(t.score) for t in result.tokens)


def test_upstream_halting_mid_chunk_delivers_nothing_past_the_halt(models):
    probe, heavy, tok = models
    tokens, heavy_scores = _probe_and_heavy_scores(models)
    text = tok.decode([t.token_id for t in tokens])
    chunks = [text[i:i + 12] for i in range(0, len(text), 12)]
    first = run_to_end(_engine(models, CascadeSettings((0.0, 1.0), 0.5, 2.0)).stream_upstream(
        MESSAGES, chunks, GuardConfig()))  # fmt: skip
    scored = [t for t in first.tokens if t.token_id >= 0]
    # Halt where the running max rises, so that token is the first to cross.
    rising = [i for i in range(1, len(scored)) if scored[i].score > scored[i - 1].score]
    assert rising
    halt = rising[len(rising) // 2]
    threshold = scored[halt].score
    result = run_to_end(_engine(models, CascadeSettings((0.0, 1.0), 0.5, threshold)).stream_upstream(
        MESSAGES, chunks, GuardConfig(mode="enforce")))  # fmt: skip
    assert result.finish_reason == "halted" and result.tokens[-1].halted
    # The crossing token releases nothing: exactly the text of the tokens before it
    # was delivered, even though the rest of its chunk had arrived.
    assert result.tokens[-1].text == ""
    assert result.generated == "".join(t.text for t in scored[:halt])
    assert text.startswith(result.generated) and len(result.generated) < len(text)


def test_a_rollback_makes_the_heavy_classifier_forget_the_replaced_tokens():
    class RollingHeavy(RecordingHeavy):
        rolled = 0

        def rollback(self, n):
            self.rolled += n

    heavy = RollingHeavy([0.5] * 10)
    cascade = StreamingCascade(CascadeSettings((0.2, 0.8), 0.5, 0.9), lambda: heavy)
    cascade.step(1, 0.1)
    cascade.step(2, 0.3)  # escalates on [1, 2]
    cascade.step(3, 0.3)
    cascade.rollback(2)
    assert cascade.token_ids == [1] and heavy.rolled == 2
    before = cascade.value
    cascade.rollback(0)
    assert cascade.value == before  # a score already shown is never taken back
