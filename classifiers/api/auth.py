"""Bearer-token authentication for the API (tokens are stored as SHA-256 only)."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from classifiers.api.errors import ApiError
from classifiers.models import ApiToken
from guardweb.roles import user_roles

# last_used_at is informative; writing it at most this often keeps requests cheap.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def bearer_token(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    if not header and request.headers.get("x-api-key"):
        # LiteLLM's guardrail client sends its api_key this way.
        return request.headers["x-api-key"].strip()
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise ApiError(
            401,
            "missing API token: send 'Authorization: Bearer <token>' "
            "(create one under Classifiers → API tokens)",
            code="missing_api_key",
        )
    return raw.strip()


def authenticate(request: HttpRequest) -> ApiToken:
    """The request's active token, or ApiError 401 (missing, unknown or revoked)."""
    token = ApiToken.authenticate(bearer_token(request))
    if token is None:
        raise ApiError(401, "invalid or revoked API token", code="invalid_api_key")
    # A token outlives role changes: a user whose roles were all removed keeps
    # the token row but loses the access it granted.
    if not user_roles(token.user):
        raise ApiError(
            403, "the token's user has no role any more", code="no_role"
        )
    return token


def touch(token: ApiToken) -> None:
    """Record use, at most once a minute per token (one cheap UPDATE)."""
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
