"""OpenAICompatGenerator: any OpenAI-compatible chat endpoint as a `types.ChatGenerator`.

Stage I data generation (data/stage1.py) and the LLM-based augmentations only ever
talk to that protocol, so a run can switch from the bundled SmolLM2
(generation/local.py) to a vLLM / llama.cpp / hosted endpoint without touching
anything else. Transient server errors are retried; failures the user has to fix
raise GeneratorError with a one-line message.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from classifiers.ml.generation.sampling import GeneratorError
from classifiers.ml.types import Message

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint


class _Retryable(Exception):
    """Internal: a failure worth another attempt; `message` is the final error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _server_error_message(response: httpx.Response) -> str:
    """The server's own error text, from OpenAI's {"error": {"message": ...}} shape."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err is not None:
            return str(err)[:200]
    return json.dumps(body)[:200]


class OpenAICompatGenerator:
    """Calls `POST {base_url}/chat/completions` once per conversation, in parallel."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.backoff = backoff
        self.concurrency = max(1, concurrency)
        self.name = f"openai:{model}@{self.base_url}"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One client shared by the worker threads (httpx.Client is thread-safe);
        # the pool size matches the concurrency so connections are reused.
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        self._client = httpx.Client(timeout=timeout, headers=headers, limits=limits)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAICompatGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self) -> None:
        """One tiny request; raises GeneratorError when the endpoint is not usable."""
        self.chat(
            [[{"role": "user", "content": "Reply with OK."}]],
            max_new_tokens=4,
            temperature=0.0,
        )

    def chat(
        self,
        conversations: list[list[Message]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[str]:
        if not conversations:
            return []

        def one(index: int) -> str:
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": conversations[index],
                "max_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
            }
            if seed is not None:
                # A distinct seed per conversation: identical prompts in one batch
                # (common in Stage I) must still give different samples.
                payload["seed"] = int(seed) + index
            return self._request(payload)

        if len(conversations) == 1:
            return [one(0)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            # map() re-raises the first GeneratorError in input order.
            return list(pool.map(one, range(len(conversations))))

    def _request(self, payload: dict[str, Any]) -> str:
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                return self._attempt(payload)
            except _Retryable as err:
                last_error = err.message
                logger.warning(
                    "%s (attempt %d/%d)", err.message, attempt + 1, self.max_retries + 1
                )
        raise GeneratorError(f"{last_error} (after {self.max_retries + 1} attempts)")

    def _attempt(self, payload: dict[str, Any]) -> str:
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.ConnectError as err:
            reason = _connect_reason(err)
            raise _Retryable(f"cannot reach {self.url}: {reason}") from err
        except httpx.TimeoutException as err:
            raise _Retryable(
                f"{self.url} did not answer within {self.timeout:g}s"
            ) from err
        except httpx.TransportError as err:
            raise _Retryable(f"cannot reach {self.url}: {err}") from err

        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(
                f"{self.url} answered HTTP {status}: {_server_error_message(response)}"
            )
        if status >= 400:
            raise GeneratorError(
                f"{self.url} answered HTTP {status}: {_server_error_message(response)}"
            )
        try:
            body = response.json()
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            snippet = response.text[:200].replace("\n", " ")
            raise GeneratorError(f"{self.url} answered garbage: {snippet!r}") from err
        if content is None:
            content = ""
        if not isinstance(content, str):
            snippet = response.text[:200].replace("\n", " ")
            raise GeneratorError(f"{self.url} answered garbage: {snippet!r}")
        return content.strip()


def _connect_reason(err: httpx.ConnectError) -> str:
    text = str(err)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename" in lowered:
        return "unknown host"
    return text or "connection failed"
