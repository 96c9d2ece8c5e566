"""Dynamic (continuous) batching of concurrent guarded generations on one local model.

Many playground sessions and API streams may generate from the same local backbone
at once. Run side by side, each stream does its own one-token forward per step and
the threads fight over the same cores; batched, ONE forward per step serves every
active stream, which costs little more than a single stream's forward because a
one-token step is bound by reading the weights, not by arithmetic
(`python -m bench concurrent` measures it; docs/BENCHMARKS.md).

How, after vLLM's and TGI's continuous batching, on transformers' DynamicCache:
- requests join between two steps, never waiting for the batch to drain: the
  prompts that arrived since the last step are prefilled together (one left-padded
  forward, giving their KV caches and first logits); then their cache is
  left-padded to the batch's length, or the batch's to theirs, and concatenated
  along the batch axis, with attention-mask zeros over the padding;
- each step samples one token per row (with the row's own seeded generator, so
  sampling does not depend on who else is in the batch), then runs one forward over
  all rows with per-row position ids (the row's count of real tokens) and the hidden
  states of every layer; each row's value head reads its own row, so rows of
  different constitutions' probes, and unguarded rows, share one forward;
- a prompt longer than `prefill_chunk` tokens is prefilled a chunk per step, in
  its own cache, between the running rows' decode steps (chunked prefill, as vLLM
  does), then joins like any other: one long prompt never stalls the streams
  already running for the seconds its whole prefill would take;
- a finished row (EOS, length, halt, cancelled, or its reader gone) leaves by
  index_select on the batch axis, and columns that are padding in every remaining
  row are cut off.

A row's tokens and scores equal the unbatched path's (`serving.stream.generate_with_scores`)
up to float rounding: padding is masked out, positions are per row. In fp32 (CPU)
that rounding is ~1e-6 and greedy tokens match (tests/ml/test_batched_streaming.py,
bench/concurrent.py); in bf16 on a GPU, batch composition can shift a near-tie.

Failures stay as small as they can: a bad conversation, a failing callback or a
broken value head fails its own request; a failed forward fails that step's batch;
the worker thread itself never dies of it (and a reader whose worker is gone gets
an error instead of waiting forever).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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

_END = object()  # end of a row's token stream
PREFILL_CHUNK = 128  # prompt tokens per forward for long prompts (chunked prefill)
_READ_POLL_S = 5.0  # how often a waiting reader checks that the worker still runs


class BatchedGenerationError(RuntimeError):
    """A batched generation failed; the original error is the __cause__."""


def supports_batching(config: Any) -> bool:
    """Whether a model's KV cache is plain full attention in every layer, which is
    what left-padding and merging caches assume (sliding-window layers keep only
    their last window of keys and would fall out of step with the mask)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return all(t == "full_attention" for t in layer_types)
    return not (getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


@dataclass
class BatcherStats:
    """Counters for benchmarks, tests and the operations page."""

    submitted: int = 0  # requests received
    steps: int = 0  # batched decode forwards
    row_steps: int = 0  # sum over steps of the rows in them (tokens decoded)
    admitted: int = 0  # requests that joined a batch
    max_batch: int = 0  # largest batch seen

    @property
    def mean_batch(self) -> float:
        return self.row_steps / self.steps if self.steps else 0.0


@dataclass
class _Request:
    messages: list[Any]
    guard: CausalLMWithValueHead | None
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    threshold: float | None
    halt: bool
    should_stop: Callable[[], bool] | None
    aggregator: str
    ema_alpha: float
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    abandoned: threading.Event = field(default_factory=threading.Event)


class _Row:
    """One request's decoding state while it is in the batch."""

    def __init__(self, request: _Request, tokenizer: Any, eos: set[int]) -> None:
        self.request = request
        self.eos = eos
        self.generator = (
            torch.Generator().manual_seed(request.seed) if request.seed is not None else None
        )
        self.aggregator = make_aggregator(request.aggregator, request.ema_alpha)
        self.decoder = IncrementalDecoder(tokenizer)
        self.index = 0  # response tokens emitted so far
        self.length = 0  # real (unpadded) tokens in this row's cache
        self.logits: torch.Tensor | None = None  # (V,) logits for the next token
        self.token = -1  # the token chosen this step (the next forward's input)
        self.pending: TokenScore | None = None  # ... when it still has to be scored
        self.finished = False

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.request.out.put(_END)

    def fail(self, exc: BaseException) -> None:
        if not self.finished:
            self.finished = True
            self.request.out.put(exc)


@dataclass
class _Prefilling:
    """A long prompt being prefilled a chunk per step, in its own cache."""

    request: _Request
    prompt: list[int]
    done: int = 0  # prompt tokens in `cache` so far
    cache: Any = None


def _stopped(request: _Request) -> bool:
    # Called on the worker thread before every step of every row: callbacks must be
    # cheap and thread-safe (an Event's is_set, as the playground and API pass).
    return request.should_stop is not None and bool(request.should_stop())


class ContinuousBatcher:
    """Serves every generation on `lm` from one background thread, batched per step.

    `stream(...)` has the same arguments and yields the same TokenScores as
    `serving.stream.generate_with_scores` (with `guard`) or `generate_plain` (without);
    the caller's thread just reads a queue. Thread-safe.
    """

    def __init__(
        self, lm: Any, tokenizer: Any, *, max_batch: int = 8, name: str = "",
        prefill_chunk: int = PREFILL_CHUNK,
        on_stats: Callable[[BatcherStats], None] | None = None,
    ) -> None:  # fmt: skip
        if max_batch < 1 or prefill_chunk < 1:
            raise ValueError("max_batch and prefill_chunk must be at least 1")
        self.prefill_chunk = prefill_chunk
        # Told the counters at most once a second, from the worker thread (the web
        # app publishes them for /metrics across processes). Never raises into us.
        self.on_stats = on_stats
        self._stats_told = 0.0
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.name = name or type(lm).__name__
        self.stats = BatcherStats()
        self._eos = eos_ids(tokenizer, lm)
        self._waiting: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Batch state, touched only by the worker thread.
        self._rows: list[_Row] = []
        self._prefilling: deque[_Prefilling] = deque()  # long prompts, a chunk per step
        # The running batch's DynamicCache (per layer (B, heads, L, head_dim)); kept
        # between steps (the forward appends in place), rebuilt when rows come or go.
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (B, L) 1 = real token

    # -- caller side ------------------------------------------------------------------

    def stream(
        self,
        messages: list[Any],
        *,
        guard: CausalLMWithValueHead | None = None,
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
        if guard is not None and guard.lm is not self.lm:
            raise ValueError("the guard's value head must sit on this batcher's model")
        make_aggregator(aggregator, ema_alpha)  # bad names fail here, in the caller
        request = _Request(
            messages, guard, max_new_tokens, temperature, top_p, seed,
            threshold if guard is not None else None, halt and guard is not None,
            should_stop, aggregator, ema_alpha,
        )  # fmt: skip
        return self._read(request)

    def _read(self, request: _Request) -> Iterator[TokenScore]:
        self._submit(request)
        try:
            while True:
                try:
                    item = request.out.get(timeout=_READ_POLL_S)
                except queue.Empty:
                    if self._thread is None or not self._thread.is_alive():
                        raise BatchedGenerationError("the generation worker stopped") from None
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    # Each reader raises its own exception: one object raised in many
                    # threads would tangle their tracebacks.
                    raise BatchedGenerationError(f"generation failed: {item}") from item
                yield item
        finally:
            # The reader stopped (done, or it closed the generator on a disconnect):
            # the worker drops the row at its next step.
            request.abandoned.set()

    def _submit(self, request: _Request) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._waiting.append(request)
            self.stats.submitted += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name=f"batcher-{self.name}", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- worker side ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._waiting or self._rows or self._prefilling or self._closed):
                    self._wake.wait()
                if self._closed:
                    break
                joining = []
                taken = len(self._rows) + len(self._prefilling)
                while self._waiting and taken + len(joining) < self.max_batch:
                    joining.append(self._waiting.popleft())
            try:
                if joining:
                    self._admit(joining)
                if self._prefilling:
                    self._prefill_chunk()
                if self._rows:
                    self._step()
                    if not self._rows:  # idle from here: the final counts go out now
                        self._tell_stats(force=True)
            except Exception as exc:  # a failed step fails its batch, not the server
                logger.exception("batched generation step failed")
                for request in joining:
                    request.out.put(exc)
                self._fail_all(exc)
        self._fail_all(RuntimeError("the batcher was closed"))
        for partial in self._prefilling:
            partial.request.out.put(RuntimeError("the batcher was closed"))
        for request in self._waiting:
            request.out.put(RuntimeError("the batcher was closed"))

    @torch.no_grad()
    def _admit(self, requests: list[_Request]) -> None:
        """Prefill the joining prompts in one left-padded forward, then join them.
        If that forward fails (one huge prompt out of memory, say) and several
        joined, each is retried alone so that only the culprit fails."""
        ready, prompts = [], []
        for request in requests:
            try:  # a bad conversation or a failing callback fails its request alone
                if request.abandoned.is_set() or _stopped(request):
                    request.out.put(_END)  # cancelled while waiting for a slot
                    continue
                prompt = prompt_token_ids(self.tokenizer, request.messages)
                if len(prompt) > self.prefill_chunk:
                    self._prefilling.append(_Prefilling(request, prompt))
                    continue
                prompts.append(prompt)
                ready.append(request)
            except Exception as exc:
                request.out.put(exc)
        try:
            self._prefill(ready, prompts)
        except Exception as exc:
            if len(ready) == 1:
                logger.exception("prefill failed")
                ready[0].out.put(exc)
                return
            for request, prompt in zip(ready, prompts, strict=True):
                try:
                    self._prefill([request], [prompt])
                except Exception as single:
                    logger.exception("prefill failed")
                    request.out.put(single)

    def _tell_stats(self, *, now: float | None = None, force: bool = False) -> None:
        if self.on_stats is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._stats_told < 1.0 and not force:
            return
        self._stats_told = now
        try:
            self.on_stats(self.stats)
        except Exception:  # counters are informative; a failing sink changes nothing
            logger.warning("could not publish batching counters", exc_info=True)

    @torch.no_grad()
    def _prefill_chunk(self) -> None:
        """One chunk of the oldest long prompt; it joins the batch after its last."""
        partial = self._prefilling[0]
        request = partial.request
        if request.abandoned.is_set() or _stopped(request):
            self._prefilling.popleft()
            request.out.put(_END)
            return
        device = next(self.lm.parameters()).device
        chunk = partial.prompt[partial.done : partial.done + self.prefill_chunk]
        end = partial.done + len(chunk)
        try:
            out = self.lm(
                input_ids=torch.tensor([chunk], device=device),
                attention_mask=torch.ones(1, end, dtype=torch.long, device=device),
                position_ids=torch.arange(partial.done, end, device=device)[None],
                past_key_values=partial.cache, use_cache=True, logits_to_keep=1,
            )  # fmt: skip
            partial.cache, partial.done = out.past_key_values, end
            if end < len(partial.prompt):
                return
            self._prefilling.popleft()
            row = _Row(request, self.tokenizer, self._eos)
            row.length, row.logits = end, out.logits[0, -1]
            mask = torch.ones(1, end, dtype=torch.long, device=device)
            self._join([row], _cache_tensors(partial.cache), mask)
            self.stats.admitted += 1
        except Exception as exc:  # this prompt fails alone; the batch goes on
            logger.exception("chunked prefill failed")
            if self._prefilling and self._prefilling[0] is partial:
                self._prefilling.popleft()
            request.out.put(exc)

    def _prefill(self, requests: list[_Request], prompts: list[list[int]]) -> None:
        if not requests:
            return
        device = next(self.lm.parameters()).device
        length = max(len(ids) for ids in prompts)
        ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor(
            [[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=device
        )  # (b, T)
        out = self.lm(
            input_ids=ids, attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        rows = []
        for i, (request, prompt) in enumerate(zip(requests, prompts, strict=True)):
            row = _Row(request, self.tokenizer, self._eos)
            row.length = len(prompt)
            row.logits = out.logits[i, -1]
            rows.append(row)
        self._join(rows, _cache_tensors(out.past_key_values), mask)
        self.stats.admitted += len(rows)

    def _join(
        self, rows: list[_Row], cache: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
    ) -> None:  # fmt: skip
        """Append prefilled rows, left-padding whichever side is shorter."""
        if not self._rows:
            self._rows, self._mask = rows, mask
            self._cache = _to_cache(cache, self.lm.config)
            return
        assert self._mask is not None
        length = max(self._mask.shape[1], mask.shape[1])
        merged = [
            (
                torch.cat([_left_pad(k_old, length), _left_pad(k_new, length)], dim=0),
                torch.cat([_left_pad(v_old, length), _left_pad(v_new, length)], dim=0),
            )
            for (k_old, v_old), (k_new, v_new) in zip(
                _cache_tensors(self._cache), cache, strict=True
            )
        ]
        merged_mask = torch.cat([_left_pad(self._mask, length), _left_pad(mask, length)], dim=0)
        # Assigned only once everything is built: a failure above leaves the batch as it was.
        self._cache, self._mask = _to_cache(merged, self.lm.config), merged_mask
        self._rows = self._rows + rows

    @torch.no_grad()
    def _step(self) -> None:
        # 1. Pick each row's next token; unguarded tokens go out at once (as in
        #    generate_plain), guarded ones after this step's forward has scored them.
        #    Whatever goes wrong for one row (its callback, its sampling settings)
        #    fails that row alone.
        for row in self._rows:
            try:
                self._choose(row)
            except Exception as exc:
                row.fail(exc)
        self._drop_finished()
        if not self._rows:
            return

        # 2. One forward for every row.
        rows = self._rows
        assert self._mask is not None
        device = self._mask.device
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=torch.long, device=device)], 1)
        scoring = any(row.request.guard is not None for row in rows)
        out = self.lm(
            input_ids=torch.tensor([[row.token] for row in rows], device=device),  # (B, 1)
            attention_mask=mask,  # (B, L+1)
            position_ids=torch.tensor([[row.length] for row in rows], device=device),
            past_key_values=self._cache,
            use_cache=True,
            output_hidden_states=scoring,
            logits_to_keep=1,
        )
        self._cache, self._mask = out.past_key_values, mask
        self.stats.steps += 1
        self.stats.row_steps += len(rows)
        self.stats.max_batch = max(self.stats.max_batch, len(rows))
        self._tell_stats()

        # 3. Score guarded rows with their own heads (grouped: one matmul per head).
        probs: dict[int, float] = {}
        if scoring:
            by_guard: dict[int, list[int]] = {}
            for i, row in enumerate(rows):
                if row.request.guard is not None:
                    by_guard.setdefault(id(row.request.guard), []).append(i)
            for indices in by_guard.values():
                guard = rows[indices[0]].request.guard
                assert guard is not None
                try:
                    picked = tuple(h[indices, -1:] for h in out.hidden_states)  # (b, 1, H)
                    values = guard.v_head(guard.select_hidden(picked))[:, -1]  # (b,)
                    probs.update(zip(indices, token_probs(values).tolist(), strict=True))
                except Exception as exc:  # one constitution's broken head
                    for i in indices:
                        rows[i].fail(exc)

        # 4. Deliver, decide halting, keep the next logits.
        for i, row in enumerate(rows):
            row.length += 1
            row.logits = out.logits[i, -1]
            if row.pending is None or row.finished:
                continue
            request, token = row.request, row.pending
            token.prob = probs[i]
            token.score = row.aggregator.update(token.prob)
            token.halted = request.halt and reaches(token.score, request.threshold)
            request.out.put(token)
            row.pending = None
            row.index += 1
            if token.halted or row.index >= request.max_new_tokens:
                row.finish()
        self._drop_finished()

    def _choose(self, row: _Row) -> None:
        request = row.request
        if request.abandoned.is_set() or row.index >= request.max_new_tokens or _stopped(request):
            row.finish()
            return
        assert row.logits is not None
        token = sample_token(row.logits, request.temperature, request.top_p, row.generator)
        if token in self._eos:
            row.finish()
            return
        row.token = token
        row.pending = TokenScore(row.index, token, math.nan, math.nan, row.decoder.add(token))
        if request.guard is None:
            request.out.put(row.pending)
            row.pending = None
            row.index += 1
            if row.index >= request.max_new_tokens:
                row.finish()

    def _drop_finished(self) -> None:
        keep = [i for i, row in enumerate(self._rows) if not row.finished]
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        assert self._mask is not None
        index = torch.tensor(keep, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row carry nothing: cut them.
        start = int((mask.sum(0) > 0).nonzero()[0])
        self._mask = mask[:, start:]
        self._cache = _to_cache(
            [
                (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
                for k, v in _cache_tensors(self._cache)
            ],
            self.lm.config,
        )
        self._rows = [self._rows[i] for i in keep]

    def _fail_all(self, exc: BaseException) -> None:
        for row in self._rows:
            row.fail(exc)
        self._rows, self._cache, self._mask = [], None, None


# ------------------------------------------------------------------------ KV cache glue


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence axis (-2 for K/V (B,h,L,d), -1 for masks (B,L)) on the left."""
    axis = -2 if tensor.dim() == 4 else -1
    missing = length - tensor.shape[axis]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[axis] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=axis)


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer (keys, values), each (B, heads, L, head_dim), from a DynamicCache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers < 4.56


def _to_cache(tensors: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=tensors, config=config)
