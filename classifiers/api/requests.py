"""Parsing and validating API request bodies; every problem is an ApiError (4xx).

Nothing here writes to the database, so a rejected request changes nothing
(the rate-limit counter in Redis is the one exception, by design).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.http.request import RawPostDataException

from classifiers.api.errors import ApiError
from classifiers.ml.types import Message
from classifiers.models import ApiToken, GuardPolicy
from constitutions.models import Constitution
from guardweb.roles import POLICY_AUTHOR, has_role

MAX_BODY_BYTES = 1_000_000  # bodies over 1 MB are refused with 413
ROLES = ("system", "user", "assistant")
MAX_MESSAGES = 256  # per request, checked before anything is tokenised
UNGUARDED_SUFFIX = ":unguarded"


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or 413 (over 1 MB) / 400 (not a JSON object)."""
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is over the {MAX_BODY_BYTES} byte limit",
                       code="body_too_large")  # fmt: skip
    try:
        raw = request.body
    except (RequestDataTooBig, RawPostDataException):
        raise ApiError(413, f"request body is over the {MAX_BODY_BYTES} byte limit",
                       code="body_too_large") from None  # fmt: skip
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body is over the {MAX_BODY_BYTES} byte limit",
                       code="body_too_large")  # fmt: skip
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object",
                       code="invalid_json")  # fmt: skip
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}",
                       code="invalid_json") from None  # fmt: skip
    except ValueError:  # an integer of 4,301+ digits: Python's int limit
        raise ApiError(400, "the request body has a number too long to read",
                       code="invalid_json") from None  # fmt: skip
    except RecursionError:  # e.g. 10,000 nested arrays: the parser gives up
        raise ApiError(400, "the request body is nested too deeply",
                       code="invalid_json") from None  # fmt: skip
    if not isinstance(body, dict):
        raise ApiError(
            400, "the request body must be a JSON object", code="invalid_json"
        )
    _check_strings(body)
    return body


def _check_strings(body: Any) -> None:
    """Refuse text PostgreSQL cannot store: NUL characters and lone surrogates
    (valid JSON escapes, but a 500 when the turn is saved)."""
    stack = [body]
    while stack:  # iterative: nesting depth is bounded by the parser, not us
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise ApiError(400, "text must not contain NUL (\\u0000) characters",
                               code="invalid_text")  # fmt: skip
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ApiError(400, "text must not contain unpaired UTF-16 surrogates",
                               code="invalid_text") from None  # fmt: skip


def _content(value: Any, param: str) -> str:
    """A message's text: a string, or OpenAI's list of {"type": "text"} parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(p, dict)
        and p.get("type") == "text"
        and isinstance(p.get("text"), str)
        for p in value
    ):
        return "".join(p["text"] for p in value)
    raise ApiError(
        400, f"{param} must be a string (or a list of text parts)", param=param
    )


def parse_messages(value: Any, *, param: str = "messages") -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ApiError(
            400, f"{param} must be a non-empty array of messages", param=param
        )
    if len(value) > MAX_MESSAGES:
        raise ApiError(400, f"{param} has {len(value)} messages; at most {MAX_MESSAGES}",
                       param=param, code="context_length_exceeded")  # fmt: skip
    messages: list[Message] = []
    for index, item in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise ApiError(
                400, f"{where} must be an object with role and content", param=where
            )
        role = item.get("role")
        if role not in ROLES:
            raise ApiError(
                400, f"{where}.role must be one of {', '.join(ROLES)}, not {role!r}",
                param=f"{where}.role",
            )  # fmt: skip
        if "content" not in item:
            raise ApiError(
                400, f"{where}.content is required", param=f"{where}.content"
            )
        messages.append(
            {"role": role, "content": _content(item["content"], f"{where}.content")}
        )
    if not any(m["role"] == "user" for m in messages):
        raise ApiError(400, f"{param} needs at least one user message", param=param)
    return messages


def check_lengths(messages: list[Message], policy: GuardPolicy, *, param: str) -> None:
    limit = policy.max_message_chars
    for index, message in enumerate(messages):
        if len(message["content"]) > limit:
            where = param if param == "text" else f"{param}[{index}].content"
            raise ApiError(
                413,
                f"{where} is {len(message['content'])} characters long; this "
                f"constitution's limit is {limit} characters per message",
                param=where, code="message_too_long",
            )  # fmt: skip


def check_prompt_tokens(messages: list[Message], policy: GuardPolicy, tokenizer: Any,
                        *, param: str = "messages") -> int:  # fmt: skip
    """The prompt's length in the generator's tokens; 400 over the policy's limit."""
    from classifiers.ml.output.encoding import prompt_token_ids

    count = len(prompt_token_ids(tokenizer, messages))
    if count > policy.max_prompt_tokens:
        raise ApiError(
            400, f"the prompt is {count} tokens; this constitution allows at most "
            f"{policy.max_prompt_tokens} (max_prompt_tokens)",
            param=param, code="context_length_exceeded",
        )  # fmt: skip
    return count


def last_user_content(messages: list[Message]) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def optional_number(
    body: dict[str, Any], name: str, *, low: float, high: float, integer: bool = False
) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    wrong_type = isinstance(value, bool) or not isinstance(value, int | float)
    if integer:
        wrong_type = wrong_type or not isinstance(value, int)
    if wrong_type or not math.isfinite(value) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise ApiError(
            400, f"{name} must be {kind} between {low:g} and {high:g}", param=name
        )
    return value


@dataclass
class Target:
    """The constitution a request is for, its policy, and the mode that applies."""

    constitution: Constitution
    policy: GuardPolicy  # may be unsaved (defaults) when none exists yet
    mode: str
    unguarded: bool = False


def resolve_constitution(token: ApiToken, slug: Any, *, param: str) -> Constitution:
    if slug is None:
        if token.constitution is None:
            raise ApiError(
                400, f"name a constitution ({param}); this token has no default one",
                param=param,
            )  # fmt: skip
        return token.constitution
    if not isinstance(slug, str) or not slug:
        raise ApiError(400, f"{param} must be a constitution slug string", param=param)
    constitution = Constitution.objects.filter(slug=slug).first()
    if constitution is None:
        raise ApiError(404, f"unknown constitution {slug!r}", param=param,
                       code="model_not_found")  # fmt: skip
    return constitution


def policy_of(constitution: Constitution) -> GuardPolicy:
    """The saved policy, or an unsaved one with the defaults (read-only here)."""
    return GuardPolicy.objects.filter(constitution=constitution).first() or GuardPolicy(
        constitution=constitution
    )


def target_for(
    token: ApiToken, constitution: Constitution, *, unguarded: bool = False
) -> Target:

    policy = policy_of(constitution)
    # The token's mode overrides the constitution's (e.g. a shadow-mode trial), but
    # only a policy author's token may weaken enforcement (shadow and off replies
    # are unguarded), as in the playground.
    token_mode = token.mode
    if token_mode in ("shadow", "off") and not has_role(token.user, POLICY_AUTHOR):
        token_mode = ""
    mode = "off" if unguarded else (token_mode or policy.mode)
    return Target(constitution, policy, mode, unguarded)
