"""Upstream models: register, change, attach to a constitution's guard, list.

One set of rules for the CLI (`manage.py upstreams`) and the pages. Upstreams are
infrastructure, like the server's own address book: operators (staff) create and
change them, policy authors only attach them to a constitution.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction

from classifiers.models import GuardPolicy, Upstream
from constitutions.models import Constitution, record

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Only variables meant for this: any other name would let whoever edits an upstream
# send one of the server's own secrets (SECRET_KEY, DATABASE_URL, cloud keys) to
# an address of their choosing.
KEY_ENV_PREFIX = "GUARDWEB_UPSTREAM_KEY_"
_ENV = re.compile(r"^GUARDWEB_UPSTREAM_KEY_[A-Z0-9_]{1,70}$")
LIMITS = {  # field: (low, high)
    "timeout_s": (0.5, 600.0),
    "max_concurrency": (1, 256),
    "max_tokens": (1, 32768),
}


class UpstreamError(ValueError):
    """Bad input for an upstream (shown to the user as it is)."""


def check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields, checked and normalised; raises UpstreamError naming the problem."""
    out = dict(fields)
    if "name" in out:
        if not isinstance(out["name"], str) or not _NAME.match(out["name"]):
            raise UpstreamError(
                "name: 1-64 letters, digits, - or _, starting with a letter or digit "
                "(clients ask for CONSTITUTION/NAME)"
            )
    if "base_url" in out:
        url = str(out["base_url"] or "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"url: {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8001/v1)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise UpstreamError("url: no query, fragment or credentials; put the key in --api-key-env")
        out["base_url"] = url
    if "model" in out:
        model = str(out["model"] or "").strip()
        if not model or len(model) > 200:
            raise UpstreamError("model: the upstream's model name, 1-200 characters")
        out["model"] = model
    if out.get("api_key_env"):
        if not _ENV.match(out["api_key_env"]):
            raise UpstreamError(f"api key env: a variable named {KEY_ENV_PREFIX}<NAME> (capitals, "
                                "digits, _), e.g. GUARDWEB_UPSTREAM_KEY_VLLM")  # fmt: skip
    for name, (low, high) in LIMITS.items():
        if name in out and out[name] is not None:
            value = out[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise UpstreamError(f"{name.replace('_', ' ')}: between {low:g} and {high:g}")
    return out


def add_upstream(**fields: Any) -> Upstream:
    fields = check_fields(fields)
    if Upstream.objects.filter(name=fields["name"]).exists():
        raise UpstreamError(f"an upstream named {fields['name']!r} exists already")
    upstream = Upstream(**fields)
    upstream.save()
    return upstream


def change_upstream(upstream: Upstream, **fields: Any) -> Upstream:
    """Change fields. A new address forgets the stored key and the key variable
    unless one comes with it: a key set by someone for one server is never sent to
    another."""
    fields = check_fields(fields)
    moved = "base_url" in fields and fields["base_url"] != upstream.base_url
    if moved and not fields.get("api_key"):
        fields["api_key"] = ""
    if moved and not fields.get("api_key_env"):
        fields["api_key_env"] = ""
    for name, value in fields.items():
        setattr(upstream, name, value)
    upstream.save()
    return upstream


def get_upstream(name: str) -> Upstream:
    upstream = Upstream.objects.filter(name=name).first()
    if upstream is None:
        known = ", ".join(Upstream.objects.values_list("name", flat=True)) or "none yet"
        raise UpstreamError(f"no upstream named {name!r} (known: {known})")
    return upstream


def attach(upstream: Upstream, constitution: Constitution, *, user: Any = None) -> bool:
    """Let clients reach `upstream` through this constitution's guard. Returns
    whether it was newly attached."""
    with transaction.atomic():
        policy, _ = GuardPolicy.objects.get_or_create(constitution=constitution)
        if policy.upstreams.filter(pk=upstream.pk).exists():
            return False
        policy.upstreams.add(upstream)
        record(constitution, user, "guard", f"upstream {upstream.name} attached")
    return True


def detach(upstream: Upstream, constitution: Constitution, *, user: Any = None) -> bool:
    with transaction.atomic():
        policy = GuardPolicy.objects.filter(constitution=constitution).first()
        if policy is None or not policy.upstreams.filter(pk=upstream.pk).exists():
            return False
        policy.upstreams.remove(upstream)
        record(constitution, user, "guard", f"upstream {upstream.name} detached")
    return True


def attached(constitution: Constitution) -> list[Upstream]:
    policy = GuardPolicy.objects.filter(constitution=constitution).first()
    return list(policy.upstreams.all()) if policy else []
