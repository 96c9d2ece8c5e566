"""THE per-token score rule of the streaming output classifier, in one place.

A token's score, everywhere (training validation, offline evaluation, the single
stream, continuous batching):
  1. `token_probs(values)`: the value head's logit at that token -> sigmoid -> the
     probability that the FULL response is harmful (`TokenScore.prob`);
  2. `make_aggregator(name).update(prob)`: the running aggregate the guard halts on,
     "cummax" (running max, the default) or "ema" (the window loss's serving form)
     (`TokenScore.score`);
  3. `reaches(score, threshold)`: halt at the first token whose running score
     reaches the threshold (`TokenScore.halted`).
`aggregate_scores` / `final_scores` / `halting_positions` apply the same rule to
whole responses offline, and `score_responses` computes step 1 with one full
forward per response (training validation, calibration, reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from classifiers.ml.output.encoding import collate, encode_example, tokenizer_pad_id
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.types import Example

DEFAULT_EMA_ALPHA = 2.0 / 17  # matches the default 16-token training window


# ------------------------------------------------------------ 1. token probability


def token_probs(values: torch.Tensor) -> torch.Tensor:
    """Value-head logits (any shape) -> per-token harmful probabilities."""
    return torch.sigmoid(values)


# ------------------------------------------------------------ 2. running aggregate


class CummaxAggregator:
    """Running max: once any prefix looks harmful the response stays flagged."""

    def __init__(self) -> None:
        self.value = 0.0

    def update(self, prob: float) -> float:
        self.value = max(self.value, prob)
        return self.value

    def reset(self) -> None:
        self.value = 0.0


class EmaAggregator:
    """Serving form of the window loss: an exponentially decaying, softmax(logit)-
    weighted mean of per-token probabilities. Token t's weight is
    (1 - alpha)^age * exp(logit_t), the window's softmax weighting with the hard
    window replaced by a decay of the same centre of mass (alpha = 2 / (W + 1))."""

    def __init__(self, alpha: float = DEFAULT_EMA_ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("ema alpha must be in (0, 1]")
        self.alpha = alpha
        self.reset()

    def update(self, prob: float) -> float:
        p = min(max(prob, 1e-7), 1 - 1e-7)
        weight = math.exp(max(-30.0, min(30.0, math.log(p / (1 - p)))))
        self.numerator = (1 - self.alpha) * self.numerator + self.alpha * weight * p
        self.denominator = (1 - self.alpha) * self.denominator + self.alpha * weight
        if self.denominator < 1e-200:  # rescale long runs before underflow
            self.numerator *= 1e200
            self.denominator *= 1e200
        return self.numerator / self.denominator

    def reset(self) -> None:
        self.numerator = 0.0
        self.denominator = 0.0


def make_aggregator(
    name: str, ema_alpha: float = DEFAULT_EMA_ALPHA
) -> CummaxAggregator | EmaAggregator:
    if name == "cummax":
        return CummaxAggregator()
    if name == "ema":
        return EmaAggregator(ema_alpha)
    raise ValueError(f"unknown aggregator {name!r}")


# ------------------------------------------------------------------------ 3. halting


def reaches(score: float, threshold: float | None) -> bool:
    """Whether a running score halts the stream: score >= threshold (None: never)."""
    return threshold is not None and score >= threshold


# ------------------------------------------------------------- whole responses


def aggregate_scores(
    probs: list[float], aggregator: str = "cummax", ema_alpha: float = DEFAULT_EMA_ALPHA
) -> list[float]:
    """Turn per-token probabilities into the streaming guard's running score."""
    agg = make_aggregator(aggregator, ema_alpha)
    return [agg.update(p) for p in probs]


def final_scores(per_token_scores: list[list[float]]) -> list[float]:
    """One score per response: the max over its tokens (0.0 for an empty one)."""
    return [max(s) if s else 0.0 for s in per_token_scores]


def halting_positions(
    per_token_scores: list[list[float]], threshold: float | Sequence[float]
) -> list[int | None]:
    """First token index whose running max reaches threshold, else None.
    `threshold`: one number, or one per response (per-category thresholds)."""
    thresholds = (
        [threshold] * len(per_token_scores) if isinstance(threshold, (int, float)) else threshold
    )
    return [
        next((i for i, s in enumerate(scores) if reaches(s, t)), None)
        for scores, t in zip(per_token_scores, thresholds, strict=True)
    ]


@torch.no_grad()
def score_responses(
    model: CausalLMWithValueHead,
    tokenizer: Any,
    examples: list[Example],
    *,
    batch_size: int = 8,
    max_length: int = 2048,
) -> list[list[float]]:
    """Per-token harmful probability over each response (one full forward each)."""
    was_training = model.training
    model.eval()
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    out: list[list[float]] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        batch = collate(chunk, tokenizer_pad_id(tokenizer))
        res = model(
            batch["input_ids"].to(model.device),
            batch["attention_mask"].to(model.device),
            compute_lm_logits=False,
        )
        probs = token_probs(res.values).cpu()  # (B, T)
        for i, e in enumerate(chunk):
            out.append(probs[i, e.response_start : len(e.input_ids)].tolist())
    model.train(was_training)
    return out
