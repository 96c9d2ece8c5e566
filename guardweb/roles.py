"""The three roles, as Django groups created by a data migration, and the one pair
of checks every view uses: `require_role` and `get_object_for_role`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.shortcuts import get_object_or_404

POLICY_AUTHOR = "policy_author"
REVIEWER = "reviewer"
VIEWER = "viewer"
ALL_ROLES = (POLICY_AUTHOR, REVIEWER, VIEWER)


def user_roles(user: Any) -> frozenset[str]:
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    if user.is_superuser:
        return frozenset(ALL_ROLES)
    cached = getattr(user, "_guardweb_roles", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._guardweb_roles = cached
    return cached


def has_role(user: Any, role: str) -> bool:
    return role in user_roles(user)


def require_role(request: HttpRequest, *roles: str, message: str = "") -> None:
    """Raise PermissionDenied (403) unless the user holds one of `roles`; with no
    roles given, any role will do (viewers included)."""
    held = user_roles(request.user)
    if not (held.intersection(roles) if roles else held):
        raise PermissionDenied(message or _refusal(roles))


def require_operator(request: HttpRequest, message: str) -> None:
    """Operators are staff users: they run the infrastructure (generator endpoints,
    upstream models), which roles alone do not let anyone change. 403 otherwise."""
    if not getattr(request.user, "is_staff", False):
        raise PermissionDenied(message)


def get_object_for_role(
    request: HttpRequest, queryset: Any, *roles: str, message: str = "", **lookup: Any
) -> Any:
    """The object for a user who holds one of `roles` (any role when none given).

    The role is checked first, so a user without it gets 403 whether or not the
    object exists and learns nothing from a 404.
    """
    require_role(request, *roles, message=message)
    return get_object_or_404(queryset, **lookup)


def _refusal(roles: tuple[str, ...]) -> str:
    if not roles:
        return "you need a role (viewer, reviewer or policy author)"
    names = " and ".join(role.replace("_", " ") + "s" for role in roles)
    return f"only {names} can do this"
