"""Reply scoring on /api/v1/classify: the output classifier on a reply written elsewhere.

Two forms, for gateways that run their own model:

* whole: `messages` ending with an assistant message. The reply is scored as the
  answer to the messages before it: per-token scores, the maximum, the index where
  enforce would halt, the verdict.
* incremental: `reply_stream: {"id", "delta", "final"}` with `messages` (the prompt)
  on the first call. Each call scores the next chunk and answers with the new
  tokens and `released`: the text that may now be forwarded (scored below the
  threshold; the last token waits for more text, see ml/serving/reply.py).

A stream's state (prompt, text so far, what was released) lives in Redis for ten
minutes, so any server process can take the next chunk; the process that scored the
last one keeps its KV cache and continues in one forward, another rebuilds it from
the stored text once. The conversation is stored when the reply ends or halts.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import connections

from classifiers.api.errors import ApiError
from classifiers.api.requests import (
    Target,
    check_lengths,
    check_prompt_tokens,
    last_user_content,
    parse_messages,
)
from classifiers.api.shapes import finite, model_ref
from classifiers.guard import engines, turns
from classifiers.ml.serving.engine import GuardResult
from classifiers.ml.serving.reply import ReplyGuard
from classifiers.ml.types import Message
from classifiers.models import ApiToken, Conversation

MAX_REPLY_CHARS = 32_000  # a reply longer than this is refused (413)
STREAM_TTL_S = 600  # an idle stream is forgotten after this long
_LOCAL_STREAMS = 256  # KV caches kept per process (least recently used go first)
_STREAM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

_LOCAL_TOKENS = 200_000  # KV-cached tokens kept per process, all streams together
# key -> (guard, chars fed, last use): the scorer of a stream whose next chunk is
# likely to come to this process again.
_local: OrderedDict[str, tuple[ReplyGuard, int, float]] = OrderedDict()
_local_lock = threading.Lock()
_stream_locks: dict[str, threading.Lock] = {}


@dataclass
class ReplyPlan:
    token: ApiToken
    target: Target
    prompt: list[Message]
    text: str  # the whole reply, or this call's chunk
    setup: engines.GuardSetup
    stream_id: str | None = None
    final: bool = True
    state: dict[str, Any] | None = None  # a stream's stored state (None: a new one)

    @property
    def key(self) -> str:
        return _stream_key(self.token, self.stream_id or "")


def wants_reply_scoring(body: dict[str, Any]) -> bool:
    if "reply_stream" in body:
        return True
    messages = body.get("messages")
    return (
        isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "assistant"
    )  # fmt: skip


def _stream_key(token: ApiToken, stream_id: str) -> str:
    return f"reply-stream:{token.pk}:{stream_id}"


def continues_a_stream(token: ApiToken, body: dict[str, Any]) -> bool:
    """A later chunk of a reply stream that exists (rate-limited once, at its start)."""
    spec = body.get("reply_stream")
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not _STREAM_ID.match(spec["id"]):
        return False
    return cache.get(_stream_key(token, spec["id"])) is not None


def prepare(token: ApiToken, body: dict[str, Any], target: Target) -> ReplyPlan:
    """Validate a reply-scoring request (sync: database and Redis)."""
    if "text" in body:
        raise ApiError(400, "reply scoring takes messages (the prompt, and the reply as "
                       "the last assistant message), not text", param="text")  # fmt: skip
    if target.mode == "off":
        raise ApiError(400, f"the guard of {target.constitution.slug!r} is off for this "
                       "token: there is no output classifier to score with", param="messages")  # fmt: skip
    spec = body.get("reply_stream")
    plan_kwargs: dict[str, Any] = {}
    if spec is None:
        messages = parse_messages(body.get("messages"))
        check_lengths(messages[:-1], target.policy, param="messages")
        prompt, text = messages[:-1], messages[-1]["content"]
        if not any(m["role"] == "user" for m in prompt):
            raise ApiError(400, "the reply needs a user message before it", param="messages")
        if len(text) > MAX_REPLY_CHARS:
            raise ApiError(413, f"the reply is {len(text)} characters; at most {MAX_REPLY_CHARS}",
                           param="messages", code="reply_too_long")  # fmt: skip
    else:
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), str) or not _STREAM_ID.match(spec["id"]):
            raise ApiError(400, "reply_stream must be an object with id (1-128 letters, digits "
                           "or _.:-), delta (a string) and final (true/false)", param="reply_stream")  # fmt: skip
        text = spec.get("delta", "")
        final = spec.get("final", False)
        if not isinstance(text, str) or not isinstance(final, bool):
            raise ApiError(400, "reply_stream.delta must be a string and final true or false",
                           param="reply_stream")  # fmt: skip
        key = _stream_key(token, spec["id"])
        state = cache.get(key)
        if state is None:
            if "messages" not in body:
                raise ApiError(404, f"no reply stream {spec['id']!r} (streams are forgotten after "
                               f"{STREAM_TTL_S // 60} idle minutes); start it with messages",
                               param="reply_stream", code="stream_not_found")  # fmt: skip
            prompt = parse_messages(body["messages"])
            check_lengths(prompt, target.policy, param="messages")
            if prompt[-1]["role"] == "assistant":
                raise ApiError(400, "with reply_stream, messages is the prompt; send the reply "
                               "in reply_stream.delta", param="messages")  # fmt: skip
        else:
            if state["done"]:
                raise ApiError(409, f"reply stream {spec['id']!r} has ended", param="reply_stream",
                               code="stream_ended")  # fmt: skip
            prompt = state["prompt"]
        if len(state["text"] if state else "") + len(text) > MAX_REPLY_CHARS:
            raise ApiError(413, f"the reply would pass {MAX_REPLY_CHARS} characters",
                           param="reply_stream", code="reply_too_long")  # fmt: skip
        plan_kwargs = {"stream_id": spec["id"], "final": final, "state": state}
    try:
        setup = engines.guard_setup(target.constitution, mode=target.mode, with_shadow=False)
    except engines.GuardUnavailable as exc:
        raise ApiError(503, str(exc), code="classifier_unavailable") from None
    if setup.output_model is None:
        raise ApiError(503, f"constitution {target.constitution.slug!r} has no active output "
                       "classifier yet; train one and activate it", code="classifier_unavailable")  # fmt: skip
    if plan_kwargs.get("state") is None:  # a new reply: its prompt is prefilled
        check_prompt_tokens(prompt, target.policy, setup.engine.tokenizer)
    return ReplyPlan(token, target, prompt, text, setup, **plan_kwargs)


def _category(plan: ReplyPlan) -> str | None:
    """The prompt's category (per-category thresholds), from the input classifier."""
    if plan.state is not None:
        return plan.state.get("category")
    engine = plan.setup.engine
    if engine.input_guard is None:
        return None
    return engine.classify([plan.prompt], mode="enforce")[0].category


