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
from typing import Any

import torch

from classifiers.ml.output.encoding import prompt_token_ids
from classifiers.ml.output.scoring import (
    DEFAULT_EMA_ALPHA,
    make_aggregator,
    reaches,
    token_probs,
)
from classifiers.ml.output.value_head import CausalLMWithValueHead
from classifiers.ml.serving.tokens import (
    IncrementalDecoder,
    TokenScore,
    eos_ids,
    sample_token,
)

logger = logging.getLogger(__name__)

# push_text holds back the text's last word; a "word" longer than this many tokens
# (a URL, code, text without spaces) releases all but its last ones.
HOLD_BACK_TOKENS = 8


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
        # push_text: where in the text each scored token may be released (a
        # character offset; see _tokenise), and the response text so far.
        self.ends: list[int] = []
        self._text = ""

    @torch.no_grad()
    def start(self, messages: list[Any]) -> None:
        """Encode the prompt (chat template + assistant header) once."""
        self._agg.reset()
        self.token_ids, self.probs, self.scores, self.ends = [], [], [], []
        self._text = ""
        ids = torch.tensor(
            [prompt_token_ids(self.tokenizer, messages)], device=self.model.device
        )  # (1, T)
        out = self.model(ids, use_cache=True, compute_lm_logits=False)
        self._cache = out.past_key_values

    @property
    def text(self) -> str:
        """The response text received so far (push_text)."""
        return self._text

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
        probs = token_probs(out.values[0]).tolist()  # (n,)
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
        forward) and compare with the ids already fed. The last word of the text is
        held back until more text (or `final=True`) arrives, because its tokens may
        still merge with what follows (" c" + "ook" is " cook"; BPE merges stay
        inside a word, so tokens before the last whitespace are settled), at least
        the last token and at most HOLD_BACK_TOKENS of them (text without spaces).
        If an earlier token changed anyway, the KV cache is cropped back to the
        longest common prefix (DynamicCache.crop) and scoring resumes from there,
        so `self.scores` always equals the scores of the current tokenisation.
        """
        self._text += text_delta
        ids, ends, starts = self._tokenise(self._text)
        keep = len(ids) if final else self._settled(ids, starts)
        stable, stable_ends = ids[:keep], ends[:keep]
        common = 0
        limit = min(len(stable), len(self.token_ids))
        while common < limit and stable[common] == self.token_ids[common]:
            common += 1
        if common < len(self.token_ids):
            self._rollback(len(self.token_ids) - common)
        # Earlier tokens keep their ids; their release points may move with the
        # text that followed (a shared character), and only ever forward.
        self.ends[:common] = stable_ends[:common]
        scored = self.push(stable[common:])
        self.ends.extend(stable_ends[common:])
        return scored

    def _settled(self, ids: list[int], starts: list[int] | None) -> int:
        """How many leading tokens can no longer change as text is appended."""
        if not ids:
            return 0
        settled = len(ids) - 1
        if starts is not None:
            last_space = max(self._text.rfind(c) for c in " \n\t")
            before_word = sum(1 for start in starts if start < last_space)
            settled = min(settled, max(before_word, len(ids) - HOLD_BACK_TOKENS))
        return max(settled, 0)

    def _tokenise(self, text: str) -> tuple[list[int], list[int], list[int] | None]:
        """The text's token ids, and for each token the character offset up to which
        the text may be released once that token is scored: its end, or the start
        of the next token when a character is split across the two (byte-level
        BPE), so no character leaves before all of its tokens are scored."""
        try:
            encoded = self.tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True
            )
        except NotImplementedError:  # a slow tokenizer has no offsets
            # Without offsets no prefix of the text is known to be covered by the
            # tokens scored so far (decoding can differ from the text): nothing is
            # released before the end (ReplyGuard.finish releases it all then).
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            return ids, [0] * len(ids), None
        ids = list(encoded["input_ids"])
        spans = [tuple(span) for span in encoded["offset_mapping"]]
        ends = []
        for i, (_, end) in enumerate(spans):
            if i + 1 < len(spans):
                end = min(end, spans[i + 1][0])
            ends.append(end if not ends else max(end, ends[-1]))
        return ids, ends, [start for start, _ in spans]

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
        del self.scores[-n_tokens:], self.ends[-n_tokens:]
        # Recompute the aggregator over the kept probabilities.
        self._agg.reset()
        for p in self.probs:
            self._agg.update(p)


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
    eos, agg = eos_ids(tokenizer, lm), make_aggregator(aggregator, ema_alpha)
    decoder = IncrementalDecoder(tokenizer)
    for index in range(max_new_tokens):
        if should_stop is not None and should_stop():
            return
        token = sample_token(logits, temperature, top_p, generator)
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
        prob = float(token_probs(out.values[0, -1]))
        score = agg.update(prob)
        halted = halt and reaches(score, threshold)
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
