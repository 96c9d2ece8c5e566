"""Incremental output scoring and guarded generation, never re-encoding a prefix.

Two ways to guard a stream:
  * `generate_with_scores`: we generate. Each step is ONE forward of the generator;
    the value head reads that forward's hidden states, so the guard's extra cost is
    a (H x 1) matmul per token. `generate_plain` is the same loop without the head
    (the unguarded baseline benchmarks compare against).
  * `StreamingScorer`: someone else generates (e.g. an upstream OpenAI-compatible
    endpoint). The prompt is encoded once into a KV cache; each new response token
    goes through the model once (`push`), or raw streamed text is re-tokenised
    incrementally (`push_text`, see its docstring).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from classifiers.ml.output_classifier import prompt_token_ids
from classifiers.ml.value_head import CausalLMWithValueHead

logger = logging.getLogger(__name__)

DEFAULT_EMA_ALPHA = 2.0 / 17  # matches the default 16-token training window


@dataclass
class TokenScore:
    index: int  # position of the token in the response (0-based)
    token_id: int
    prob: float  # the head's raw probability at this token (NaN when unguarded)
    score: float  # aggregated score the guard halts on (cummax or EMA)
    text: str = ""  # text this token adds (generation only; "" mid-character)
    halted: bool = False  # generation stopped here because score >= threshold
    heavy: float | None = None  # a probe cascade's heavy classifier, once escalated


# ---------------------------------------------------------------------- aggregators


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


# --------------------------------------------------------------- streaming scorer


class StreamingScorer:
    """Scores a response streamed from elsewhere, one KV-cached forward per token."""

    def __init__(
        self,
        model: CausalLMWithValueHead,
        tokenizer: Any,
        *,
        aggregator: str = "cummax",
        ema_alpha: float = DEFAULT_EMA_ALPHA,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.aggregator_name = aggregator
        self.ema_alpha = ema_alpha
        self._agg = make_aggregator(aggregator, ema_alpha)
        self._cache: Any = None
        self.token_ids: list[int] = []  # response tokens fed so far
        self.probs: list[float] = []  # raw per-token probabilities
        self.scores: list[float] = []  # aggregated scores
        self._text = ""  # push_text: the response text received so far

    @torch.no_grad()
    def start(self, messages: list[Any]) -> None:
        """Encode the prompt (chat template + assistant header) once."""
        self._agg.reset()
        self.token_ids, self.probs, self.scores, self._text = [], [], [], ""
        ids = torch.tensor(
            [prompt_token_ids(self.tokenizer, messages)], device=self.model.device
        )  # (1, T)
        out = self.model(ids, use_cache=True, compute_lm_logits=False)
        self._cache = out.past_key_values

    @torch.no_grad()
    def push(self, token_ids: list[int]) -> list[TokenScore]:
        """Feed new response tokens through the cache; one score per token."""
        if self._cache is None:
            raise RuntimeError("call start(messages) first")
        if not token_ids:
            return []
        ids = torch.tensor([token_ids], device=self.model.device)  # (1, n)
        out = self.model(
            ids, past_key_values=self._cache, use_cache=True, compute_lm_logits=False
        )
        self._cache = out.past_key_values
        probs = torch.sigmoid(out.values[0]).tolist()  # (n,)
        result = []
        for tok, p in zip(token_ids, probs, strict=True):
            score = self._agg.update(p)
            result.append(TokenScore(len(self.token_ids), tok, p, score))
            self.token_ids.append(tok)
            self.probs.append(p)
            self.scores.append(score)
        return result

    def push_text(self, text_delta: str, *, final: bool = False) -> list[TokenScore]:
        """Feed streamed response text; returns the newly scored tokens.

        Approach: re-tokenise the whole response received so far (cheap next to a
        forward) and compare with the ids already fed. The last token of the text is
        held back until more text (or `final=True`) arrives, because it may still
        merge with what follows ("hel" + "lo"). If an earlier token changed anyway
        (a merge reaching further back), the KV cache is cropped back to the longest
        common prefix (DynamicCache.crop) and scoring resumes from there, so
        `self.scores` always equals the scores of the current tokenisation.
        """
        self._text += text_delta
        ids = list(self.tokenizer(self._text, add_special_tokens=False)["input_ids"])
        stable = ids if final else ids[:-1]
        common = 0
        limit = min(len(stable), len(self.token_ids))
        while common < limit and stable[common] == self.token_ids[common]:
            common += 1
        if common < len(self.token_ids):
            self._rollback(len(self.token_ids) - common)
        return self.push(stable[common:])

    def finish(self) -> list[TokenScore]:
        """The stream ended: score the held-back last token."""
        return self.push_text("", final=True)

    def rollback(self, n_tokens: int) -> None:
        """Forget the last n response tokens (KV cache cropped, scores recomputed)."""
        if n_tokens > 0:
            self._rollback(n_tokens)

    def _rollback(self, n_tokens: int) -> None:
        logger.debug(
            "push_text: re-tokenisation changed %d tokens; rolling back", n_tokens
        )
        self._cache.crop(-n_tokens)
        del self.token_ids[-n_tokens:], self.probs[-n_tokens:]
        del self.scores[-n_tokens:]
        # Recompute the aggregator over the kept probabilities.
        self._agg.reset()
        for p in self.probs:
            self._agg.update(p)


# ---------------------------------------------------------------------- generation


class IncrementalDecoder:
    """Text deltas for a growing token list, correct across multi-byte characters
    and tokenizers whose decode depends on neighbours (TGI's prefix/read offsets)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix = decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True
        )
        full = decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        # U+FFFD at the end = an incomplete UTF-8 sequence: wait for the next token.
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix) :]
        return ""


