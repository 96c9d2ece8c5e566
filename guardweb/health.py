"""Service checks shared by /healthz and the start-up checks."""

from __future__ import annotations

import time
from typing import Any

from guardweb.celery import app

QUEUES = ("default", "gpu")


def check_postgres() -> dict[str, Any]:
    from django.db import connection

    started = time.monotonic()
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "down"
        connection.close()  # a broken connection must not be reused
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_redis(url: str) -> dict[str, Any]:
    import redis

    started = time.monotonic()
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return {"ok": False, "error": _one_line(exc)}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_celery(timeout: float = 1.5) -> dict[str, Any]:
    """Which workers consume which queue; a queue with no worker is down."""

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:
        return {"ok": False, "error": _one_line(exc), "queues": {}}
    queues: dict[str, list[str]] = {name: [] for name in QUEUES}
    for worker, worker_queues in replies.items():
        for queue in worker_queues:
            queues.setdefault(queue["name"], []).append(worker)
    missing = [name for name in QUEUES if not queues[name]]
    result: dict[str, Any] = {"ok": not missing, "queues": queues}
    if missing:
        result["error"] = f"no worker consumes queue(s): {', '.join(missing)}"
    return result


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
