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


def check_endpoint(endpoint: GeneratorEndpoint) -> str:
    """Return "ok", or what is wrong with the endpoint (never raises for its faults)."""
    from classifiers.ml.generation.sampling import GeneratorError

    try:
        with endpoint_generator(endpoint) as generator:
            generator.check()
    except GeneratorError as err:
        return str(err)
    return "ok"


def dataset_generator(dataset: Dataset) -> ChatGenerator:
    if dataset.generator != LOCAL:
        if dataset.endpoint is None:
            raise RuntimeError(
                f"the endpoint this dataset used ({dataset.generator}) was deleted"
            )
        return endpoint_generator(dataset.endpoint)
    return local_generator()