def _sample(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> int:
    """Greedy at temperature 0, else nucleus sampling (on CPU, for a seedable RNG).
    A temperature under 1e-5 is greedy too: it is the limit, and dividing by it
    would overflow the softmax into NaNs."""
    if temperature < 1e-5:
        return int(logits.argmax(-1))
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)  # (V,)
    if top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before it covers p
        sorted_p[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def _eos_ids(tokenizer: Any, lm: Any) -> set[int]:
    ids: set[int] = set()
    for source in (
        tokenizer.eos_token_id,
        getattr(getattr(lm, "generation_config", None), "eos_token_id", None),
    ):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(i) for i in source)
    return ids


@torch.no_grad()
def _generate(
    lm: Any,
    tokenizer: Any,
    messages: list[Any],
    guard: CausalLMWithValueHead | None,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    threshold: float | None,
    halt: bool,
    should_stop: Callable[[], bool] | None,
    aggregator: str,
    ema_alpha: float,
) -> Iterator[TokenScore]:
    device = next(lm.parameters()).device
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = torch.tensor([prompt_token_ids(tokenizer, messages)], device=device)  # (1, T)
    if guard is not None:
        out = guard(ids, use_cache=True, logits_to_keep=1)
        logits, cache = out.logits_lm[0, -1], out.past_key_values  # (V,)
    else:
        out = lm(input_ids=ids, use_cache=True, logits_to_keep=1)
        logits, cache = out.logits[0, -1], out.past_key_values  # (V,)
    eos, agg = _eos_ids(tokenizer, lm), make_aggregator(aggregator, ema_alpha)
    decoder = IncrementalDecoder(tokenizer)
    for index in range(max_new_tokens):
        if should_stop is not None and should_stop():
            return
        token = _sample(logits, temperature, top_p, generator)
        if token in eos:
            return
        text = decoder.add(token)
        last = index == max_new_tokens - 1
        step = torch.tensor([[token]], device=device)  # (1, 1)
        if guard is None:
            yield TokenScore(index, token, math.nan, math.nan, text)
            if last:
                return
            out = lm(
                input_ids=step, past_key_values=cache, use_cache=True, logits_to_keep=1
            )
            logits, cache = out.logits[0, -1], out.past_key_values
            continue
        # The forward that scores `token` also yields the next token's logits; on
        # the last token the LM head is skipped (only the score is needed).
        out = guard(
            step,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            compute_lm_logits=not last,
        )
        prob = float(torch.sigmoid(out.values[0, -1]))
        score = agg.update(prob)
        halted = halt and threshold is not None and score >= threshold
        yield TokenScore(index, token, prob, score, text, halted)
        if halted or last:
            return
        logits, cache = out.logits_lm[0, -1], out.past_key_values


def generate_with_scores(
    model: CausalLMWithValueHead,
    tokenizer: Any,
    messages: list[Any],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    threshold: float | None = None,
    halt: bool = True,
    should_stop: Callable[[], bool] | None = None,
    aggregator: str = "cummax",
    ema_alpha: float = DEFAULT_EMA_ALPHA,
) -> Iterator[TokenScore]:
    """Generate with the guard reading the generator's own activations.

    Stops at EOS (not yielded), at max_new_tokens, or, when `halt` and a threshold
    is set, at the first token whose aggregated score >= threshold (yielded with
    halted=True).
    """
    return _generate(
        model.lm,
        tokenizer,
        messages,
        model,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        threshold=threshold,
        halt=halt,
        should_stop=should_stop,
        aggregator=aggregator,
        ema_alpha=ema_alpha,
    )


def generate_plain(
    lm: Any,
    tokenizer: Any,
    messages: list[Any],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[TokenScore]:
    """The same loop without any head (prob/score are NaN): the unguarded baseline.
    Accepts a bare causal LM or a CausalLMWithValueHead (its LM is used)."""
    if isinstance(lm, CausalLMWithValueHead):
        lm = lm.lm
    return _generate(
        lm,
        tokenizer,
        messages,
        None,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        threshold=None,
        halt=False,
        should_stop=should_stop,
        aggregator="cummax",
        ema_alpha=DEFAULT_EMA_ALPHA,
    )
