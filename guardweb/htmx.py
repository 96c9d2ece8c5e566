"""The htmx checks every view shares (after NetBox's utilities/htmx.py)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django_htmx.http import HttpResponseStopPolling


def htmx_partial(request: HttpRequest) -> bool:
    """Render only the fragment: an htmx request that is not a boosted navigation
    (a boosted link or form wants the whole page)."""
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.boosted


def polled_fragment(
    request: HttpRequest, template: str, context: dict[str, Any], *, done: bool
) -> HttpResponse:
    """A fragment that htmx polls; once `done`, django-htmx's HttpResponseStopPolling
    (status 286) swaps it in one last time and stops the polling."""
    content = render_to_string(template, context, request)
    return HttpResponseStopPolling(content) if done else HttpResponse(content)
