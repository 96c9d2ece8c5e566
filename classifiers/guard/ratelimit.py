"""Requests per minute per user and constitution: a fixed-window counter in Redis.

One counter for every way a user reaches a constitution's guard (the API, the
guarded proxy, the playground's websocket), so the limit is shared. The window is
the current wall-clock minute; the key expires with it. Fixed windows allow a burst
of up to 2x the limit across a minute boundary, which is acceptable for a quota.
"""

from __future__ import annotations

import logging
import time

from django.core.cache import cache

WINDOW_S = 60
logger = logging.getLogger(__name__)


class RateLimited(Exception):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"rate limit exceeded: {limit} requests per minute for this constitution; "
            f"retry in {retry_after} s"
        )
        self.limit = limit
        self.retry_after = retry_after


def count_request(*, user_id: int, scope: str, limit: int, now: float | None = None) -> int:
    """Count this request; raise RateLimited over `limit` (0 = unlimited).

    Returns the number of requests in the current window, this one included.
    """
    if limit <= 0:
        return 0
    now = time.time() if now is None else now
    window = int(now // WINDOW_S)
    key = f"api-rate:{user_id}:{scope}:{window}"
    try:
        # add() is a no-op when the key exists; incr() is atomic in Redis.
        cache.add(key, 0, timeout=WINDOW_S + 5)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=WINDOW_S + 5)
            count = 1
    except Exception as exc:  # Redis down: serve unmetered rather than fail
        # A quota is a courtesy; an outage of its counter must not take the guard
        # down with it (healthz reports Redis meanwhile).
        logger.warning("rate limit not enforced: the cache is unavailable (%s)", exc)
        return 0
    if count > limit:
        raise RateLimited(limit, max(1, int((window + 1) * WINDOW_S - now) + 1))
    return count
