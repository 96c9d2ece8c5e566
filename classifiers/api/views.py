"""API views: /api/v1/classify, /v1/chat/completions, /v1/models.

All are async. Database work runs through `sync_to_async` (thread-sensitive, as
Django does for sync views: one thread per request, connections closed with the
request); model work runs on other threads: classify through the dynamic batcher
(classifiers.api.batching), generation on `_generation`, whose tokens reach the
event loop through an asyncio.Queue. The loop itself never runs a model.

Every request that passes validation is stored as a Conversation (source "api")
with one Turn, so reviewers see API traffic beside the playground's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import wraps
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import close_old_connections, connections, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from classifiers.api import batching, proxy, reply_scoring
from classifiers.api.auth import authenticate, touch
from classifiers.api.errors import ApiError, error_response
from classifiers.api.ratelimit import check_rate
from classifiers.api.requests import (
    UNGUARDED_SUFFIX,
    Target,
    check_lengths,
    check_prompt_tokens,
    json_body,
    last_user_content,
    optional_number,
    parse_messages,
    resolve_constitution,
    target_for,
)
from classifiers.api.shapes import finish_reason, finite, guard_field, model_ref, sse
from classifiers.guard import engines, turns
from classifiers.ml.serving.engine import (
    GuardConfig,
    GuardEngine,
    GuardResult,
    InputDecision,
)
from classifiers.ml.types import Message, render_messages
from classifiers.models import (
    ActiveModel,
    ApiToken,
    Conversation,
    GuardPolicy,
    ModelVersion,
    Turn,
)
from constitutions.models import Constitution
from guardweb.roles import POLICY_AUTHOR, has_role

logger = logging.getLogger(__name__)

NEAR_MARGIN = 0.1  # scores this close under a threshold count as near-threshold
# Enough threads to fill a generation batch (they mostly wait on the batcher).
_generation = ThreadPoolExecutor(
    max_workers=max(4, settings.GENERATION_BATCH), thread_name_prefix="api-generate"
)
_engines: dict[int, GuardEngine] = {}  # input-only engines for classify, per model


def api_view(method: str) -> Callable[..., Any]:
    """Bearer-authenticated JSON endpoint: no session login, no CSRF, errors as
    OpenAI-shaped JSON, and never a 500 for a client's mistake."""

    def decorate(view: Callable[..., Awaitable[HttpResponse]]) -> Any:
        @wraps(view)
        async def wrapper(
            request: HttpRequest, *args: Any, **kwargs: Any
        ) -> HttpResponse:
            if request.method != method:
                response = error_response(
                    ApiError(
                        405,
                        f"use {method} for this endpoint",
                        code="method_not_allowed",
                    )
                )
                response["Allow"] = method
                return response
            try:
                return await view(request, *args, **kwargs)
            except ApiError as error:
                return error_response(error)

        return login_not_required(csrf_exempt(wrapper))

    return decorate


# ----------------------------------------------------------------------- classify


@dataclass
class ClassifyPlan:
    token: ApiToken
    target: Target
    messages: list[Message]
    input_model: ModelVersion | None
    engine: GuardEngine | None  # None in mode "off": nothing is scored


def _input_engine(model: ModelVersion) -> GuardEngine:
    """An engine with only the input classifier (no generator to load)."""
    engine = _engines.get(model.pk)
    if engine is None:
        engine = GuardEngine(
            input_guard=engines.input_guard_for(model), output_model=None,
            output_thresholds=None, lm=None, tokenizer=None,
        )  # fmt: skip
        _engines[model.pk] = engine
    return engine


