"""Guarded constitutions with real, quickly trained classifiers, for the API tests.

The placeholder queries and the classifier artifacts live in bench/fixtures.py
(the benchmarks use them too); each test creates its own constitution with
tests.factories.published_constitution and activates them on it.
"""

from __future__ import annotations

from typing import Any

from bench.fixtures import (
    BENIGN,
    BENIGN_PROMPT,
    HARMFUL,
    HARMFUL_PROMPT,
    guard,
    input_artifact,
)
from tests.factories import published_constitution

__all__ = [
    "BENIGN", "BENIGN_PROMPT", "HARMFUL", "HARMFUL_PROMPT", "bearer",
    "guarded_constitution", "input_artifact",
]  # fmt: skip


def guarded_constitution(
    slug: str = "widgets",
    *,
    output: bool = False,
    output_threshold: float | None = None,
    user: Any = None,
    **policy: Any,
) -> Any:
    """A published_constitution with an active input classifier (and output one
    when asked); `policy` sets GuardPolicy fields (mode, max_message_chars, ...)."""
    return guard(
        published_constitution(slug, user=user),
        output=output, output_threshold=output_threshold, **policy,
    )  # fmt: skip


def bearer(raw: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
