"""Which generator a run uses: the shared local model or an OpenAI-compatible
endpoint (and the endpoint's connection test).
"""

from __future__ import annotations

from typing import Any

from classifiers.core.model_cache import local_generator
from classifiers.datasets.config import LOCAL
from classifiers.ml.types import ChatGenerator
from classifiers.models import (
    Dataset,
    GeneratorEndpoint,
)


def endpoint_generator(endpoint: GeneratorEndpoint) -> Any:
    from classifiers.ml.generation.openai_compat import OpenAICompatGenerator

    return OpenAICompatGenerator(
        endpoint.base_url,
        endpoint.model,
        endpoint.api_key,
        timeout=endpoint.timeout_seconds,
        max_retries=endpoint.max_retries,
        concurrency=endpoint.concurrency,
    )


TEST_TIMEOUT_S = 5.0  # a connection test never waits longer, whatever the endpoint's timeout


def check_endpoint(endpoint: GeneratorEndpoint) -> str:
    """"ok", or a short fixed reason (never the server's own words: the test must not
    read other servers' answers back to whoever presses it). One attempt, at most
    TEST_TIMEOUT_S seconds."""
    import httpx

    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    payload = {"model": endpoint.model, "max_tokens": 4, "temperature": 0,
               "messages": [{"role": "user", "content": "Reply with OK."}]}  # fmt: skip
    url = f"{endpoint.base_url.rstrip('/')}/chat/completions"
    try:
        response = httpx.post(url, json=payload, headers=headers,
                              timeout=min(endpoint.timeout_seconds, TEST_TIMEOUT_S))  # fmt: skip
    except httpx.TimeoutException:
        return f"no answer within {min(endpoint.timeout_seconds, TEST_TIMEOUT_S):g} s"
    except httpx.HTTPError:
        return "cannot connect"
    if response.status_code in (401, 403):
        return f"HTTP {response.status_code}: the key was refused"
    if response.status_code >= 400:
        return f"HTTP {response.status_code}: not a working chat-completions endpoint for this model"
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        return "the answer is not a chat completion"
    return "ok"


def dataset_generator(dataset: Dataset) -> ChatGenerator:
    if dataset.generator != LOCAL:
        if dataset.endpoint is None:
            raise RuntimeError(
                f"the endpoint this dataset used ({dataset.generator}) was deleted"
            )
        return endpoint_generator(dataset.endpoint)
    return local_generator()
