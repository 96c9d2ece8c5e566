"""LiteLLM's "Generic Guardrail API": Guardweb as a LiteLLM proxy guardrail.

LiteLLM (1.108+) POSTs `{api_base}/beta/litellm_basic_guardrail_api` with
`{"input_type": "request"|"response", "texts": [...], "structured_messages": [...],
"litellm_call_id": ..., ...}` and the guardrail's api_key as `x-api-key`, and reads
back `{"action": "BLOCKED"|"NONE", "blocked_reason": ...}`: BLOCKED becomes an HTTP
400 to the client (pre_call, post_call) or an error event that ends a stream.

* request (pre_call, during_call): the input classifier on the conversation;
* response (post_call; streaming: LiteLLM sends the text so far every few chunks):
  the output classifier on each reply text, as the answer to the prompt of the
  same `litellm_call_id` (remembered from its request call for ten minutes).

The constitution comes from the URL (`api_base: http://HOST/guardrails/litellm/SLUG`),
else `additional_provider_specific_params.constitution`, else the token's default.
Shadow mode and "off" always answer NONE (shadow still stores what it would do).
We never rewrite text, so `texts` is never returned.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from classifiers.api.auth import authenticate, touch
from classifiers.api.errors import ApiError
from classifiers.api.ratelimit import check_rate
from classifiers.api.reply_scoring import MAX_REPLY_CHARS
from classifiers.api.requests import (
    MAX_MESSAGES,
    Target,
    check_lengths,
    json_body,
    resolve_constitution,
    target_for,
)
from classifiers.api.views import api_view
from classifiers.guard import engines, turns
from classifiers.ml.serving.engine import GuardResult
from classifiers.ml.types import Message
from classifiers.models import ApiToken, Conversation

_deciding = ThreadPoolExecutor(max_workers=8, thread_name_prefix="litellm-guard")
PROMPT_TTL_S = 600
MAX_TEXTS = 64
MAX_REPLY_TEXTS = 8  # choices per reply check (each is one output-scorer prefill)
_NO_PROMPT = [{"role": "user", "content": "(the prompt was not sent to the guard)"}]


def _prompt_key(token: ApiToken, call_id: str) -> str:
    return f"litellm-prompt:{token.pk}:{call_id}"


def _messages(body: dict[str, Any]) -> list[Message]:
    """The conversation: structured_messages when sent, else texts as user turns."""
    messages: list[Message] = []
    structured = body.get("structured_messages") or []
    if not isinstance(structured, list):
        raise ApiError(400, "structured_messages must be a list of messages", param="structured_messages")
    for item in structured[:MAX_MESSAGES]:
        if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant"):
            continue  # tool messages and the like carry no text we classify
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict)
                              and isinstance(p.get("text"), str))  # fmt: skip
        if isinstance(content, str) and content:
            messages.append({"role": item["role"], "content": content})
    if not any(m["role"] == "user" for m in messages):
        messages = [{"role": "user", "content": t} for t in body["texts"] if t]
    return messages


def _fitting(messages: list[Message], tokenizer: Any, limit: int) -> list[Message]:
    """The most recent messages whose prompt fits `limit` tokens: what the output
    scorer prefills for this call's replies (its work stays bounded; LiteLLM's
    requests may carry long system prompts the guard cannot refuse outright)."""
    from classifiers.ml.output.encoding import prompt_token_ids

    kept = list(messages)
    while len(kept) > 1 and len(prompt_token_ids(tokenizer, kept)) > limit:
        kept.pop(0)
    if len(prompt_token_ids(tokenizer, kept)) > limit:  # one message alone is too long
        # Its end, in few enough characters (a character is at most 4 byte tokens).
        kept = [{**kept[-1], "content": kept[-1]["content"][-(limit // 4):]}]
    return kept


def _prepare(request: HttpRequest, slug: str | None) -> dict[str, Any]:
    token = authenticate(request)
    body = json_body(request)
    kind = body.get("input_type")
    if kind not in ("request", "response"):
        raise ApiError(400, "input_type must be 'request' or 'response'", param="input_type")
    texts = body.get("texts") or []
    if not isinstance(texts, list) or len(texts) > MAX_TEXTS or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, f"texts must be a list of at most {MAX_TEXTS} strings", param="texts")
    extra = body.get("additional_provider_specific_params") or {}
    if slug is None and isinstance(extra, dict):
        slug = extra.get("constitution")
    constitution = resolve_constitution(token, slug, param="constitution")
    target = target_for(token, constitution)
    call_id = body.get("litellm_call_id") if isinstance(body.get("litellm_call_id"), str) else ""
    plan: dict[str, Any] = {"token": token, "target": target, "kind": kind, "call_id": call_id[:200]}
    limit = target.policy.requests_per_minute
    if kind == "request":
        check_rate(user_id=token.user_id, scope=constitution.slug, limit=limit)
        messages = _messages({**body, "texts": texts})
        if not messages:
            raise ApiError(400, "nothing to classify: no text in the request", param="texts")
        check_lengths(messages, target.policy, param="texts")
        plan["messages"] = messages
    else:
        # LiteLLM checks a streaming reply every few chunks: a budget of its own,
        # ten checks per request the constitution allows.
        check_rate(user_id=token.user_id, scope=f"{constitution.slug}:litellm-replies",
                   limit=limit * 10 if limit else 0)  # fmt: skip
        if len(texts) > MAX_REPLY_TEXTS:
            raise ApiError(400, f"at most {MAX_REPLY_TEXTS} reply texts per call", param="texts")
        if any(len(t) > MAX_REPLY_CHARS for t in texts):
            raise ApiError(413, f"a reply text is over {MAX_REPLY_CHARS} characters", param="texts",
                           code="reply_too_long")  # fmt: skip
        remembered = cache.get(_prompt_key(token, plan["call_id"])) if plan["call_id"] else None
        plan["texts"] = texts
        plan["messages"], plan["category"] = remembered or (_NO_PROMPT, None)
    if target.mode != "off":
        try:
            plan["setup"] = engines.guard_setup(constitution, mode=target.mode, with_shadow=False)
        except engines.GuardUnavailable as exc:
            raise ApiError(503, str(exc), code="classifier_unavailable") from None
    touch(token)
    return plan


def _store(token: ApiToken, target: Target, setup: Any, messages: list[Message], result: GuardResult) -> None:
    conversation = Conversation.objects.create(
        user=token.user, constitution=target.constitution, source=Conversation.Source.API,
        api_token=token, mode=target.mode, input_model=setup.input_model,
        output_model=setup.output_model, upstream_name="litellm",
    )  # fmt: skip
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    turns.record_turn(conversation=conversation, user_content=user, result=result)


def _decide(plan: dict[str, Any]) -> dict[str, Any]:
    """The verdict (on a worker thread)."""
    target: Target = plan["target"]
    setup = plan.get("setup")
    enforce = target.mode == "enforce"
    try:
        if setup is None:
            return {"action": "NONE"}
        slug = target.constitution.slug
        if plan["kind"] == "request":
            decision = None
            if setup.engine.input_guard is not None:
                decision = setup.engine.classify([plan["messages"]], mode=target.mode)[0]
            if plan["call_id"] and setup.output_model is not None:
                prompt = _fitting(plan["messages"], setup.engine.tokenizer,
                                  target.policy.max_prompt_tokens)  # fmt: skip
                cache.set(_prompt_key(plan["token"], plan["call_id"]),
                          (prompt, decision.category if decision else None), PROMPT_TTL_S)  # fmt: skip
            if decision is None:
                return {"action": "NONE"}
            result = GuardResult(input=decision, finish_reason="blocked" if decision.blocked else "classified",
                                 would_block=decision.flagged and target.mode == "shadow")  # fmt: skip
            _store(plan["token"], target, setup, plan["messages"], result)
            if decision.blocked:
                return {"action": "BLOCKED", "blocked_reason": (
                    f"Guardweb ({slug}): the request falls under the restricted category "
                    f"{decision.category!r} (score {decision.score:.2f}, threshold {decision.threshold:.2f})"
                )}  # fmt: skip
            return {"action": "NONE"}
        for text in plan["texts"]:
            if not text or setup.output_model is None:
                continue
            guard = setup.engine.reply_guard(plan["messages"], mode=target.mode, category=plan["category"])
            guard.feed(text, final=True)
            guard.finish()
            if guard.halted_at is None:
                continue
            result = GuardResult(
                text=text, generated=text, tokens=list(guard.tokens), halted_at=guard.halted_at,
                max_output_score=guard.max_score, output_threshold=guard.threshold,
                finish_reason="halted" if enforce else "classified", would_block=not enforce,
            )  # fmt: skip
            _store(plan["token"], target, setup, plan["messages"], result)
            if enforce:
                return {"action": "BLOCKED", "blocked_reason": (
                    f"Guardweb ({slug}): the reply crossed the output classifier's threshold "
                    f"at token {guard.halted_at} (score {guard.max_score:.2f}, threshold {guard.threshold:.2f})"
                )}  # fmt: skip
        return {"action": "NONE"}
    finally:
        connections.close_all()


@api_view("POST")
async def guardrail(request: HttpRequest, slug: str | None = None) -> HttpResponse:
    started = time.perf_counter()
    plan = await sync_to_async(_prepare)(request, slug)
    verdict = await asyncio.get_running_loop().run_in_executor(_deciding, _decide, plan)
    verdict["guardweb"] = {"mode": plan["target"].mode, "constitution": plan["target"].constitution.slug,
                           "latency_ms": round((time.perf_counter() - started) * 1000, 1)}  # fmt: skip
    return JsonResponse(verdict)
