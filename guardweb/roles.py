"""The three roles, as Django groups created by a data migration."""

from __future__ import annotations

from typing import Any

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
