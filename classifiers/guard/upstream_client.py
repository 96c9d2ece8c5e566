"""Streaming chat completions from an upstream OpenAI-compatible server (async).

`open_stream` sends the request with `stream: true` and returns an UpstreamStream:
iterate `pieces()` for the reply's text as it arrives. Leaving the `async with`
(a halt, a client that went away) closes the HTTP response, so the upstream sees
its request end and can stop generating. Every failure is an UpstreamFailure with
the status the API should answer and a one-line message (no response body is
echoed beyond the upstream's own error message).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

_semaphores: dict[tuple[int, int, int], asyncio.Semaphore] = {}
_DONE = object()


@dataclass(frozen=True)
class UpstreamTarget:
    """What a request needs of an Upstream row (read before the async part)."""

    pk: int
    name: str
    base_url: str
    model: str
    api_key: str = field(repr=False)  # never in reprs, debug pages or error locals
    timeout_s: float = 30.0
    max_concurrency: int = 8

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    @classmethod
    def of(cls, upstream: Any) -> UpstreamTarget:
        """From an Upstream row (the key resolved now, from the environment or the row)."""
        return cls(
            pk=upstream.pk, name=upstream.name, base_url=upstream.base_url,
            model=upstream.model, api_key=upstream.resolved_api_key(),
            timeout_s=upstream.timeout_s, max_concurrency=upstream.max_concurrency,
        )  # fmt: skip


class UpstreamFailure(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _semaphore(target: UpstreamTarget) -> asyncio.Semaphore:
    """The per-process cap on requests in flight to one upstream (per event loop)."""
    # Keyed by the cap too: a changed max_concurrency takes effect at once.
    key = (id(asyncio.get_running_loop()), target.pk, target.max_concurrency)
    semaphore = _semaphores.get(key)
    if semaphore is None:
        semaphore = _semaphores[key] = asyncio.Semaphore(target.max_concurrency)
    return semaphore


def _error_text(raw: bytes) -> str:
    """The upstream's own error message from OpenAI's error shape, else its status."""
    try:
        body = json.loads(raw)
    except ValueError:
        return ""
    error = body.get("error", body.get("detail", body.get("message"))) if isinstance(body, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return str(error)[:300] if error else ""


@dataclass
class UpstreamStream:
    target: UpstreamTarget
    payload: dict[str, Any]
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    upstream_id: str = ""

    async def __aenter__(self) -> UpstreamStream:
        target = self.target
        semaphore = _semaphore(target)
        try:
            await asyncio.wait_for(semaphore.acquire(), target.timeout_s)
        except TimeoutError:
            raise UpstreamFailure(
                503, f"upstream {target.name} is busy ({target.max_concurrency} requests "
                "in flight); try again shortly", "upstream_busy",
            ) from None  # fmt: skip
        self._semaphore = semaphore
        self._client = None
        headers = {"Accept": "text/event-stream"}
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        try:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(target.timeout_s), headers=headers)
            request = self._client.build_request("POST", target.url, json=self.payload)
            self._response = await self._client.send(request, stream=True)
            status = self._response.status_code
            if status >= 400:
                try:
                    raw = await self._response.aread()
                except httpx.HTTPError:
                    raw = b""
                raise upstream_status_failure(target, status, _error_text(raw))
        except BaseException as exc:
            # Whatever happened (a refusal, a timeout, a cancelled request), the
            # connection closes and the concurrency permit comes back.
            await self._close()
            raise _failure(target, exc) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        semaphore, self._semaphore = self._semaphore, _Released()
        try:
            response = getattr(self, "_response", None)
            if response is not None:
                await response.aclose()
            if self._client is not None:
                await self._client.aclose()
        finally:
            semaphore.release()

    async def pieces(self) -> AsyncIterator[str]:
        """The reply's text deltas, in order; ends at the upstream's [DONE]."""
        response = self._response
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignored stream=true: one whole completion.
                body = json.loads(await response.aread())
                self._note(body)
                choice = (body.get("choices") or [{}])[0]
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
                text = (choice.get("message") or {}).get("content") or ""
                if text:
                    yield text
                return
            async for line in response.aiter_lines():
                text = self.parse_line(line)
                if text is _DONE:
                    return
                if text:
                    yield text
        except UpstreamFailure:
            raise
        except (ValueError, AttributeError, TypeError):
            raise UpstreamFailure(
                502, f"upstream {self.target.name} sent something that is not a chat "
                "completion stream", "upstream_error",
            ) from None  # fmt: skip
        except httpx.HTTPError as exc:
            raise _failure(self.target, exc, mid_reply=True) from None

    def parse_line(self, line: str) -> Any:
        """One line of the SSE stream: its text ("" for none), or _DONE at [DONE]."""
        if not line.startswith("data:"):
            return ""  # comments, event names, keep-alives
        data = line[5:].strip()
        if data == "[DONE]":
            return _DONE
        chunk = json.loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            raise UpstreamFailure(
                502, f"upstream {self.target.name} failed mid-reply: "
                f"{_error_text(data.encode()) or 'an error event'}", "upstream_error",
            )  # fmt: skip
        self._note(chunk)
        text = ""
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = (choice.get("delta") or {}).get("content")
            if isinstance(delta, str):
                text += delta
        return text

    def _note(self, body: dict[str, Any]) -> None:
        if isinstance(body.get("usage"), dict):
            self.usage = body["usage"]
        if isinstance(body.get("id"), str) and not self.upstream_id:
            self.upstream_id = body["id"]


class _Released:
    def release(self) -> None:  # a second close releases nothing
        pass


def upstream_status_failure(target: UpstreamTarget, status: int, said: str) -> UpstreamFailure:
    """The upstream's own status where it is about the request (400, 404, 413, 422,
    429); a 401/403 means the key *we* sent was refused, which must not look to the
    client as if its Guardweb token were bad: 502, without the upstream's words (its
    message may quote part of the key). Anything else: 502."""
    name = target.name
    if status in (401, 403):
        return UpstreamFailure(502, f"upstream {name} refused Guardweb's credentials "
                               f"(HTTP {status}); an operator must fix its key", "upstream_auth")  # fmt: skip
    shown = f"upstream {name} answered HTTP {status}" + (f": {said}" if said else "")
    if status in (400, 404, 413, 422, 429):
        return UpstreamFailure(status, shown, "upstream_error")
    return UpstreamFailure(502, shown, "upstream_error")


def _failure(target: UpstreamTarget, exc: BaseException, *, mid_reply: bool = False) -> BaseException:
    if isinstance(exc, asyncio.CancelledError | UpstreamFailure):
        return exc
    where = " mid-reply" if mid_reply else ""
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure(
            504, f"upstream {target.name} did not answer within {target.timeout_s:g}s{where}",
            "upstream_timeout",
        )  # fmt: skip
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
        return UpstreamFailure(502, f"upstream {target.name} is unreachable ({reason})",
                               "upstream_unavailable")  # fmt: skip
    if isinstance(exc, httpx.HTTPError):
        return UpstreamFailure(502, f"upstream {target.name} failed{where}: {type(exc).__name__}",
                               "upstream_unavailable")  # fmt: skip
    if isinstance(exc, ValueError | TypeError):  # a body httpx cannot encode, say
        return UpstreamFailure(400, f"the request cannot be sent to upstream {target.name}: "
                               f"{type(exc).__name__}", "invalid_request")  # fmt: skip
    return exc


def open_stream(target: UpstreamTarget, payload: dict[str, Any]) -> UpstreamStream:
    return UpstreamStream(target, {**payload, "model": target.model, "stream": True})


def stream_text(
    target: UpstreamTarget, payload: dict[str, Any], should_stop: Any = None
) -> Iterator[str]:
    """The same stream for a worker thread (the playground): the reply's text
    deltas. Closing the generator (a halt, a stop) closes the upstream request."""
    body = {**payload, "model": target.model, "stream": True}
    headers = {"Accept": "text/event-stream"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    parser = UpstreamStream(target, body)
    try:
        with httpx.Client(timeout=httpx.Timeout(target.timeout_s), headers=headers) as client:
            with client.stream("POST", target.url, json=body) as response:
                if response.status_code >= 400:
                    said = _error_text(response.read())
                    raise upstream_status_failure(target, response.status_code, said)
                for line in response.iter_lines():
                    if should_stop is not None and should_stop():
                        return
                    text = parser.parse_line(line)
                    if text is _DONE:
                        return
                    if text:
                        yield text
    except (ValueError, AttributeError, TypeError):
        raise UpstreamFailure(502, f"upstream {target.name} sent something that is not a "
                              "chat completion stream", "upstream_error") from None  # fmt: skip
    except httpx.HTTPError as exc:
        raise _failure(target, exc) from None
