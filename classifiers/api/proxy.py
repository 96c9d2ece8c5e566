"""The guarded proxy: /v1/chat/completions for the model `SLUG/NAME`.

A client asks for `cbrn-demo/vllm-llama` (a constitution and an upstream model
attached to its guard policy). Then:

1. the input classifier scores the prompt; a blocked prompt never reaches the
   upstream (the reply is the refusal, `finish_reason: "content_filter"`);
2. the reply streams from the upstream while the output classifier scores it with
   its own KV cache (ml/serving/reply.py): all text that arrived while the last
   forward ran is scored in ONE forward, and only text whose tokens scored below
   the threshold is forwarded; on a crossing the upstream request is closed and the
   reply ends with the refusal;
3. shadow mode forwards everything as it arrives and records what enforce would
   have done; mode "off" forwards unscored.

When the classifiers cannot decide in time (no active model, an exception, slower
than the policy's `guard_timeout_s`), the policy's failure mode applies: "closed"
refuses (503 before the reply, the refusal mid-reply), "open" forwards unguarded
and says so in the guard field. Upstream failures come back in OpenAI's error shape
with the upstream's status (502 unreachable, 504 too slow). A client that goes away
closes the upstream request. Every conversation is stored with the upstream's name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse

from classifiers.api import batching
from classifiers.api.errors import ApiError
from classifiers.api.ratelimit import check_rate
from classifiers.api.requests import (
    check_lengths,
    check_prompt_tokens,
    last_user_content,
    optional_number,
    parse_messages,
    resolve_constitution,
    target_for,
)
from classifiers.api.shapes import finish_reason, guard_field, sse
from classifiers.core.model_cache import shared_generator
from classifiers.guard import engines, turns
from classifiers.guard.upstream_client import (
    UpstreamFailure,
    UpstreamTarget,
    open_stream,
)
from classifiers.ml.serving.engine import GuardConfig, GuardResult, InputDecision
from classifiers.ml.serving.reply import ReplyGuard
from classifiers.ml.types import Message
from classifiers.models import ApiToken, Conversation, FailureMode, Upstream

logger = logging.getLogger(__name__)

# Output scoring runs here (one forward per batch of arrived text per stream);
# storing a finished conversation runs on its own threads so a slow database
# never holds up scoring.
_scoring = ThreadPoolExecutor(max_workers=16, thread_name_prefix="proxy-score")
_storing = ThreadPoolExecutor(max_workers=4, thread_name_prefix="proxy-store")
# What reaches the upstream besides the scored messages: sampling settings only.
# An allow-list: fields such as tools, documents, response_format schemas or chat
# template switches would carry text (or change the prompt) the guard never saw.
_NUMBERS = {  # name: (low, high, integer)
    "temperature": (0, 2, False), "top_p": (0, 1, False),
    "presence_penalty": (-2, 2, False), "frequency_penalty": (-2, 2, False),
    "seed": (-(2**63), 2**63 - 1, True),
}


@dataclass
class ProxyPlan:
    token: ApiToken
    constitution: Any
    mode: str
    model_name: str  # "SLUG/NAME", echoed back as "model"
    upstream: UpstreamTarget
    messages: list[Message]
    payload: dict[str, Any]  # what the upstream receives (model and stream set later)
    stream: bool
    setup: engines.GuardSetup | None  # None: nothing scores (mode off, failed open)
    config: GuardConfig
    fail_open: bool
    guard_timeout_s: float
    guard_failure: str = ""  # why the guard did not run (fail open), shown to the client


def is_proxy_model(model: Any) -> bool:
    return isinstance(model, str) and "/" in model


def prepare(token: ApiToken, body: dict[str, Any]) -> ProxyPlan:
    """Validate a request for `SLUG/NAME` (sync: database work). 4xx on bad input."""
    model_name = body["model"]
    slug, _, name = model_name.partition("/")
    constitution = resolve_constitution(token, slug, param="model")
    target = target_for(token, constitution)
    policy = target.policy
    upstream = policy.upstreams.filter(name=name).first() if policy.pk else None
    if upstream is None:
        raise ApiError(
            404, f"unknown model {model_name!r}: no upstream named {name!r} is attached to "
            f"{constitution.slug!r} (GET /v1/models lists what you can use)",
            param="model", code="model_not_found",
        )  # fmt: skip
    check_rate(user_id=token.user_id, scope=constitution.slug,
               limit=policy.requests_per_minute)  # fmt: skip
    messages = parse_messages(body.get("messages"))
    check_lengths(messages, policy, param="messages")
    # The output scorer prefills the whole prompt: bounded like the embedded model's.
    check_prompt_tokens(messages, policy, shared_generator()[1])
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    asked = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    max_tokens = optional_number(body, asked, low=1, high=10**9, integer=True)
    if max_tokens is not None and max_tokens > upstream.max_tokens:
        raise ApiError(
            400, f"{asked} is {max_tokens}; upstream {upstream.name} allows at most "
            f"{upstream.max_tokens} new tokens per request",
            param=asked, code="max_tokens_too_large",
        )  # fmt: skip
    optional_number(body, "n", low=1, high=1, integer=True)  # only n=1
    # The upstream gets the messages the guard scored, a bounded reply, and the
    # sampling settings, checked (NaN, 1e999 and strings never reach it).
    payload: dict[str, Any] = {"messages": messages, "max_tokens": int(max_tokens or upstream.max_tokens)}
    for name, (low, high, integer) in _NUMBERS.items():
        value = optional_number(body, name, low=low, high=high, integer=integer)
        if value is not None:
            payload[name] = value
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > 4 or not all(
            isinstance(x, str) and 0 < len(x) <= 100 for x in stops
        ):
            raise ApiError(400, "stop must be a string or up to 4 strings", param="stop")
        payload["stop"] = stop
    # Shadow mode observes and never refuses: a guard that fails there fails open.
    fail_open = policy.failure_mode == FailureMode.OPEN or target.mode == "shadow"
    setup, failure = None, ""
    if target.mode != "off":
        try:
            setup = engines.guard_setup(constitution, mode=target.mode)
        except engines.GuardUnavailable as exc:
            if not fail_open:
                raise ApiError(503, f"{exc}; this constitution fails closed",
                               code="classifier_unavailable") from None  # fmt: skip
            failure = str(exc)
    config = GuardConfig(mode=target.mode)
    return ProxyPlan(
        token=token, constitution=constitution, mode=target.mode, model_name=model_name,
        upstream=UpstreamTarget.of(upstream),
        messages=messages, payload=payload, stream=stream,
        setup=setup, config=config, fail_open=fail_open,
        guard_timeout_s=policy.guard_timeout_s, guard_failure=failure,
    )  # fmt: skip


@dataclass
class ProxyRun:
    """One proxied reply: the input decision, the relay, what to store and answer."""

    plan: ProxyPlan
    result: GuardResult = field(default_factory=GuardResult)
    guard: ReplyGuard | None = None
    delivered: list[str] = field(default_factory=list)
    upstream_finish: str | None = None
    usage: dict[str, Any] | None = None
    failed_closed: bool = False  # the reply was cut because the guard failed
    cancelled: bool = False
    conversation_id: int | None = None
    watch: turns.Stopwatch = field(default_factory=turns.Stopwatch)
    prefill: Any = None  # the output scorer being built (a future), until the relay takes it
    received: list[str] = field(default_factory=list)  # all the upstream's text so far
    upstream_error: str = ""  # the upstream failed (the reply ends where it stopped)
    stored: bool = False
    _store_lock: threading.Lock = field(default_factory=threading.Lock)

    # -- input ---------------------------------------------------------------------------

    async def decide_input(self) -> InputDecision | None:
        plan = self.plan
        engine = plan.setup.engine if plan.setup else None
        if engine is None or engine.input_guard is None:
            return None
        future = batching.classify_one(
            plan.setup.input_model.pk,
            lambda conversations: engine.classify(conversations, mode="enforce"),
            plan.messages,
        )
        try:
            decision = await asyncio.wait_for(asyncio.wrap_future(future), plan.guard_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any classifier failure is a guard failure
            self._guard_failed(f"the input classifier failed: {_describe(exc, plan)}",
                               part="input")  # fmt: skip
            return None
        decision = InputDecision(**{**decision.to_dict(),
                                    "blocked": decision.flagged and plan.mode == "enforce"})  # fmt: skip
        self.result.input = decision
        self.result.would_block = decision.flagged and plan.mode == "shadow"
        return decision

    def _guard_failed(self, why: str, *, part: str) -> None:
        """The policy's failure mode for one classifier (`part`: "input", decided
        before the reply, or "output", during it). Open: that classifier is skipped
        (a failed input classifier leaves the output one guarding the reply).
        Closed: 503 before the reply; the refusal during it."""
        logger.warning("guard failure on %s: %s", self.plan.model_name, why)
        failures = [f for f in (self.plan.guard_failure, why) if f]
        self.plan.guard_failure = "; ".join(failures)
        if self.plan.fail_open:
            if part == "output":
                self.guard = None
            return
        if part == "input":
            raise ApiError(503, f"{why}; this constitution fails closed", code="guard_unavailable")
        self.failed_closed = True

    def build_output_guard(self) -> ReplyGuard | None:
        """The output scorer with the prompt prefilled (on a worker thread)."""
        setup = self.plan.setup
        if setup is None:
            return None
        return setup.engine.reply_guard(self.plan.messages, mode=self.plan.mode, result=self.result)

    async def start_output_guard(self) -> None:
        """Take the prefilled scorer; its threshold follows the prompt's category.
        Awaited once the upstream answered, so the prefill overlaps the upstream's
        own time to first token."""
        prefill, self.prefill = self.prefill, None
        if prefill is None:
            return
        try:
            guard = await asyncio.wait_for(prefill, self.plan.guard_timeout_s)
        except Exception as exc:  # noqa: BLE001
            self._guard_failed(f"the output classifier failed: {_describe(exc, self.plan)}",
                               part="output")  # fmt: skip
            return
        if guard is None or self.plan.setup is None:
            return
        guard.threshold = self.plan.setup.engine.output_threshold(self.result.input)
        self.guard = guard
        if math.isfinite(guard.threshold):
            self.result.output_threshold = guard.threshold

    def settle_blocked(self) -> bool:
        """Whether the input classifier blocked the prompt (the reply is then the
        refusal and the upstream is never asked)."""
        blocked = self.result.input is not None and self.result.input.blocked
        if blocked:
            self.result.finish_reason = "blocked"
        return blocked

    # -- the relay -----------------------------------------------------------------------

    async def texts(self) -> AsyncIterator[str]:
        """The reply's text as it may leave the proxy. Raises UpstreamFailure."""
        loop = asyncio.get_running_loop()
        arrived: list[str] = []
        wake = asyncio.Event()
        done = False
        shadow_queue: asyncio.Queue[tuple[str, bool] | None] | None = None
        shadow_task = None

        async with open_stream(self.plan.upstream, self.plan.payload) as upstream:
            await self.start_output_guard()
            if self.failed_closed:  # the output classifier cannot guard this reply
                return

            async def read() -> None:
                nonlocal done
                try:
                    async for piece in upstream.pieces():
                        arrived.append(piece)
                        wake.set()
                finally:
                    done = True
                    wake.set()

            reader = asyncio.create_task(read())
            if self.guard is not None and not self.guard.enforce:
                shadow_queue = asyncio.Queue()
                shadow_task = asyncio.create_task(self._score_behind(shadow_queue))
            try:
                while True:
                    await wake.wait()
                    wake.clear()
                    finished = done
                    text = "".join(arrived)
                    arrived.clear()
                    if text:
                        self.received.append(text)
                        self.watch.mark_first()
                    guard = self.guard
                    if guard is None or shadow_queue is not None:
                        if text:
                            self.delivered.append(text)
                            yield text
                        if shadow_queue is not None:
                            shadow_queue.put_nowait((text, finished))
                    else:
                        released = await self._score(loop, guard, text, finished)
                        if released:
                            self.delivered.append(released)
                            yield released
                        if guard.stopped or self.failed_closed:
                            break
                    if finished:
                        break
                if reader.done() and reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)  # it ends before the stream closes
                self.upstream_finish = upstream.finish_reason
                self.usage = upstream.usage
                if shadow_queue is not None:
                    shadow_queue.put_nowait(None)
        if shadow_task is not None:
            try:
                await asyncio.wait_for(shadow_task, self.plan.guard_timeout_s)
            except Exception as exc:  # noqa: BLE001 - shadow scoring never fails a reply
                logger.warning("shadow scoring of %s failed: %s", self.plan.model_name, exc)

    async def _score(self, loop: Any, guard: ReplyGuard, text: str, final: bool) -> str:
        """Score what arrived in one forward; the text it releases ("" when halted)."""

        def work() -> str:
            tokens = guard.feed(text, final=final)
            if final:
                tokens += guard.finish()
            return "".join(t.text for t in tokens)

        try:
            return await asyncio.wait_for(loop.run_in_executor(_scoring, work),
                                          self.plan.guard_timeout_s)  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            self._guard_failed(f"the output classifier failed: {_describe(exc, self.plan)}",
                               part="output")  # fmt: skip
            if self.guard is None:
                # Failed open: everything received and not yet delivered goes out
                # unscored (the proxy's own record: the scorer may never have seen it).
                sent = sum(len(t) for t in self.delivered)
                return "".join(self.received)[sent:]
            return ""

    async def _score_behind(self, queue: asyncio.Queue[tuple[str, bool] | None]) -> None:
        """Shadow mode: score what was already forwarded, never holding it up."""
        loop = asyncio.get_running_loop()
        guard = self.guard
        assert guard is not None
        while (item := await queue.get()) is not None:
            text, final = item

            def work(text: str = text, final: bool = final) -> None:
                guard.feed(text, final=final)
                if final:
                    guard.finish()

            await loop.run_in_executor(_scoring, work)

    # -- the outcome ---------------------------------------------------------------------

    def close_result(self) -> GuardResult:
        """Fill the result from what happened (call once the relay has ended)."""
        result, guard, plan = self.result, self.guard, self.plan
        result.generated = "".join(self.delivered)
        if guard is not None:
            result.tokens = list(guard.tokens)
            result.halted_at = guard.halted_at
            result.max_output_score = guard.max_score
            if plan.mode == "shadow" and guard.halted_at is not None:
                result.would_block = True
        if result.finish_reason == "blocked":
            result.text = plan.config.refusal
            return result
        halted = (guard is not None and guard.stopped) or self.failed_closed
        if halted:
            result.finish_reason = "halted"
            result.text = result.generated + ("\n\n" if result.generated else "") + plan.config.refusal
        else:
            result.text = result.generated
            result.finish_reason = (
                "cancelled" if self.cancelled else
                "upstream_error" if self.upstream_error else
                "length" if self.upstream_finish == "length" else "stop"
            )  # fmt: skip
        margin = plan.config.near_margin
        near_input = result.input is not None and result.input.score >= result.input.threshold - margin
        near_output = result.output_threshold is not None and (
            (result.max_output_score or 0.0) >= result.output_threshold - margin
        )
        result.near_threshold = near_input or near_output
        return result

    def store(self) -> int | None:
        """Store the conversation once (on a worker thread; closes its connection).
        A failure is logged, never turned into an error for a reply already made."""
        with self._store_lock:
            if self.stored:
                return self.conversation_id
            self.stored = True
        try:
            return self._store()
        except Exception:
            logger.exception("could not store a proxied conversation (%s)", self.plan.model_name)
            return None
        finally:
            connections.close_all()

    def _store(self) -> int:
        plan, result = self.plan, self.result
        _storable(result)
        close_old_connections()
        setup = plan.setup
        conversation = Conversation.objects.create(
            user=plan.token.user, constitution=plan.constitution,
            source=Conversation.Source.API, api_token=plan.token, mode=plan.mode,
            input_model=setup.input_model if setup else None,
            output_model=setup.output_model if setup else None,
            # The row may have been deleted meanwhile: the name is what stays.
            upstream=Upstream.objects.filter(pk=plan.upstream.pk).first(),
            upstream_name=plan.upstream.name,
        )  # fmt: skip
        shadow = None
        if setup is not None and setup.shadow_engine is not None:
            try:
                shadow = engines.shadow_decision(setup, plan.messages, result.generated)
            except Exception:  # a broken candidate model must not break live traffic
                logger.exception("shadow model failed on conversation %s", conversation.pk)
        turns.record_turn(
            conversation=conversation, user_content=last_user_content(plan.messages),
            result=result, latency_ms=self.watch.elapsed_ms,
            first_token_ms=self.watch.first, shadow=shadow,
        )  # fmt: skip
        self.conversation_id = conversation.pk
        return conversation.pk

    def guard_payload(self) -> dict[str, Any]:
        setup = self.plan.setup
        payload = guard_field(
            self.result, mode=self.plan.mode,
            input_model=setup.input_model if setup else None,
            output_model=setup.output_model if setup else None,
            conversation_id=self.conversation_id,
        )  # fmt: skip
        payload["upstream"] = self.plan.upstream.name
        if self.plan.guard_failure:
            payload["guard_failure"] = self.plan.guard_failure
            payload["failed_open"] = self.plan.fail_open
        return payload


