"""The API's face of the shared per-user rate limit (guard/ratelimit.py): 429 with
Retry-After, in OpenAI's error shape."""

from __future__ import annotations

from classifiers.api.errors import ApiError
from classifiers.guard.ratelimit import WINDOW_S, RateLimited, count_request

__all__ = ["WINDOW_S", "check_rate"]


def check_rate(*, user_id: int, scope: str, limit: int, now: float | None = None) -> int:
    """Count this request; raise ApiError 429 (with Retry-After) over `limit`."""
    try:
        return count_request(user_id=user_id, scope=scope, limit=limit, now=now)
    except RateLimited as exc:
        raise ApiError(429, str(exc), code="rate_limit_exceeded",
                       retry_after=exc.retry_after) from None  # fmt: skip