def score(plan: ReplyPlan) -> dict[str, Any]:
    """Score the reply or the stream's next chunk (on a worker thread)."""
    try:
        started = time.perf_counter()
        if plan.stream_id is None:
            guard = _new_guard(plan, _category(plan))
            new = guard.feed(plan.text, final=True) + guard.finish()
            payload = _payload(plan, guard, new)
            payload["conversation_id"] = _store(plan, guard, started)
            return payload
        with _local_lock:
            lock = _stream_locks.setdefault(plan.key, threading.Lock())
        with lock:
            return _score_chunk(plan, started)
    finally:
        connections.close_all()


def _new_guard(plan: ReplyPlan, category: str | None) -> ReplyGuard:
    guard = plan.setup.engine.reply_guard(plan.prompt, mode=plan.target.mode, category=category)
    assert guard is not None  # an output model exists and the mode is not off
    return guard


def _score_chunk(plan: ReplyPlan, started: float) -> dict[str, Any]:
    state = cache.get(plan.key) or plan.state
    if state is None:
        category = _category(plan)
        state = {"prompt": plan.prompt, "text": "", "released": 0, "category": category, "done": False}
    with _local_lock:
        local = _local.pop(plan.key, None)
    if local is not None and local[1] == len(state["text"]) and state["text"] == local[0].text:
        guard = local[0]
    else:  # another process scored the last chunk: rebuild from the stored text
        guard = _new_guard(plan, state["category"])
        if state["text"]:
            guard.feed(state["text"])
        guard.released = state["released"]
    new = guard.feed(plan.text, final=plan.final)
    if plan.final:
        new += guard.finish()
    done = plan.final or guard.stopped
    state.update(text=guard.text, released=guard.released, done=done)
    cache.set(plan.key, state, STREAM_TTL_S)
    payload = _payload(plan, guard, new)
    payload["stream_id"] = plan.stream_id
    if done:
        with _local_lock:
            _stream_locks.pop(plan.key, None)
        payload["conversation_id"] = _store(plan, guard, started)
        return payload
    with _local_lock:
        _local[plan.key] = (guard, len(guard.text), time.monotonic())
        _evict()
    return payload


def _evict() -> None:
    """Drop idle scorers (their stream is forgotten in Redis too) and the oldest
    ones beyond the per-process bounds. Call with _local_lock held."""
    now = time.monotonic()
    for key in [k for k, (_, _, used) in _local.items() if now - used > STREAM_TTL_S]:
        del _local[key]
        _stream_locks.pop(key, None)
    tokens = sum(len(g.scorer.token_ids) for g, _, _ in _local.values())
    while _local and (len(_local) > _LOCAL_STREAMS or tokens > _LOCAL_TOKENS):
        key, (guard, _, _) = _local.popitem(last=False)
        tokens -= len(guard.scorer.token_ids)


def _payload(plan: ReplyPlan, guard: ReplyGuard, new: list[Any]) -> dict[str, Any]:
    ended = plan.final or guard.stopped
    halts = guard.halted_at is not None
    return {
        "tokens": [{"text": t.text, "score": finite(t.score)} for t in new],
        "released": "".join(t.text for t in new),
        "max_score": finite(guard.max_score),
        "threshold": finite(guard.threshold),
        "halt_index": guard.halted_at,
        "halted": guard.stopped,
        "verdict": "halt" if halts else ("pass" if ended else "pending"),
        "mode": plan.target.mode,
        "constitution": plan.target.constitution.slug,
        "model": model_ref(plan.setup.output_model),
    }


def _store(plan: ReplyPlan, guard: ReplyGuard, started: float) -> int:
    """One conversation per scored reply, flagged like a guarded one."""
    result = GuardResult(
        text=guard.text, generated=guard.text, tokens=list(guard.tokens),
        output_threshold=finite(guard.threshold), halted_at=guard.halted_at,
        max_output_score=guard.max_score,
        finish_reason="halted" if guard.stopped else "classified",
        would_block=plan.target.mode == "shadow" and guard.halted_at is not None,
    )  # fmt: skip
    conversation = Conversation.objects.create(
        user=plan.token.user, constitution=plan.target.constitution,
        source=Conversation.Source.API, api_token=plan.token, mode=plan.target.mode,
        output_model=plan.setup.output_model,
    )  # fmt: skip
    turns.record_turn(
        conversation=conversation, user_content=last_user_content(plan.prompt), result=result,
        latency_ms=(time.perf_counter() - started) * 1000,
    )  # fmt: skip
    return conversation.pk
