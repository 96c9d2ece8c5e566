"""The htmx checks every view shares (after NetBox's utilities/htmx.py)."""

from __future__ import annotations

from django.http import HttpRequest


def htmx_partial(request: HttpRequest) -> bool:
    """Render only the fragment: an htmx request that is not a boosted navigation
    (a boosted link or form wants the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted
