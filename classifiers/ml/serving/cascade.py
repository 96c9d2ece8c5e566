"""The probe cascade as served: a cheap probe scores every token of a stream, and a
heavier output classifier joins only when the probe becomes uncertain.

After Constitutional Classifiers++ (a linear probe on the policy model screens all
traffic and escalates a few percent to a stronger classifier; the final score is a
weighted sum of the two logits), in streaming form:

* the probe is the value head on the generator's own activations (free per token);
* at the first token whose probe score falls inside the calibrated band [lo, hi],
  the heavy classifier starts: it encodes the prompt and the response so far once
  (one prefill), then scores each later token incrementally from its KV cache;
* from then on each token's score is sigmoid(w * logit(probe) + (1 - w) * logit(heavy));
  before escalation it is the probe's score alone; the halting score is the running
  max of these (output/scoring.py's CummaxAggregator), so the usual rule (halt at
  the first token above the threshold) applies unchanged;
* a probe score that jumps from below lo to above hi in one token is confident: it
  stands alone and the heavy classifier is not consulted.

The heavy classifier comes in through `HeavyStream`, so the same
`StreamingCascade` replays precomputed per-token scores for calibration and
evaluation (`replay`, eval/cascade_calibration.py) and runs live in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from classifiers.ml.output.scoring import CummaxAggregator

DEFAULT_WEIGHTS = (0.25, 0.5, 0.75)


_EPS = 1e-6  # clamp before logit() so 0/1 scores stay finite


def logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def ensemble_score(probe: float, heavy: float, weight: float) -> float:
    """Weighted logit average: w = 1 trusts the probe alone, w = 0 the heavy one."""
    z = weight * logit(probe) + (1 - weight) * logit(heavy)
    return 1 / (1 + math.exp(-z))


class HeavyStream(Protocol):
    """The heavy classifier on one stream."""

    def start(self, token_ids: list[int]) -> float:
        """Encode the response tokens so far; the score at the last of them."""

    def push(self, token_id: int) -> float:
        """Score one more token incrementally."""

    def rollback(self, n_tokens: int) -> None:
        """Forget the last n tokens (upstream text that re-tokenised differently)."""


@dataclass(frozen=True)
class CascadeSettings:
    band: tuple[float, float]  # probe scores that escalate
    weight: float  # the probe's share of the logit ensemble
    threshold: float  # halting threshold on the cascade's running max
    # Stricter or looser thresholds for single restricted categories (the input
    # classifier's category of the prompt picks one), calibrated on cascade scores.
    per_category: dict[str, float] = field(default_factory=dict, hash=False)

    def threshold_for(self, category: str | None) -> float:
        if category is not None and category in self.per_category:
            return self.per_category[category]
        return self.threshold

    def __post_init__(self) -> None:
        lo, hi = self.band
        if not 0.0 <= lo <= hi:
            raise ValueError("band must be (lo, hi) with 0 <= lo <= hi")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError("weight must be in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "band": list(self.band), "weight": self.weight, "threshold": self.threshold,
            "per_category": dict(self.per_category),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CascadeSettings:
        lo, hi = data["band"]
        per_category = {k: float(v) for k, v in (data.get("per_category") or {}).items()}
        return cls(
            (float(lo), float(hi)), float(data["weight"]), float(data["threshold"]), per_category
        )


@dataclass
class CascadeStep:
    score: float  # the halting score: running max of the cascade's per-token scores
    probe_score: float
    heavy_score: float | None  # None until the stream escalates
    escalated_now: bool  # this token started the heavy classifier


class StreamingCascade:
    """One stream's cascade state. `open_heavy` is called at most once."""

    def __init__(self, settings: CascadeSettings, open_heavy: Callable[[], HeavyStream]):
        self.settings = settings
        self.open_heavy = open_heavy
        self.heavy: HeavyStream | None = None
        self.token_ids: list[int] = []
        self.escalated_at: int | None = None  # token index where the heavy one joined
        self.heavy_tokens = 0  # response tokens the heavy classifier encoded
        self._running = CummaxAggregator()  # the halting score: output.scoring's running max
        self.value = 0.0

    @property
    def escalated(self) -> bool:
        return self.heavy is not None

    def step(self, token_id: int, probe_score: float) -> CascadeStep:
        self.token_ids.append(token_id)
        lo, hi = self.settings.band
        heavy_score, now = None, False
        if self.heavy is not None:
            heavy_score = self.heavy.push(token_id)
            self.heavy_tokens += 1
        elif lo <= probe_score <= hi:
            self.heavy = self.open_heavy()
            heavy_score = self.heavy.start(list(self.token_ids))
            self.heavy_tokens += len(self.token_ids)
            self.escalated_at, now = len(self.token_ids) - 1, True
        raw = (
            probe_score
            if heavy_score is None
            else ensemble_score(probe_score, heavy_score, self.settings.weight)
        )
        self.value = self._running.update(raw)
        return CascadeStep(self.value, probe_score, heavy_score, now)

    def rollback(self, n_tokens: int) -> None:
        """The last n tokens were replaced (upstream re-tokenisation): the heavy
        classifier forgets them too. The running max keeps what was already
        reported: a score the stream showed is never taken back."""
        if n_tokens <= 0:
            return
        del self.token_ids[-n_tokens:]
        if self.heavy is not None:
            self.heavy.rollback(n_tokens)


class PrecomputedHeavy:
    """A HeavyStream reading per-token scores computed in advance (one full forward)."""

    def __init__(self, scores: Sequence[float]):
        self.scores = list(scores)
        self.position = -1

    def start(self, token_ids: list[int]) -> float:
        self.position = len(token_ids) - 1
        return self.scores[self.position]

    def push(self, token_id: int) -> float:
        self.position += 1
        return self.scores[self.position]

    def rollback(self, n_tokens: int) -> None:
        self.position -= n_tokens


@dataclass
class Replay:
    scores: list[float]  # halting score per token
    escalated_at: int | None
    heavy_tokens: int

    @property
    def final(self) -> float:
        return self.scores[-1] if self.scores else 0.0


def replay(
    probe_scores: Sequence[float], heavy_scores: Sequence[float], settings: CascadeSettings
) -> Replay:
    """What the served cascade does on one response, from per-token scores (the
    probe's and the heavy classifier's running scores, as each serves them)."""
    cascade = StreamingCascade(settings, lambda: PrecomputedHeavy(heavy_scores))
    scores = [cascade.step(i, p).score for i, p in enumerate(probe_scores)]
    return Replay(scores, cascade.escalated_at, cascade.heavy_tokens)
