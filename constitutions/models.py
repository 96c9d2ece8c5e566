"""Constitutions: a draft the authors edit, and immutable published versions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone


class Kind(models.TextChoices):
    RESTRICTED = "restricted", "Restricted"
    PERMITTED = "permitted", "Permitted"


class Constitution(models.Model):
    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    domain = models.TextField(help_text="What the guarded assistant is for; shown to the generator.")
    # The revision of the draft header (name, domain); bumped by header saves and
    # imports. Saves carry the revision they started from, so two authors never
    # silently overwrite each other. Categories carry their own `revision`.
    draft_revision = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def latest_version(self) -> ConstitutionVersion | None:
        return self.versions.order_by("-number").first()

    def draft_content(self) -> dict[str, Any]:
        """The draft as the same plain dict a published version freezes."""
        return {
            "name": self.name,
            "slug": self.slug,
            "domain": self.domain,
            "categories": [c.to_content() for c in self.categories.order_by("position", "id")],
        }


class Category(models.Model):
    """A category of the DRAFT. Published versions keep frozen copies as JSON."""

    constitution = models.ForeignKey(
        Constitution, on_delete=models.CASCADE, related_name="categories"
    )
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    description = models.TextField()
    excludes = models.TextField(blank=True, help_text="What this category does not cover.")
    example_queries = models.JSONField(default=list, blank=True)
    example_responses = models.JSONField(default=list, blank=True)
    languages = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=list, blank=True)
    # A stricter (higher) or looser (lower) false-positive target for this category.
    target_fpr = models.FloatField(null=True, blank=True)
    # Bumped by every save; a save from a stale revision is a conflict.
    revision = models.PositiveIntegerField(default=0)
    # Who saved last and when: shown to the other author in a conflict.
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["constitution", "name"], name="unique_category_name_per_constitution"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def to_content(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "excludes": self.excludes,
            "example_queries": list(self.example_queries),
            "example_responses": list(self.example_responses),
            "languages": list(self.languages),
            "tags": list(self.tags),
            "target_fpr": self.target_fpr,
        }


def content_hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ImmutableError(Exception):
    pass


class ConstitutionVersion(models.Model):
    """A published, numbered, immutable snapshot of a constitution."""

    constitution = models.ForeignKey(
        Constitution, on_delete=models.PROTECT, related_name="versions"
    )
    number = models.PositiveIntegerField()
    content = models.JSONField()
    content_hash = models.CharField(max_length=64)
    note = models.TextField(blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["constitution", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["constitution", "number"], name="unique_version_number"
            )
        ]

    def __str__(self) -> str:
        return f"{self.constitution.slug} v{self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ImmutableError("a published version never changes")
        self.content_hash = content_hash(self.content)
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ImmutableError("a published version is never deleted")

    @property
    def label(self) -> str:
        return f"v{self.number}"

    def to_spec(self) -> Any:
        """The plain `ConstitutionSpec` the ML core works with."""
        from classifiers.ml.types import CategorySpec, ConstitutionSpec

        return ConstitutionSpec(
            name=self.content["name"],
            domain=self.content["domain"],
            categories=tuple(
                CategorySpec(
                    name=c["name"],
                    kind=c["kind"],
                    description=c["description"],
                    excludes=c.get("excludes", ""),
                    example_queries=tuple(c.get("example_queries", [])),
                    example_responses=tuple(c.get("example_responses", [])),
                    languages=tuple(c.get("languages", [])),
                )
                for c in self.content["categories"]
            ),
        )


class AuditEvent(models.Model):
    constitution = models.ForeignKey(
        Constitution, on_delete=models.CASCADE, related_name="audit_events"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=50)
    summary = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action}: {self.summary}"


def record(constitution: Constitution, user: Any, action: str, summary: str, **detail: Any) -> AuditEvent:
    return AuditEvent.objects.create(
        constitution=constitution,
        user=user if getattr(user, "is_authenticated", False) else None,
        action=action,
        summary=summary[:300],
        detail=detail,
    )


@transaction.atomic
def publish(constitution: Constitution, *, user: Any, note: str = "") -> ConstitutionVersion:
    """Freeze the draft as the next numbered version (validation is the caller's job)."""
    locked = Constitution.objects.select_for_update().get(pk=constitution.pk)
    latest = locked.latest_version()
    version = ConstitutionVersion.objects.create(
        constitution=locked,
        number=(latest.number + 1) if latest else 1,
        content=locked.draft_content(),
        note=note,
        published_by=user if getattr(user, "is_authenticated", False) else None,
    )
    record(locked, user, "publish", f"published v{version.number}", hash=version.content_hash)
    return version
