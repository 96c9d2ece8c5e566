"""Checks run before serving or working, so a failure is one clear line."""

from __future__ import annotations

import socket

from django.conf import settings
from django.db import connection

from guardweb.embedded import StartupError


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise StartupError(
                f"port {port} on {host} is in use; stop what runs there or pass --port"
            ) from None


def check_database() -> None:
    try:
        connection.ensure_connection()
    except Exception as exc:
        where = settings.DATABASES["default"].get("HOST") or "localhost"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot reach PostgreSQL at {where}: {first}") from None


def check_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise StartupError(f"cannot reach Redis at {_redacted(settings.REDIS_URL)}: {exc}") from None


def check_services() -> None:
    check_database()
    check_redis()


def _redacted(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port or 6379}"