def _prepare_classify(request: HttpRequest) -> ClassifyPlan | reply_scoring.ReplyPlan:
    token = authenticate(request)
    body = json_body(request)
    constitution = resolve_constitution(
        token, body.get("constitution"), param="constitution"
    )
    target = target_for(token, constitution)
    if not reply_scoring.continues_a_stream(token, body):
        # A reply stream counts once, when it starts: its chunks are one request.
        check_rate(user_id=token.user_id, scope=constitution.slug,
                   limit=target.policy.requests_per_minute)  # fmt: skip
    if reply_scoring.wants_reply_scoring(body):
        reply_plan = reply_scoring.prepare(token, body, target)
        touch(token)
        return reply_plan
    if ("text" in body) == ("messages" in body):
        raise ApiError(400, "send exactly one of text (a string) or messages (an array)",
                       param="text")  # fmt: skip
    if "text" in body:
        if not isinstance(body["text"], str) or not body["text"].strip():
            raise ApiError(400, "text must be a non-empty string", param="text")
        messages: list[Message] = [{"role": "user", "content": body["text"]}]
        check_lengths(messages, target.policy, param="text")
    else:
        messages = parse_messages(body["messages"])
        check_lengths(messages, target.policy, param="messages")
    input_model = (
        ActiveModel.objects.filter(constitution=constitution, kind="input")
        .select_related("model_version")
        .first()
    )
    model = input_model.model_version if input_model else None
    if target.mode != "off" and model is None:
        raise ApiError(
            503,
            f"constitution {constitution.slug!r} has no active input classifier yet; "
            "train one and activate it",
            code="classifier_unavailable",
        )  # fmt: skip
    engine = _input_engine(model) if target.mode != "off" and model else None
    touch(token)
    return ClassifyPlan(token, target, messages, model, engine)


def _flag_reason(decision: InputDecision | None) -> str:
    if decision is None:
        return ""
    if decision.flagged:
        return Conversation.FlagReason.INPUT_BLOCKED
    if decision.score >= decision.threshold - NEAR_MARGIN:
        return Conversation.FlagReason.NEAR_THRESHOLD
    return ""


def _store_classify(
    plan: ClassifyPlan, decision: InputDecision | None, latency_ms: float
) -> int:
    """One conversation + one turn per request: cheap enough to keep them all."""
    reason = _flag_reason(decision)
    mode = plan.target.mode
    with transaction.atomic():
        conversation = Conversation.objects.create(
            user=plan.token.user, constitution=plan.target.constitution,
            source=Conversation.Source.API, api_token=plan.token, mode=mode,
            input_model=plan.input_model if decision else None,
            flagged=bool(reason), flag_reason=reason,
            max_score=decision.score if decision else None,
        )  # fmt: skip
        Turn.objects.create(
            conversation=conversation, index=0,
            user_content=render_messages(plan.messages),
            input_score=decision.score if decision else None,
            input_category=decision.category if decision else "",
            input_threshold=decision.threshold if decision else None,
            finish_reason=(
                "blocked" if decision and decision.blocked else
                "flagged" if decision and decision.flagged else "classified"
            ),
            would_block=bool(decision and decision.flagged and mode == "shadow"),
            flag_reason=reason, latency_ms=latency_ms,
        )  # fmt: skip
    return conversation.pk


