"""One playground websocket's chat: parse a request, set up the guard, stream the
guarded (and unguarded) reply with live scores, store the turn.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from classifiers.guard.engines import active_models, guard_setup
from classifiers.guard.ratelimit import RateLimited, count_request
from classifiers.guard.turns import Stopwatch, record_turn
from classifiers.guard.upstream_client import UpstreamTarget, stream_text
from classifiers.ml.output.encoding import prompt_token_ids
from classifiers.ml.serving.engine import GuardConfig, GuardEngine, GuardResult
from classifiers.models import Conversation, GuardPolicy, ModelVersion, Turn
from constitutions.models import Constitution
from guardweb.roles import POLICY_AUTHOR, has_role

logger = logging.getLogger(__name__)


FLUSH_SECONDS = 0.1


FLUSH_TOKENS = 8


MODES = ("enforce", "shadow", "off")


Send = Callable[[dict[str, Any]], Awaitable[None]]


class BadRequest(Exception):
    """A chat request the playground refuses, with a message for the user."""


@dataclass
class ChatRequest:
    constitution_slug: str
    message: str
    mode: str = "enforce"
    models: str = "active"  # "active" | "unguarded" | "run-<training run id>"
    side_by_side: bool = False
    conversation_id: int | None = None
    max_new_tokens: int | None = None
    upstream: str | None = None  # an upstream model attached to the constitution

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ChatRequest:
        message = data.get("message")
        if not isinstance(message, str) or not message.strip():
            raise BadRequest("type a message first")
        # PostgreSQL cannot store NUL or unpaired surrogates: refuse, don't crash.
        if "\x00" in message or _unencodable(message):
            raise BadRequest("the message contains characters that cannot be stored")
        slug = data.get("constitution")
        if not isinstance(slug, str) or not slug:
            raise BadRequest("pick a constitution")
        mode = data.get("mode", "enforce")
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}")
        models = data.get("models", "active")
        if not isinstance(models, str) or not (
            models in ("active", "unguarded") or models.startswith("run-")
        ):
            raise BadRequest("models must be 'active', 'unguarded' or a training run")
        conversation_id = data.get("conversation_id")
        if conversation_id is not None and not isinstance(conversation_id, int):
            raise BadRequest("conversation_id must be a number")
        max_new = data.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or not 1 <= max_new <= 512):
            raise BadRequest("max_new_tokens must be between 1 and 512")
        upstream = data.get("upstream") or None
        if upstream is not None and not isinstance(upstream, str):
            raise BadRequest("upstream must be the name of an upstream model")
        return cls(
            constitution_slug=slug, message=message.strip(), mode=mode, models=models,
            side_by_side=bool(data.get("side_by_side")), conversation_id=conversation_id,
            max_new_tokens=max_new, upstream=upstream,
        )  # fmt: skip


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _score(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def result_payload(result: GuardResult) -> dict[str, Any]:
    return {
        "reply": result.text,
        "finish_reason": result.finish_reason,
        "halted_at": result.halted_at,
        "would_block": result.would_block,
        "max_output_score": _score(result.max_output_score) if result.max_output_score is not None else None,
        "output_threshold": result.output_threshold,
        "flag_reason": result.flag_reason,
        "near_threshold": result.near_threshold,
        # The probe cascade: whether it scored this reply, and where the heavy
        # classifier joined (None: the probe stayed confident throughout).
        "cascaded": result.cascaded,
        "escalated_at": result.escalated_at,
    }


def input_payload(result_input: Any) -> dict[str, Any] | None:
    if result_input is None:
        return None
    return {
        "score": _score(result_input.score),
        "category": result_input.category,
        "threshold": result_input.threshold,
        "flagged": result_input.flagged,
        "blocked": result_input.blocked,
        "view": result_input.view,
    }


def turn_payload(turn: Turn) -> dict[str, Any]:
    return {
        "variant": turn.variant,
        "user": turn.user_content,
        "reply": turn.reply,
        "tokens": turn.token_scores,
        "input": None if turn.input_score is None else {
            "score": turn.input_score, "category": turn.input_category,
            "threshold": turn.input_threshold,
        },  # fmt: skip
        "output_threshold": turn.output_threshold,
        "halted_at": turn.halted_at,
        "finish_reason": turn.finish_reason,
        "would_block": turn.would_block,
    }


class PlaygroundSession:
    def __init__(self, user: Any, send: Send) -> None:
        self.user = user
        self._send = send
        self.stop_event = threading.Event()
        self.task: asyncio.Task[None] | None = None
        self.disconnected = False

    async def send(self, payload: dict[str, Any]) -> None:
        """Send an event; a client that went away stops the reply but loses nothing:
        the stream winds down (cancelled) and the turn is still recorded."""
        if self.disconnected:
            return
        try:
            await self._send(payload)
        except Exception:  # the socket closed under us (uvicorn's ClientDisconnected)
            logger.info("playground client disconnected; stopping its reply")
            self.disconnected = True
            self.stop_event.set()

    # -- entry points from the consumer -----------------------------------------------

    async def chat(self, data: dict[str, Any]) -> None:
        if self.task and not self.task.done():
            await self.send({"type": "error", "message": "a reply is still streaming; stop it first"})
            return
        try:
            request = ChatRequest.parse(data)
            prepared = await self._prepare(request)
        except BadRequest as exc:
            await self.send({"type": "error", "message": str(exc)})
            return
        except Exception:  # a database hiccup must not take the socket down
            logger.exception("playground request failed")
            await self.send({"type": "error", "message": "the guard is unavailable; try again"})
            return
        self.stop_event.clear()
        self.task = asyncio.create_task(self._run(request, *prepared))

    def stop(self, *, disconnected: bool = False) -> None:
        self.disconnected = self.disconnected or disconnected
        self.stop_event.set()

    async def resume(self, data: dict[str, Any]) -> None:
        """After a reconnect: send the stored conversation back."""
        conversation_id = data.get("conversation_id")
        if not isinstance(conversation_id, int):
            await self.send({"type": "error", "message": "conversation_id must be a number"})
            return
        turns = await self._load_turns(conversation_id)
        if turns is None:
            await self.send({"type": "error", "message": "conversation not found"})
            return
        await self.send({"type": "history", "conversation_id": conversation_id, "turns": turns})

    # -- work -------------------------------------------------------------------------------

    @database_sync_to_async
    def _load_turns(self, conversation_id: int) -> list[dict[str, Any]] | None:
        conversation = Conversation.objects.filter(pk=conversation_id, user=self.user).first()
        if conversation is None:
            return None
        return [turn_payload(t) for t in conversation.turns.order_by("index", "variant")]

    @database_sync_to_async
    def _prepare(self, request: ChatRequest) -> tuple[Any, ...]:
        """Resolve constitution, models and conversation; load engines (may take seconds)."""

        unguarded_output = (
            request.models != "active" or request.mode != "enforce" or request.side_by_side
        )
        if unguarded_output and not has_role(self.user, POLICY_AUTHOR):
            # As in the API: unguarded replies, other models and shadow/off modes are
            # for policy authors; everyone else sees the live guard as enforced.
            raise BadRequest(
                "only policy authors may use unguarded, shadow or off modes, other "
                "models, or side by side"
            )
        constitution = Constitution.objects.filter(slug=request.constitution_slug).first()
        if constitution is None:
            raise BadRequest(f"unknown constitution {request.constitution_slug!r}")
        policy = GuardPolicy.for_constitution(constitution)
        try:
            # The API's limit, one counter for both: a websocket is no way around it.
            count_request(user_id=self.user.pk, scope=constitution.slug,
                          limit=policy.requests_per_minute)  # fmt: skip
        except RateLimited as exc:
            raise BadRequest(f"too many messages: {exc}") from None
        if len(request.message) > policy.max_message_chars:
            raise BadRequest(
                f"message too long: {len(request.message)} characters, the limit is "
                f"{policy.max_message_chars}"
            )
        upstream = None
        if request.upstream is not None:
            upstream = policy.upstreams.filter(name=request.upstream).first() if policy.pk else None
            if upstream is None:
                raise BadRequest(f"{request.upstream!r} is not an upstream model of {constitution.name}")
        input_model, output_model = active_models(constitution)
        if request.models == "unguarded":
            input_model = output_model = None
        elif request.models.startswith("run-"):
            try:
                run_id = int(request.models.removeprefix("run-"))
            except ValueError:
                raise BadRequest("unknown training run") from None
            versions = {
                m.kind: m
                for m in ModelVersion.objects.filter(training_run_id=run_id, constitution=constitution)
            }
            if not versions:
                raise BadRequest("that training run has no models for this constitution")
            input_model, output_model = versions.get("input"), versions.get("output")
        mode = "off" if request.models == "unguarded" else request.mode
        if mode != "off" and input_model is None and output_model is None:
            raise BadRequest(
                f"{constitution.name} has no active classifier yet: train and activate "
                "one, or pick 'unguarded'"
            )

        try:
            # The same setup as the API's; shadow models only matter to the API's log.
            setup = guard_setup(
                constitution, mode=mode, models=(input_model, output_model),
                side_by_side=request.side_by_side, with_shadow=False, require_models=False,
            )  # fmt: skip
        except Exception as exc:  # a missing model package or a damaged artifact
            logger.exception("could not load the guard")
            raise BadRequest(f"could not load the models: {exc}") from None
        conversation = None
        history: list[dict[str, str]] = []
        if request.conversation_id is not None:
            conversation = Conversation.objects.filter(
                pk=request.conversation_id, user=self.user, constitution=constitution
            ).first()
            if conversation is None:
                raise BadRequest(
                    "conversation not found for this constitution; start a new one"
                )
            history = conversation.messages_for_model()
        messages = [*history, {"role": "user", "content": request.message}]
        # The whole conversation is the prompt: bounded like the API's (#26 item 2),
        # checked before anything is written.
        count = len(prompt_token_ids(setup.engine.tokenizer, messages))
        if count > policy.max_prompt_tokens:
            raise BadRequest(
                f"the conversation is {count} tokens long; the limit is "
                f"{policy.max_prompt_tokens}: start a new conversation"
            )
        if conversation is None:
            conversation = Conversation.objects.create(
                user=self.user, constitution=constitution, source=Conversation.Source.PLAYGROUND,
                mode=mode, input_model=input_model, output_model=output_model,
                upstream=upstream, upstream_name=upstream.name if upstream else "",
            )  # fmt: skip
        config = setup.config(max_new_tokens=request.max_new_tokens)
        target = UpstreamTarget.of(upstream) if upstream is not None else None
        return conversation, setup.engine, setup.unguarded_engine, messages, config, target

    async def _run(
        self,
        request: ChatRequest,
        conversation: Conversation,
        engine: GuardEngine,
        unguarded: GuardEngine | None,
        messages: list[dict[str, str]],
        config: Any,
        upstream: UpstreamTarget | None,
    ) -> None:
        await self.send({
            "type": "start", "conversation_id": conversation.pk, "user": request.message,
            "side_by_side": unguarded is not None, "mode": config.mode,
            "upstream": upstream.name if upstream else None,
        })  # fmt: skip
        runs = [self._stream("guarded", engine, messages, config, conversation, request.message, upstream)]
        if unguarded is not None:
            plain = GuardConfig(mode="off", max_new_tokens=config.max_new_tokens)
            runs.append(self._stream("unguarded", unguarded, messages, plain, conversation,
                                     request.message, upstream))  # fmt: skip
        try:
            await asyncio.gather(*runs)
        except Exception as exc:
            logger.exception("playground generation failed")
            await self.send({"type": "error", "message": f"generation failed: {exc}"})

    async def _stream(
        self, variant: str, engine: GuardEngine, messages: list[dict[str, str]],
        config: Any, conversation: Conversation, user_content: str,
        upstream: UpstreamTarget | None = None,
    ) -> None:  # fmt: skip

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        watch = Stopwatch()
        done = object()

        def events() -> Any:
            if upstream is None:
                return engine.stream(messages, config, should_stop=self.stop_event.is_set)
            # The reply comes from the upstream; the same output classifier scores
            # it (its own KV cache) and the same colours, chart and halt follow.
            payload = {"messages": messages, "max_tokens": config.max_new_tokens,
                       "temperature": config.temperature}  # fmt: skip
            chunks = stream_text(upstream, payload, self.stop_event.is_set)
            return engine.stream_upstream(messages, chunks, config, should_stop=self.stop_event.is_set)

        def produce() -> None:
            stream = None
            try:
                stream = events()
                for event in stream:
                    loop.call_soon_threadsafe(queue.put_nowait, event)
            except BaseException as exc:  # hand the failure to the event loop
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # a halted upstream reply: close the upstream request now
                loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = loop.run_in_executor(None, produce)
        pending: list[list[Any]] = []
        last_flush = time.monotonic()
        result: GuardResult | None = None
        while True:
            item = await queue.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            if item.kind == "input":
                await self.send({"type": "input", "variant": variant, "input": input_payload(item.input)})
            elif item.kind == "token":
                watch.mark_first()
                token = item.token
                pending.append([token.text, _score(token.score), token.halted])
                now = time.monotonic()
                if len(pending) >= FLUSH_TOKENS or now - last_flush >= FLUSH_SECONDS or token.halted:
                    await self.send({"type": "tokens", "variant": variant, "tokens": pending})
                    pending, last_flush = [], now
            elif item.kind == "end":
                result = item.result
        await worker
        if pending:
            await self.send({"type": "tokens", "variant": variant, "tokens": pending})
        if result is None:
            return
        await database_sync_to_async(record_turn)(
            conversation=conversation, user_content=user_content, result=result,
            variant=variant, latency_ms=watch.elapsed_ms, first_token_ms=watch.first,
        )  # fmt: skip
        await self.send({
            "type": "end", "variant": variant, "result": result_payload(result),
            "input": input_payload(result.input), "latency_ms": round(watch.elapsed_ms, 1),
            "first_token_ms": None if watch.first is None else round(watch.first, 1),
        })  # fmt: skip
