"""The guard engine: input classifier before generation, streaming output classifier during.

Plain Python + torch. Given a conversation it

1. scores the prompt with the input classifier and, in enforce mode, blocks before
   generating when the score crosses the (per-category) threshold;
2. otherwise streams tokens while the output classifier scores every prefix, and
   halts at the first token whose aggregated (cumulative-max) score crosses the
   output threshold, ending the reply with a refusal.

Two generator paths:
- local: the generator is the output classifier's own backbone, so the value head
  reads the generator's hidden states (`serving.stream.generate_with_scores`: one forward
  per token, shared activations);
- upstream: text streamed from an OpenAI-compatible endpoint is re-tokenised and
  scored incrementally by a separate classifier with its own KV cache
  (`streaming.StreamingScorer.push_text`).

Modes: "enforce" blocks and halts; "shadow" scores and reports what it would have
done but never changes the reply; "off" generates without scoring.
Scores are reproducible: greedy decoding by default, fixed seeds when sampling.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from classifiers.ml.eval.calibrate import Thresholds
from classifiers.ml.input.scoring import score_texts
from classifiers.ml.output.scoring import reaches
from classifiers.ml.serving.cascade import CascadeSettings, StreamingCascade
from classifiers.ml.serving.reply import ReplyGuard
from classifiers.ml.serving.stream import StreamingScorer, generate_plain
from classifiers.ml.serving.stream import generate_with_scores as _generate_with_scores
from classifiers.ml.serving.tokens import TokenScore
from classifiers.ml.types import Message, render_messages

logger = logging.getLogger(__name__)

Mode = Literal["enforce", "shadow", "off"]
MODES: tuple[str, ...] = ("enforce", "shadow", "off")
DEFAULT_REFUSAL = (
    "I can't help with that. This request falls under content our usage policy "
    "restricts."
)


@dataclass
class GuardConfig:
    mode: str = "enforce"  # enforce | shadow | off
    max_new_tokens: int = 128  # cap on the reply length
    temperature: float = 0.0  # 0 = greedy, so the same conversation scores the same
    top_p: float = 1.0  # nucleus sampling cut-off when temperature > 0
    seed: int | None = 0  # sampling seed (reproducible scores when sampling)
    near_margin: float = 0.1  # scores within this of a threshold are "near-threshold"
    refusal: str = DEFAULT_REFUSAL  # what a blocked or halted reply ends with

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")


@dataclass
class InputDecision:
    score: float  # max over the prompt's canonical views, 0..1
    category: str  # the most likely category (multi-class head)
    category_prob: float
    threshold: float  # the threshold that applied (per-category when set)
    flagged: bool  # score >= threshold
    blocked: bool  # flagged and the mode enforces
    view: str = ""  # the canonical view that gave the max (decoded text, say)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuardResult:
    """Everything about one guarded reply, for storage and review."""

    text: str = ""  # the reply as delivered (refusal appended when halted/blocked)
    generated: str = ""  # what the model generated (before halting)
    input: InputDecision | None = None
    tokens: list[TokenScore] = field(default_factory=list)
    output_threshold: float | None = None
    finish_reason: str = ""  # stop | length | blocked | halted | cancelled
    would_block: bool = False  # shadow mode: enforce would have blocked/halted here
    halted_at: int | None = None  # token index where the output classifier crossed
    max_output_score: float | None = None
    near_threshold: bool = False
    cascaded: bool = False  # the output was scored by the probe cascade
    escalated_at: int | None = None  # token index where the heavy classifier joined

    @property
    def flag_reason(self) -> str | None:
        if self.finish_reason == "blocked" or (self.input and self.input.flagged):
            return "input_blocked"
        if self.halted_at is not None:
            return "output_halted"
        if self.near_threshold:
            return "near_threshold"
        return None


@dataclass
class GuardEvent:
    """One step of a guarded stream: "input", "token", or "end"."""

    kind: str
    input: InputDecision | None = None
    token: TokenScore | None = None
    result: GuardResult | None = None


class InputGuard:
    """The input classifier plus its calibrated thresholds."""

    def __init__(self, model: Any, tokenizer: Any, thresholds: Thresholds):
        self.model = model
        self.tokenizer = tokenizer
        self.thresholds = thresholds

    def decide(self, conversations: list[list[Message]], *, mode: str) -> list[InputDecision]:
        """Batch-score prompts (all canonical views in one pass)."""
        texts = [render_messages(messages) for messages in conversations]
        scores = score_texts(self.model, self.tokenizer, texts)
        decisions = []
        for s in scores:
            threshold = self.thresholds.for_category(s.category)
            flagged = s.score >= threshold
            # A flagged prompt names the restricted category it is closest to; one
            # that passes names its most likely category, permitted ones included.
            category, category_prob = s.flagged_as() if flagged else (s.category, s.category_prob)
            decisions.append(
                InputDecision(
                    score=s.score, category=category, category_prob=category_prob,
                    threshold=threshold, flagged=flagged,
                    blocked=flagged and mode == "enforce",
                    view=s.view if s.view_index else "",
                )  # fmt: skip
            )
        return decisions


class CascadeGuard:
    """The heavy half of a served probe cascade: a separate output classifier (own
    weights, own KV cache per stream) that joins a stream when the probe (the
    engine's output model) becomes uncertain. See serving/cascade.py."""

    def __init__(
        self,
        settings: CascadeSettings,
        heavy_model: Any,  # CausalLMWithValueHead
        tokenizer: Any,
        *,
        aggregator: str = "cummax",
        ema_alpha: float | None = None,
    ) -> None:
        self.settings = settings
        self.heavy_model = heavy_model
        self.tokenizer = tokenizer
        self.aggregator = aggregator
        self.ema_alpha = ema_alpha
        # One heavy model serves every stream that escalated; its forwards take turns.
        self.lock = threading.Lock()

    def open(self, messages: list[Message]) -> _HeavyScorerStream:
        return _HeavyScorerStream(self, messages)


class _HeavyScorerStream:
    """serving.cascade.HeavyStream over a StreamingScorer: the prompt and the
    response so far are encoded once at escalation, then one token per forward."""

    def __init__(self, cascade: CascadeGuard, messages: list[Message]) -> None:
        self.cascade = cascade
        self.messages = messages
        kwargs = {"ema_alpha": cascade.ema_alpha} if cascade.ema_alpha else {}
        self.scorer = StreamingScorer(
            cascade.heavy_model, cascade.tokenizer, aggregator=cascade.aggregator, **kwargs
        )

    def start(self, token_ids: list[int]) -> float:
        with self.cascade.lock:
            self.scorer.start(self.messages)
            return self.scorer.push(token_ids)[-1].score

    def push(self, token_id: int) -> float:
        with self.cascade.lock:
            return self.scorer.push([token_id])[-1].score

    def rollback(self, n_tokens: int) -> None:
        with self.cascade.lock:
            self.scorer.rollback(n_tokens)


class GuardEngine:
    """Input + output classifiers around a generator. Thread-safe.

    With a `batcher` (a ContinuousBatcher on `lm`), local generations from any
    number of threads and engines on the same model are decoded together, one
    forward per step. Without one, streams on this engine take turns (a lock)."""

    def __init__(
        self,
        *,
        input_guard: InputGuard | None,
        output_model: Any | None,  # CausalLMWithValueHead (shares the generator)
        output_thresholds: Thresholds | None,
        lm: Any,  # the generator (bare causal LM); output_model.lm when it exists
        tokenizer: Any,
        aggregator: str = "cummax",
        ema_alpha: float | None = None,
        batcher: Any | None = None,  # serving.batching.ContinuousBatcher on `lm`
        cascade: CascadeGuard | None = None,  # output_model is its probe
    ) -> None:
        self.input_guard = input_guard
        self.output_model = output_model
        self.output_thresholds = output_thresholds
        self.lm = lm
        self.tokenizer = tokenizer
        self.aggregator = aggregator
        self.ema_alpha = ema_alpha
        self.batcher = batcher
        self.cascade = cascade if output_model is not None else None
        self.lock = threading.Lock()

    # -- input only -------------------------------------------------------------------

    def classify(self, conversations: list[list[Message]], *, mode: str = "enforce") -> list[InputDecision]:
        if self.input_guard is None:
            raise RuntimeError("no input classifier is active for this constitution")
        return self.input_guard.decide(conversations, mode=mode)

    # -- local generation, shared activations -------------------------------------------

    def stream(
        self,
        messages: list[Message],
        config: GuardConfig,
        *,
        should_stop: Callable[[], bool] | None = None,
        input_decision: InputDecision | None = None,
    ) -> Iterator[GuardEvent]:
        """Guarded generation with the local model; yields input, tokens, end."""
        result = GuardResult()
        guarded = config.mode != "off"
        if guarded and self.input_guard is not None:
            decision = input_decision or self.input_guard.decide([messages], mode=config.mode)[0]
            result.input = decision
            yield GuardEvent("input", input=decision)
            if decision.flagged and config.mode == "shadow":
                result.would_block = True
            if decision.blocked:
                result.finish_reason = "blocked"
                result.text = config.refusal
                yield GuardEvent("end", result=result)
                return
        threshold = self.output_threshold(result.input)
        if guarded and self.output_model is not None and math.isfinite(threshold):
            result.output_threshold = threshold
        scoring = guarded and self.output_model is not None
        cascading = scoring and self.cascade is not None
        # With a cascade the probe only scores; the cascade decides where to halt.
        probe_halts = config.mode == "enforce" and not cascading
        if self.batcher is not None:
            tokens = self.batcher.stream(
                messages, guard=self.output_model if scoring else None,
                max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                top_p=config.top_p, seed=config.seed, threshold=threshold,
                halt=probe_halts, should_stop=should_stop,
                aggregator=self.aggregator, **self._ema_kwargs(),
            )  # fmt: skip
            if cascading:
                tokens = self._cascaded(tokens, messages, config, result, threshold)
            yield from self._follow(tokens, result, config, threshold, should_stop)
            return
        with self.lock:
            if scoring:
                tokens = _generate_with_scores(
                    self.output_model, self.tokenizer, messages,
                    max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    top_p=config.top_p, seed=config.seed, threshold=threshold,
                    halt=probe_halts, should_stop=should_stop,
                    aggregator=self.aggregator, **self._ema_kwargs(),
                )  # fmt: skip
                if cascading:
                    tokens = self._cascaded(tokens, messages, config, result, threshold)
            else:
                tokens = generate_plain(
                    self.lm, self.tokenizer, messages,
                    max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                    top_p=config.top_p, seed=config.seed, should_stop=should_stop,
                )  # fmt: skip
            yield from self._follow(tokens, result, config, threshold, should_stop)

    # -- upstream generation, separate classifier ------------------------------------------

    def stream_upstream(
        self,
        messages: list[Message],
        chunks: Iterable[str],
        config: GuardConfig,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[GuardEvent]:
        """Guard text streamed by another model: re-tokenise and score incrementally."""
        result = GuardResult()
        guarded = config.mode != "off"
        if guarded and self.input_guard is not None:
            decision = self.input_guard.decide([messages], mode=config.mode)[0]
            result.input = decision
            yield GuardEvent("input", input=decision)
            result.would_block = decision.flagged and config.mode == "shadow"
            if decision.blocked:
                result.finish_reason = "blocked"
                result.text = config.refusal
                yield GuardEvent("end", result=result)
                return
        threshold = self.output_threshold(result.input)
        guard = self.reply_guard(messages, mode=config.mode, decision=result.input, result=result)
        if guard is not None and math.isfinite(threshold):
            result.output_threshold = threshold

        def scored() -> Iterator[TokenScore]:
            if guard is None:  # mode "off" or no output classifier: pass it through
                for index, chunk in enumerate(chunks):
                    yield TokenScore(index, -1, math.nan, math.nan, chunk)
                return
            for chunk in chunks:
                yield from guard.feed(chunk)
                if guard.stopped or (should_stop is not None and should_stop()):
                    return
            yield from guard.finish()

        # No lock: the scorer's KV cache is this stream's own, and the model is
        # only read, so concurrent upstream streams score side by side.
        yield from self._follow(scored(), result, config, threshold, should_stop)

    def reply_guard(
        self,
        messages: list[Message],
        *,
        mode: str,
        decision: InputDecision | None = None,
        category: str | None = None,  # the prompt's category when no decision is at hand
        result: GuardResult | None = None,  # receives the cascade's escalation point
    ) -> ReplyGuard | None:
        """Output scoring for a reply generated elsewhere (an upstream model, a
        gateway's stream), started on `messages`; None when nothing scores it."""
        if mode == "off" or self.output_model is None:
            return None
        result = result if result is not None else GuardResult()
        scorer = StreamingScorer(
            self.output_model, self.tokenizer, aggregator=self.aggregator, **self._ema_kwargs()
        )
        scorer.start(messages)
        cascade = self._new_cascade(messages, result)
        rescore = on_rollback = None
        if cascade is not None:

            def rescore(token: TokenScore) -> None:
                step = cascade.step(token.token_id, token.score)
                token.heavy, token.score = step.heavy_score, step.score
                if step.escalated_now:
                    result.escalated_at = token.index

            on_rollback = cascade.rollback
        return ReplyGuard(
            scorer, threshold=self.output_threshold(decision, category),
            enforce=mode == "enforce",
            rescore=rescore, on_rollback=on_rollback,
        )  # fmt: skip

    # -- shared ---------------------------------------------------------------------------------

    def _cascaded(
        self,
        tokens: Iterator[TokenScore],
        messages: list[Message],
        config: GuardConfig,
        result: GuardResult,
        threshold: float,
    ) -> Iterator[TokenScore]:
        """Re-score the probe's tokens through the cascade and halt on its score
        (`threshold` is the cascade's calibrated one, see output_threshold)."""
        cascade = self._new_cascade(messages, result)
        assert cascade is not None
        try:
            for token in tokens:
                self._cascade_step(cascade, token, result, config, threshold)
                yield token
                if token.halted:
                    return
        finally:
            # Halting here ends the probe's stream too (a batcher drops the row).
            close = getattr(tokens, "close", None)
            if close is not None:
                close()

    def _follow(
        self,
        tokens: Iterable[TokenScore],
        result: GuardResult,
        config: GuardConfig,
        threshold: float,
        should_stop: Callable[[], bool] | None,
    ) -> Iterator[GuardEvent]:
        pieces: list[str] = []
        for token in tokens:
            result.tokens.append(token)
            pieces.append(token.text)
            if not math.isnan(token.score):
                result.max_output_score = max(result.max_output_score or 0.0, token.score)
                if reaches(token.score, threshold) and result.halted_at is None:
                    result.halted_at = token.index
                    if config.mode == "shadow":
                        result.would_block = True
            yield GuardEvent("token", token=token)
            if token.halted:
                break
        result.generated = "".join(pieces)
        if result.halted_at is not None and config.mode == "enforce":
            result.finish_reason = "halted"
            result.text = result.generated + ("\n\n" if result.generated else "") + config.refusal
        else:
            result.text = result.generated
            if should_stop is not None and should_stop():
                result.finish_reason = "cancelled"
            elif len(result.tokens) >= config.max_new_tokens:
                result.finish_reason = "length"
            else:
                result.finish_reason = "stop"
        margin = config.near_margin
        near_input = result.input is not None and (
            result.input.score >= result.input.threshold - margin
        )
        near_output = result.output_threshold is not None and (
            (result.max_output_score or 0.0) >= result.output_threshold - margin
        )
        result.near_threshold = near_input or near_output
        yield GuardEvent("end", result=result)

    def _new_cascade(self, messages: list[Message], result: GuardResult) -> StreamingCascade | None:
        if self.cascade is None:
            return None
        cascade_guard = self.cascade
        result.cascaded = True
        return StreamingCascade(cascade_guard.settings, lambda: cascade_guard.open(messages))

    @staticmethod
    def _cascade_step(
        cascade: StreamingCascade,
        token: TokenScore,
        result: GuardResult,
        config: GuardConfig,
        threshold: float,
    ) -> None:
        """Re-score one probe token through the cascade; halt on the cascade's score."""
        step = cascade.step(token.token_id, token.score)
        token.heavy = step.heavy_score
        token.score = step.score
        if step.escalated_now:
            result.escalated_at = token.index
        token.halted = config.mode == "enforce" and reaches(step.score, threshold)

    def output_threshold(self, decision: InputDecision | None, category: str | None = None) -> float:
        if self.output_thresholds is None:
            return math.inf
        category = decision.category if decision else category
        if self.cascade is not None:
            # Calibrated on the cascade's own scores (the probe's thresholds do not
            # carry over to the ensemble), per category too.
            return self.cascade.settings.threshold_for(category)
        return self.output_thresholds.for_category(category)

    def _ema_kwargs(self) -> dict[str, Any]:
        return {"ema_alpha": self.ema_alpha} if self.ema_alpha else {}


def run_to_end(events: Iterable[GuardEvent]) -> GuardResult:
    """Drain a stream and return its result (non-streaming callers)."""
    result = None
    for event in events:
        if event.kind == "end":
            result = event.result
    if result is None:
        raise RuntimeError("guard stream ended without a result")
    return result