@api_view("POST")
async def classify(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    ready = batching.announce()  # the batcher waits for company only while some is coming
    try:
        plan = await sync_to_async(_prepare_classify)(request)
    finally:
        ready()
    if isinstance(plan, reply_scoring.ReplyPlan):
        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(_generation, reply_scoring.score, plan)
        ident = f"clf-stream-{plan.stream_id}" if plan.stream_id else f"clf-{payload['conversation_id']}"
        return JsonResponse({"id": ident, "object": "reply_score", **payload})
    decision: InputDecision | None = None
    if plan.engine is not None:
        engine = plan.engine
        # One decision per request, batched with concurrent ones (mode applied
        # below: the batch mixes requests whose tokens have different modes).
        future = batching.classify_one(
            plan.input_model.pk if plan.input_model else 0,
            lambda conversations: engine.classify(conversations, mode="enforce"),
            plan.messages,
        )
        decision = await asyncio.wrap_future(future)
        decision = InputDecision(**{
            **decision.to_dict(), "blocked": decision.flagged and plan.target.mode == "enforce"
        })  # fmt: skip
    latency_ms = (time.perf_counter() - started) * 1000
    conversation_id = await sync_to_async(_store_classify)(plan, decision, latency_ms)
    return JsonResponse({
        "id": f"clf-{conversation_id}",
        "score": finite(decision.score) if decision else None,
        "blocked": bool(decision and decision.blocked),
        "flagged": bool(decision and decision.flagged),
        "threshold": finite(decision.threshold) if decision else None,
        "category": decision.category if decision else None,
        "category_prob": finite(decision.category_prob) if decision else None,
        "model": model_ref(plan.input_model) if decision else None,
        "mode": plan.target.mode,
        "constitution": plan.target.constitution.slug,
        "conversation_id": conversation_id,
    })  # fmt: skip


# --------------------------------------------------------------- chat completions


@dataclass
class ChatPlan:
    token: ApiToken
    target: Target
    model_name: str  # echoed back as "model"
    messages: list[Message]
    stream: bool
    setup: engines.GuardSetup
    config: GuardConfig
    prompt_tokens: int  # counted once, by the limit check; reported as usage


def _split_model(token: ApiToken, model: Any) -> tuple[str | None, bool]:
    if model is None:
        return None, False
    if not isinstance(model, str) or not model:
        raise ApiError(
            400, "model must be a string (a constitution slug)", param="model"
        )
    if model.endswith(UNGUARDED_SUFFIX):
        return model[: -len(UNGUARDED_SUFFIX)], True
    return model, False


def _prepare_chat(request: HttpRequest) -> ChatPlan | proxy.ProxyPlan:
    token = authenticate(request)
    body = json_body(request)
    if proxy.is_proxy_model(body.get("model")):
        plan = proxy.prepare(token, body)
        touch(token)
        return plan
    slug, unguarded = _split_model(token, body.get("model"))
    constitution = resolve_constitution(token, slug, param="model")
    if unguarded and not has_role(token.user, POLICY_AUTHOR):
        raise ApiError(403, "only policy authors may use the unguarded model",
                       param="model", code="unguarded_forbidden")  # fmt: skip
    target = target_for(token, constitution, unguarded=unguarded)
    policy = target.policy
    check_rate(user_id=token.user_id, scope=constitution.slug,
               limit=policy.requests_per_minute)  # fmt: skip
    messages = parse_messages(body.get("messages"))
    check_lengths(messages, policy, param="messages")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    name = (
        "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    )
    max_tokens = optional_number(body, name, low=1, high=10**9, integer=True)
    if max_tokens is not None and max_tokens > policy.max_new_tokens:
        raise ApiError(
            400,
            f"{name} is {max_tokens}; this constitution allows at most "
            f"{policy.max_new_tokens} new tokens",
            param=name, code="max_tokens_too_large",
        )  # fmt: skip
    temperature = optional_number(body, "temperature", low=0, high=2)
    top_p = optional_number(body, "top_p", low=0, high=1)
    n = optional_number(body, "n", low=1, high=1, integer=True)
    del n  # only n=1 is supported; the check above rejects anything else
    seed = optional_number(body, "seed", low=-(2**63), high=2**63 - 1, integer=True)
    try:
        setup = engines.guard_setup(constitution, mode=target.mode)
    except engines.GuardUnavailable as exc:
        raise ApiError(503, str(exc), code="classifier_unavailable") from None
    prompt_tokens = check_prompt_tokens(messages, policy, setup.engine.tokenizer)
    config = setup.config(max_new_tokens=int(max_tokens) if max_tokens else None)
    config.temperature = float(temperature or 0.0)
    if top_p:
        config.top_p = float(top_p)
    if seed is not None:
        config.seed = int(seed)
    touch(token)
    model_name = constitution.slug + (UNGUARDED_SUFFIX if unguarded else "")
    return ChatPlan(token, target, model_name, messages, stream, setup, config, prompt_tokens)


@dataclass
class ChatOutcome:
    result: GuardResult
    conversation_id: int
    prompt_tokens: int


def _run_chat(
    plan: ChatPlan,
    on_event: Callable[[str, Any], None] | None,
    should_stop: Callable[[], bool] | None,
) -> ChatOutcome:
    """Generate on this (worker) thread; store the turn before reporting the end."""
    watch = turns.Stopwatch()
    try:
        result: GuardResult | None = None
        for event in plan.setup.engine.stream(
            plan.messages, plan.config, should_stop=should_stop
        ):
            if event.kind == "token":
                watch.mark_first()
                if on_event is not None:
                    on_event("token", event.token)
            elif event.kind == "end":
                result = event.result
        if result is None:
            raise RuntimeError("the guard stream ended without a result")
        outcome = ChatOutcome(
            result, _store_chat(plan, result, watch), plan.prompt_tokens
        )
        if on_event is not None:
            on_event("end", outcome)
        return outcome
    finally:
        # This thread is ours, not a request's: close its connection ourselves.
        connections.close_all()


def _store_chat(
    plan: ChatPlan, result: GuardResult, watch: turns.Stopwatch
) -> int:
    setup = plan.setup
    close_old_connections()
    conversation = Conversation.objects.create(
        user=plan.token.user, constitution=plan.target.constitution,
        source=Conversation.Source.API, api_token=plan.token, mode=plan.config.mode,
        input_model=setup.input_model if plan.config.mode != "off" else None,
        output_model=setup.output_model if plan.config.mode != "off" else None,
    )  # fmt: skip
    shadow = None
    if setup.shadow_engine is not None:
        try:
            shadow = engines.shadow_decision(
                setup, plan.messages, result.generated
            )
        except Exception:  # a broken candidate model must not break live traffic
            logger.exception("shadow model failed on conversation %s", conversation.pk)
    turns.record_turn(
        conversation=conversation, user_content=last_user_content(plan.messages),
        result=result, latency_ms=watch.elapsed_ms, first_token_ms=watch.first,
        shadow=shadow,
    )  # fmt: skip
    return conversation.pk


def _guard_field(plan: ChatPlan, outcome: ChatOutcome) -> dict[str, Any]:
    return guard_field(
        outcome.result, mode=plan.config.mode, input_model=plan.setup.input_model,
        output_model=plan.setup.output_model, conversation_id=outcome.conversation_id,
    )  # fmt: skip


def _completion(
    plan: ChatPlan, outcome: ChatOutcome, ident: str, created: int
) -> dict[str, Any]:
    result = outcome.result
    filtered = finish_reason(result) == "content_filter"
    completion_tokens = len(result.tokens)
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": plan.model_name,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant", "content": result.text,
                "refusal": plan.config.refusal if filtered else None,
            },
            "finish_reason": finish_reason(result),
            "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": outcome.prompt_tokens + completion_tokens,
        },
        "guard": _guard_field(plan, outcome),
    }  # fmt: skip


