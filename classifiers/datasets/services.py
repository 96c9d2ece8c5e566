"""Start a generation run: checks, the Dataset row, and the task on the gpu queue."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from classifiers.datasets.config import (
    LOCAL,
    StartError,
    category_problems,
    check_config,
    version_problems,
)
from classifiers.datasets.tasks import generate_dataset
from classifiers.models import (
    Dataset,
    GeneratorEndpoint,
    TrafficPool,
)


def dataset_start(
    *,
    version: Any,
    config: dict[str, Any],
    user: Any,
    endpoint: GeneratorEndpoint | None = None,
    enqueue: bool = True,
) -> Dataset:
    """Create a queued Dataset and (after commit) hand it to the gpu-queue worker."""
    problems = version_problems(version) + check_config(config)
    problems += category_problems(version, config)
    pools = set(config.get("traffic_pools") or [])
    missing = sorted(pools - set(TrafficPool.objects.filter(pk__in=pools).values_list("pk", flat=True)))
    if missing:
        problems.append(f"unknown traffic pool(s): {', '.join(f'#{p}' for p in missing)}")
    if problems:
        raise StartError("; ".join(problems))
    if endpoint is not None:  # endpoints get the instruction prompt: nothing to prefill
        config = {**config, "opener_share": 0.0}
    with transaction.atomic():
        dataset = Dataset.objects.create(
            constitution_version=version,
            generator=str(endpoint) if endpoint else LOCAL,
            endpoint=endpoint,
            seed=int(config.get("seed", 0)),
            config=config,
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        if enqueue:
            generate_dataset.delay_on_commit(dataset.pk)
    return dataset
