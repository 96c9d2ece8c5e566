"""Every change to a constitution goes through here: validated, race-free, audited.

Views, the YAML importer and the seed command call these functions, so the rules
(what a valid category is, when a draft may be published, how concurrent saves are
detected) live in one place. Concurrent saves use a conditional UPDATE on the
revision the author loaded: the database decides who was first, and the loser
gets a `Conflict` carrying the winner's values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from constitutions.models import (
    Category,
    Constitution,
    ConstitutionVersion,
    Kind,
    publish,
    record,
)

CATEGORY_FIELDS = (
    "name",
    "kind",
    "description",
    "excludes",
    "example_queries",
    "example_responses",
    "languages",
    "tags",
    "target_fpr",
)
LIST_FIELDS = ("example_queries", "example_responses", "languages", "tags")
HEADER_FIELDS = ("name", "domain")
MIN_EXAMPLE_QUERIES = 2
MAX_NAME_LENGTH = 200
# Bounds on one constitution (#26 item 6): real ones have a dozen categories with
# a handful of examples each; 6,000 categories made every editor page take 40 s.
MAX_CATEGORIES = 100
MAX_LIST_ITEMS = 100  # examples (and languages, tags) per category
# Slugs a fixed URL would shadow (/constitutions/import/).
RESERVED_SLUGS = frozenset({"import"})

Errors = dict[str, list[str]]


class ValidationFailed(Exception):
    def __init__(self, errors: Errors) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class PublishBlocked(Exception):
    def __init__(self, reasons: list[str]) -> None:
        super().__init__(" ".join(reasons))
        self.reasons = reasons


class Gone(Exception):
    """The object was deleted by someone else."""


@dataclass
class Conflict(Exception):
    """A save started from a stale revision; `theirs` is what is stored now."""

    theirs: dict[str, Any]  # current stored values of the edited fields
    mine: dict[str, Any]  # what this author tried to save
    revision: int  # the current revision: re-submitting with it overwrites
    by: Any = None  # who saved `theirs` (may be None: unknown)
    at: Any = None  # when `theirs` was saved
    fields: list[str] = field(default_factory=list)  # fields whose values differ

    def __post_init__(self) -> None:
        super().__init__("edit conflict")
        self.fields = [k for k in self.mine if self.theirs.get(k) != self.mine.get(k)]


def split_lines(text: str) -> list[str]:
    """One item per non-blank line, trimmed: how the editor's textareas work."""
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- Validation -------------------------------------------------------------------


