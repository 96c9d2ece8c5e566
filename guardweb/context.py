from __future__ import annotations

from django.http import HttpRequest

from guardweb.roles import user_roles


def roles(request: HttpRequest) -> dict[str, object]:
    """Expose the user's roles to templates (buttons follow them; views enforce them)."""
    return {"roles": user_roles(request.user)}