async def _stream_chat(
    plan: ChatPlan, ident: str, created: int
) -> AsyncIterator[bytes]:
    """SSE chunks in OpenAI's format; the engine runs on a worker thread and hands
    each token over through an asyncio.Queue. A client that disconnects cancels
    this generator, whose `finally` tells the engine to stop."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    stop = threading.Event()

    def push(kind: str, payload: Any) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        return sse({
            "id": ident, "object": "chat.completion.chunk", "created": created,
            "model": plan.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "logprobs": None}],
            **extra,
        })  # fmt: skip

    work = loop.run_in_executor(_generation, _run_chat, plan, push, stop.is_set)
    work.add_done_callback(lambda _: events.put_nowait(("done", None)))
    streamed = ""
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, payload = await events.get()
            if kind == "token" and payload.text:
                streamed += payload.text
                yield chunk({"content": payload.text})
            elif kind == "end":
                outcome: ChatOutcome = payload
                text = outcome.result.text
                # Blocked: the refusal is all there is; halted: it follows the
                # partial text already sent.
                rest = text[len(streamed) :] if text.startswith(streamed) else ""
                if rest:
                    yield chunk({"content": rest})
                yield chunk({}, finish_reason(outcome.result),
                            guard=_guard_field(plan, outcome))  # fmt: skip
            elif kind == "done":
                break
        error = work.exception()
        if error is not None:
            logger.error("chat stream failed", exc_info=error)
            yield sse(ApiError(500, f"generation failed: {error}").to_dict())
        yield sse("[DONE]")
    finally:
        stop.set()


@api_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    plan = await sync_to_async(_prepare_chat)(request)
    if isinstance(plan, proxy.ProxyPlan):
        return await proxy.respond(plan)
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if plan.stream:
        response = StreamingHttpResponse(
            _stream_chat(plan, ident, created), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not hold tokens back
        return response
    loop = asyncio.get_running_loop()
    outcome = await loop.run_in_executor(_generation, _run_chat, plan, None, None)
    return JsonResponse(_completion(plan, outcome, ident, created))


# ------------------------------------------------------------------------- models


def _model_entries(token: ApiToken) -> list[dict[str, Any]]:
    active = ActiveModel.objects.select_related("constitution", "model_version")
    by_constitution: dict[int, dict[str, Any]] = {}
    for row in active:
        entry = by_constitution.setdefault(row.constitution_id, {
            "constitution": row.constitution, "input": None, "output": None,
        })  # fmt: skip
        entry[row.kind] = row.model_version
    unguarded = has_role(token.user, POLICY_AUTHOR)
    entries = []
    for entry in sorted(by_constitution.values(), key=lambda e: e["constitution"].slug):
        constitution: Constitution = entry["constitution"]
        created = int(constitution.created_at.timestamp())
        base = {"object": "model", "created": created, "owned_by": "guardweb"}
        guard = {
            "constitution": constitution.slug, "name": constitution.name,
            "input_model": model_ref(entry["input"]),
            "output_model": model_ref(entry["output"]),
        }  # fmt: skip
        entries.append(
            {"id": constitution.slug, **base, "guard": {**guard, "guarded": True}}
        )
        if unguarded:
            entries.append({"id": constitution.slug + UNGUARDED_SUFFIX, **base,
                            "guard": {**guard, "guarded": False}})  # fmt: skip
    # Upstream models behind each constitution's guard: SLUG/NAME.
    policies = GuardPolicy.objects.select_related("constitution").prefetch_related("upstreams")
    for policy in policies.filter(upstreams__isnull=False).distinct():
        constitution = policy.constitution
        models_of = by_constitution.get(constitution.pk, {})
        for upstream in policy.upstreams.all():
            entries.append({
                "id": f"{constitution.slug}/{upstream.name}", "object": "model",
                "created": int(upstream.created_at.timestamp()), "owned_by": "guardweb",
                "guard": {
                    "constitution": constitution.slug, "name": constitution.name,
                    "input_model": model_ref(models_of.get("input")),
                    "output_model": model_ref(models_of.get("output")),
                    "guarded": True, "upstream": upstream.name,
                    "upstream_model": upstream.model,
                },
            })  # fmt: skip
    return entries


def _list_models(request: HttpRequest) -> list[dict[str, Any]]:
    token = authenticate(request)
    return _model_entries(token)


@api_view("GET")
async def models(request: HttpRequest) -> HttpResponse:
    entries = await sync_to_async(_list_models)(request)
    return JsonResponse({"object": "list", "data": entries})


@api_view("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    entries = await sync_to_async(_list_models)(request)
    for entry in entries:
        if entry["id"] == model_id:
            return JsonResponse(entry)
    raise ApiError(
        404, f"unknown model {model_id!r}", param="model", code="model_not_found"
    )