def unstorable(text: str) -> str | None:
    """Why PostgreSQL cannot store this text (None: it can): a NUL character, or a
    lone surrogate (JSON's "\\ud800" decodes to one; UTF-8 cannot encode it)."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an invalid character (a lone surrogate)"
    return None


def validate_category(
    data: Mapping[str, Any], *, other_names: Iterable[str] = ()
) -> Errors:
    """Field -> messages for one category's values (empty dict: valid).

    `other_names` are the names of the constitution's OTHER categories (names are
    unique per constitution, compared case-insensitively so "Fraud" and "fraud"
    cannot both exist).
    """
    errors: Errors = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        add("name", "Name is required.")
    elif len(name) > MAX_NAME_LENGTH:
        add("name", f"Name must be at most {MAX_NAME_LENGTH} characters.")
    elif name.strip().casefold() in {n.strip().casefold() for n in other_names}:
        add("name", f"Another category is already called '{name.strip()}'.")
    if data.get("kind") not in Kind.values:
        add("kind", "Kind must be 'restricted' or 'permitted'.")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        add("description", "Description is required.")
    if not isinstance(data.get("excludes", ""), str):
        add("excludes", "Excludes must be text.")
    for list_field in LIST_FIELDS:
        items = data.get(list_field, [])
        if not isinstance(items, list) or not all(
            isinstance(item, str) and item.strip() for item in items
        ):
            add(list_field, f"{list_field} must be a list of non-empty strings.")
        elif len(items) > MAX_LIST_ITEMS:
            add(list_field, f"At most {MAX_LIST_ITEMS} {list_field.replace('_', ' ')} per "
                f"category (this has {len(items)}).")
    queries = data.get("example_queries", [])
    if isinstance(queries, list) and len(queries) < MIN_EXAMPLE_QUERIES:
        add(
            "example_queries",
            f"Give at least {MIN_EXAMPLE_QUERIES} example queries (one per line).",
        )
    for text_field in ("name", "description", "excludes", *LIST_FIELDS):
        value = data.get(text_field)
        texts = value if isinstance(value, list) else [value]
        problem = next(
            (unstorable(t) for t in texts if isinstance(t, str) and unstorable(t)), None
        )
        if problem:
            add(text_field, f"{text_field.replace('_', ' ').capitalize()} {problem}.")
    fpr = data.get("target_fpr")
    if fpr is not None and (
        isinstance(fpr, bool)
        or not isinstance(fpr, float | int)
        or not math.isfinite(fpr)
        or not 0 < fpr < 1
    ):
        add("target_fpr", "Target FPR must be empty or a number between 0 and 1.")
    return errors


def category_values(category: Category) -> dict[str, Any]:
    return {name: getattr(category, name) for name in CATEGORY_FIELDS}


def publish_blockers(constitution: Constitution) -> list[str]:
    """Why the draft cannot be published now (empty list: it can)."""
    reasons: list[str] = []
    categories = list(constitution.categories.all())
    kinds = {c.kind for c in categories}
    if Kind.RESTRICTED not in kinds:
        reasons.append("Add at least one restricted category.")
    if Kind.PERMITTED not in kinds:
        reasons.append("Add at least one permitted category.")
    for category in categories:
        others = [c.name for c in categories if c.pk != category.pk]
        errors = validate_category(category_values(category), other_names=others)
        for messages in errors.values():
            reasons.extend(f"Category '{category.name}': {m}" for m in messages)
    if not constitution.domain.strip():
        reasons.append("Describe the domain.")
    latest = constitution.latest_version()
    if latest is not None and latest.content == constitution.draft_content():
        reasons.append(f"The draft is unchanged since v{latest.number}.")
    return reasons


# --- Constitution -------------------------------------------------------------------


def create_constitution(
    *, user: Any, name: str, slug: str, domain: str
) -> Constitution:
    with transaction.atomic():
        constitution = Constitution.objects.create(
            name=name, slug=slug, domain=domain, created_by=_user_or_none(user)
        )
        record(constitution, user, "create", f"created '{name}'", slug=slug)
    return constitution


def update_header(
    constitution: Constitution,
    data: Mapping[str, str],
    *,
    seen_revision: int,
    user: Any,
) -> Constitution:
    """Save name/domain if nobody saved them since `seen_revision`, else `Conflict`."""
    values = {k: data[k] for k in HEADER_FIELDS}
    with transaction.atomic():
        before = (
            Constitution.objects.filter(pk=constitution.pk).values(*HEADER_FIELDS).get()
        )
        updated = Constitution.objects.filter(
            pk=constitution.pk, draft_revision=seen_revision
        ).update(
            **values, draft_revision=F("draft_revision") + 1, updated_at=timezone.now()
        )
        current = Constitution.objects.get(pk=constitution.pk)
        if not updated:
            theirs = {k: getattr(current, k) for k in HEADER_FIELDS}
            if theirs == values:  # the same values were saved already: nothing is lost
                return current
            last = current.audit_events.filter(action="edit_header").first()
            raise Conflict(
                theirs=theirs,
                mine=values,
                revision=current.draft_revision,
                by=last.user if last else None,
                at=last.at if last else current.updated_at,
            )
        changes = {
            k: [before[k], values[k]] for k in HEADER_FIELDS if before[k] != values[k]
        }
        if changes:
            record(
                current,
                user,
                "edit_header",
                f"edited {', '.join(changes)}",
                fields=list(changes),
                changes=changes,
            )
    return current


# --- Categories ---------------------------------------------------------------------


def _other_names(
    constitution: Constitution, exclude_pk: int | None = None
) -> list[str]:
    names = constitution.categories.exclude(pk=exclude_pk).values_list(
        "name", flat=True
    )
    return list(names)


def add_category(
    constitution: Constitution, data: Mapping[str, Any], *, user: Any
) -> Category:
    values = {k: data.get(k, [] if k in LIST_FIELDS else None) for k in CATEGORY_FIELDS}
    values["excludes"] = values["excludes"] or ""
    with transaction.atomic():
        locked = Constitution.objects.select_for_update().get(pk=constitution.pk)
        errors = validate_category(values, other_names=_other_names(locked))
        if locked.categories.count() >= MAX_CATEGORIES:
            errors.setdefault("name", []).append(
                f"This constitution has {MAX_CATEGORIES} categories, the most it may have."
            )
        if errors:
            raise ValidationFailed(errors)
        last = locked.categories.order_by("-position").values_list(
            "position", flat=True
        )
        last_position = last.first()
        position = 0 if last_position is None else last_position + 1
        category = Category.objects.create(
            constitution=locked,
            position=position,
            updated_by=_user_or_none(user),
            **values,
        )
        record(
            locked,
            user,
            "add_category",
            f"added {values['kind']} category '{values['name']}'",
            category_id=category.pk,
            fields=list(CATEGORY_FIELDS),
        )
    return category


def update_category(
    category: Category, data: Mapping[str, Any], *, seen_revision: int, user: Any
) -> Category:
    """Save a category unless someone saved it since `seen_revision` (then `Conflict`).

    The conditional UPDATE makes this race-free: of two saves from the same
    revision exactly one matches `revision=seen_revision`.
    """
    values = {k: data[k] for k in CATEGORY_FIELDS}
    constitution = category.constitution
    errors = validate_category(
        values, other_names=_other_names(constitution, category.pk)
    )
    if errors:
        raise ValidationFailed(errors)
    with transaction.atomic():
        before = (
            Category.objects.filter(pk=category.pk).values(*CATEGORY_FIELDS).first()
        )
        if before is None:
            raise Gone(category.pk)
        try:
            with transaction.atomic():
                updated = Category.objects.filter(
                    pk=category.pk, revision=seen_revision
                ).update(
                    **values,
                    revision=F("revision") + 1,
                    updated_by=_user_or_none(user),
                    updated_at=timezone.now(),
                )
        except IntegrityError:  # a concurrent save took the name between check and save
            raise ValidationFailed(
                {"name": [f"Another category is already called '{values['name']}'."]}
            ) from None
        current = (
            Category.objects.select_related("updated_by").filter(pk=category.pk).first()
        )
        if current is None:
            raise Gone(category.pk)
        if not updated:
            theirs = category_values(current)
            if theirs == values:
                return current  # e.g. an autosave already stored exactly these values
            raise Conflict(
                theirs=theirs,
                mine=values,
                revision=current.revision,
                by=current.updated_by,
                at=current.updated_at,
            )
        changes = {
            k: [before[k], values[k]] for k in CATEGORY_FIELDS if before[k] != values[k]
        }
        if changes:
            record(
                constitution,
                user,
                "edit_category",
                f"edited '{current.name}': {', '.join(changes)}",
                category_id=current.pk,
                fields=list(changes),
                changes=changes,
            )
    return current


def delete_category(
    category: Category, *, seen_revision: int | None, user: Any
) -> None:
    """Delete, unless someone edited it since `seen_revision` (then `Conflict`)."""
    with transaction.atomic():
        rows = Category.objects.filter(pk=category.pk)
        if seen_revision is not None:
            rows = rows.filter(revision=seen_revision)
        deleted, _ = rows.delete()
        if not deleted:
            current = Category.objects.filter(pk=category.pk).first()
            if current is None:
                return  # already gone: the author's intent holds
            raise Conflict(
                theirs=category_values(current),
                mine=category_values(category),
                revision=current.revision,
                by=current.updated_by,
                at=current.updated_at,
            )
        record(
            category.constitution,
            user,
            "delete_category",
            f"deleted {category.kind} category '{category.name}'",
            category_id=category.pk,
            values=category_values(category),
        )


def move_category(category: Category, *, direction: str, user: Any) -> bool:
    """Swap with the neighbour above ("up") or below ("down"); False at an end."""
    if direction not in {"up", "down"}:
        raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
    with transaction.atomic():
        # Lock the parent so two concurrent moves see each other's positions.
        locked = Constitution.objects.select_for_update().get(
            pk=category.constitution_id
        )
        ordered = list(locked.categories.order_by("position", "id"))
        index = next((i for i, c in enumerate(ordered) if c.pk == category.pk), None)
        if index is None:
            raise Gone(category.pk)
        other = index - 1 if direction == "up" else index + 1
        if not 0 <= other < len(ordered):
            return False
        ordered[index], ordered[other] = ordered[other], ordered[index]
        for position, item in enumerate(ordered):
            if item.position != position:
                Category.objects.filter(pk=item.pk).update(position=position)
        record(
            locked,
            user,
            "reorder",
            f"moved '{category.name}' {direction}",
            category_id=category.pk,
            fields=["position"],
            order=[c.name for c in ordered],
        )
    return True


# --- Publishing and whole-draft replacement -----------------------------------------


def publish_draft(
    constitution: Constitution, *, user: Any, note: str = ""
) -> ConstitutionVersion:
    with transaction.atomic():
        locked = Constitution.objects.select_for_update().get(pk=constitution.pk)
        reasons = publish_blockers(locked)
        if reasons:
            raise PublishBlocked(reasons)
        return publish(locked, user=user, note=note)


def replace_draft(
    constitution: Constitution,
    content: Mapping[str, Any],
    *,
    user: Any,
    action: str = "import",
) -> Constitution:
    """Make the draft equal `content` (already validated); the slug stays."""
    with transaction.atomic():
        locked = Constitution.objects.select_for_update().get(pk=constitution.pk)
        locked.categories.all().delete()
        for position, item in enumerate(content["categories"]):
            Category.objects.create(
                constitution=locked,
                position=position,
                updated_by=_user_or_none(user),
                **{k: item[k] for k in CATEGORY_FIELDS},
            )
        locked.name = content["name"]
        locked.domain = content["domain"]
        locked.draft_revision = F("draft_revision") + 1
        locked.save(update_fields=["name", "domain", "draft_revision", "updated_at"])
        locked.refresh_from_db()
        record(
            locked,
            user,
            action,
            f"replaced the draft ({len(content['categories'])} categories)",
            fields=["name", "domain", "categories"],
        )
    return locked


def create_from_content(content: Mapping[str, Any], *, user: Any) -> Constitution:
    with transaction.atomic():
        constitution = create_constitution(
            user=user,
            name=content["name"],
            slug=content["slug"],
            domain=content["domain"],
        )
        return replace_draft(constitution, content, user=user)


def _user_or_none(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None