def _storable(result: GuardResult) -> None:
    """Upstream text PostgreSQL can store: no NUL, no lone surrogates (a reply
    already delivered must not fail to be recorded because of one character)."""

    def clean(text: str) -> str:
        return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")

    result.text, result.generated = clean(result.text), clean(result.generated)
    for token in result.tokens:
        token.text = clean(token.text)


def _describe(exc: BaseException, plan: ProxyPlan) -> str:
    if isinstance(exc, TimeoutError):
        return f"no decision within {plan.guard_timeout_s:g}s"
    return f"{type(exc).__name__}: {exc}"


def _as_api_error(failure: UpstreamFailure) -> ApiError:
    return ApiError(failure.status, failure.message, code=failure.code)


async def respond(plan: ProxyPlan) -> HttpResponse:
    run = ProxyRun(plan)
    # The output scorer's prompt prefill runs beside the input classifier and the
    # upstream's first token (time to first token); the upstream is contacted only
    # once the input decision is in.
    loop = asyncio.get_running_loop()
    if plan.setup is not None:
        run.prefill = loop.run_in_executor(_scoring, run.build_output_guard)
        # A blocked prompt never takes the scorer: its failure is not an error then.
        run.prefill.add_done_callback(lambda f: f.cancelled() or f.exception())
    await run.decide_input()
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if plan.stream:
        response = StreamingHttpResponse(_stream(run, ident, created), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
        return response
    return await _complete(run, ident, created)


async def _store(run: ProxyRun) -> None:
    await asyncio.get_running_loop().run_in_executor(_storing, run.store)


async def _complete(run: ProxyRun, ident: str, created: int) -> HttpResponse:
    if not run.settle_blocked():
        try:
            async with aclosing(run.texts()) as texts:
                async for _ in texts:
                    pass
        except UpstreamFailure as failure:
            run.upstream_error = failure.message
            run.close_result()
            await _store(run)  # the attempt is recorded, then the client hears why
            raise _as_api_error(failure) from None
    result = run.close_result()
    await _store(run)
    filtered = finish_reason(result) == "content_filter"
    return JsonResponse({
        "id": ident, "object": "chat.completion", "created": created,
        "model": run.plan.model_name,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": result.text,
                        "refusal": run.plan.config.refusal if filtered else None},
            "finish_reason": finish_reason(result), "logprobs": None,
        }],
        "usage": run.usage or {"completion_tokens": len(result.tokens)},
        "guard": run.guard_payload(),
    })  # fmt: skip


async def _stream(run: ProxyRun, ident: str, created: int) -> AsyncIterator[bytes]:
    plan = run.plan

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse({
            "id": ident, "object": "chat.completion.chunk", "created": created,
            "model": plan.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        })  # fmt: skip

    ended = False
    failure: UpstreamFailure | None = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        if not run.settle_blocked():
            try:
                async with aclosing(run.texts()) as texts:
                    async for text in texts:
                        yield chunk({"content": text})
            except UpstreamFailure as exc:
                failure = exc
                run.upstream_error = exc.message
        result = run.close_result()
        await _store(run)
        ended = True
        if result.finish_reason == "blocked":
            yield chunk({"content": plan.config.refusal})
        elif result.finish_reason == "halted":
            yield chunk({"content": ("\n\n" if result.generated else "") + plan.config.refusal})
        yield chunk({}, finish_reason(result), guard=run.guard_payload(), usage=run.usage)
        if failure is not None:
            yield sse(_as_api_error(failure).to_dict())
        yield sse("[DONE]")
    finally:
        if not ended:
            # The client went away: the relay's exit closed the upstream request;
            # store what was delivered, without waiting (this task is cancelled).
            run.cancelled = True
            run.close_result()
            _storing.submit(run.store)
