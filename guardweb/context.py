from __future__ import annotations

import threading
import time

from django.conf import settings
from django.http import HttpRequest

from guardweb.roles import user_roles

REDIS_CONNECT_TIMEOUT_S = 0.05  # a stopped Redis refuses at once; a lost host hangs
# Generous for the reply: a Redis that accepted the connection is alive, and a busy
# machine must not show a false outage notice.
REDIS_REPLY_TIMEOUT_S = 0.25
REDIS_CHECK_EVERY_S = 3.0  # per process: at most one ping per interval

_redis_lock = threading.Lock()
_redis_checked: tuple[float, str, bool] = (-1e9, "", True)  # (monotonic, url, ok)


def redis_reachable() -> bool:
    """Whether Redis answered a PING recently (cached per process, see constants)."""
    global _redis_checked
    checked_at, url, ok = _redis_checked
    now = time.monotonic()
    if url == settings.REDIS_URL and now - checked_at < REDIS_CHECK_EVERY_S:
        return ok
    with _redis_lock:
        # Another thread may have refreshed it while this one waited.
        checked_at, url, ok = _redis_checked
        if url == settings.REDIS_URL and now - checked_at < REDIS_CHECK_EVERY_S:
            return ok
        import redis

        try:
            client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_timeout=REDIS_REPLY_TIMEOUT_S,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            )
            with client:
                ok = bool(client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            ok = False
        _redis_checked = (time.monotonic(), settings.REDIS_URL, ok)
        return ok


def roles(request: HttpRequest) -> dict[str, object]:
    """Expose the user's roles to templates (buttons follow them; views enforce them)."""
    return {"roles": user_roles(request.user)}


def service_notice(request: HttpRequest) -> dict[str, object]:
    """Whether Redis is down (base.html then shows the outage notice)."""
    return {"redis_down": not redis_reachable()}
