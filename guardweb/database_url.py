"""DATABASE_URL -> Django's database settings.

postgres://USER:PASSWORD@HOST:PORT/NAME?OPTION=VALUE&...; user, password and name
are percent-decoded ("p%40ss" is "p@ss"), and the query's options (sslmode,
sslrootcert, application_name, target_session_attrs, ...) go to libpq as they are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class DatabaseUrlError(ValueError):
    """A DATABASE_URL that cannot be used; the message says why (without the password)."""


def database_settings(url: str) -> dict[str, Any]:
    """HOST, PORT, USER, PASSWORD, NAME and OPTIONS for django.db.backends.postgresql."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise DatabaseUrlError(
            f"DATABASE_URL must be a postgres:// URL, not {parts.scheme}://"
        )
    try:
        port = parts.port or 5432
    except ValueError:
        raise DatabaseUrlError("DATABASE_URL has a port that is not a number") from None
    try:
        options = dict(
            parse_qsl(
                parts.query, keep_blank_values=False, strict_parsing=bool(parts.query)
            )
        )
    except ValueError:
        raise DatabaseUrlError(
            "DATABASE_URL's options must be NAME=VALUE pairs joined by &"
        ) from None
    return {
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(port),
        "USER": unquote(parts.username or "") or "postgres",
        "PASSWORD": unquote(parts.password or ""),
        "NAME": unquote((parts.path or "").lstrip("/")) or "guardweb",
        "OPTIONS": options,
    }
