"""Compare two constitution contents (versions or the draft) field by field.

Categories are matched by name: a renamed category shows as one removed and one
added. Text fields are diffed word by word and list fields item by item with
difflib, giving segments the templates render as <del>/<ins>.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from constitutions.services import CATEGORY_FIELDS, LIST_FIELDS

_TOKEN_RE = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)


@dataclass
class Segment:
    op: str  # "equal", "insert" or "delete"
    text: str


@dataclass
class FieldDiff:
    field: str
    old: Any
    new: Any
    segments: list[Segment]


@dataclass
class CategoryDiff:
    name: str
    status: str  # "added", "removed", "changed" or "moved"
    kind: str
    fields: list[FieldDiff] = field(default_factory=list)
    old_position: int | None = None
    new_position: int | None = None


@dataclass
class ContentDiff:
    header: list[FieldDiff]
    categories: list[CategoryDiff]

    @property
    def changed(self) -> bool:
        return bool(self.header or self.categories)

    def count(self, status: str) -> int:
        return sum(1 for c in self.categories if c.status == status)

    @property
    def summary(self) -> str:
        parts = [
            f"{self.count(s)} {s}" for s in ("added", "removed", "changed", "moved")
        ]
        header = "name/domain changed; " if self.header else ""
        return header + "categories: " + ", ".join(parts)


def text_segments(old: str, new: str) -> list[Segment]:
    """Word-level diff of two strings (whitespace and punctuation are tokens too)."""
    old_tokens = _TOKEN_RE.findall(old)
    new_tokens = _TOKEN_RE.findall(new)
    matcher = difflib.SequenceMatcher(None, old_tokens, new_tokens, autojunk=False)
    segments: list[Segment] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            segments.append(Segment("equal", "".join(old_tokens[i1:i2])))
            continue
        if i2 > i1:
            segments.append(Segment("delete", "".join(old_tokens[i1:i2])))
        if j2 > j1:
            segments.append(Segment("insert", "".join(new_tokens[j1:j2])))
    return segments


def list_segments(old: list[str], new: list[str]) -> list[Segment]:
    """Item-level diff of two lists; each segment is one item plus a newline."""
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    segments: list[Segment] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            segments.extend(Segment("equal", item + "\n") for item in old[i1:i2])
            continue
        segments.extend(Segment("delete", item + "\n") for item in old[i1:i2])
        segments.extend(Segment("insert", item + "\n") for item in new[j1:j2])
    return segments


def _display(value: Any) -> str:
    return "" if value is None else str(value)


def field_diff(name: str, old: Any, new: Any) -> FieldDiff | None:
    if old == new:
        return None
    if name in LIST_FIELDS:
        segments = list_segments(list(old or []), list(new or []))
    else:
        segments = text_segments(_display(old), _display(new))
    return FieldDiff(field=name, old=old, new=new, segments=segments)


def diff_contents(old: dict[str, Any], new: dict[str, Any]) -> ContentDiff:
    header = [
        d
        for name in ("name", "domain")
        if (d := field_diff(name, old[name], new[name]))
    ]
    old_categories = {c["name"]: (i, c) for i, c in enumerate(old["categories"])}
    new_categories = {c["name"]: (i, c) for i, c in enumerate(new["categories"])}
    # A category "moved" when its rank among the categories present on both sides
    # changed; additions and removals elsewhere shift positions but move nothing.
    common_old = [n for n in old_categories if n in new_categories]
    common_new = [n for n in new_categories if n in old_categories]
    categories: list[CategoryDiff] = []
    for name, (position, category) in new_categories.items():
        if name not in old_categories:
            fields = [
                d
                for f in CATEGORY_FIELDS
                if (d := field_diff(f, [] if f in LIST_FIELDS else None, category[f]))
                and category[f] not in ("", None, [])
            ]
            categories.append(
                CategoryDiff(
                    name, "added", category["kind"], fields, new_position=position
                )
            )
            continue
        old_position, old_category = old_categories[name]
        fields = [
            d
            for f in CATEGORY_FIELDS
            if (d := field_diff(f, old_category.get(f), category.get(f)))
        ]
        moved = common_old.index(name) != common_new.index(name)
        if fields or moved:
            categories.append(
                CategoryDiff(
                    name,
                    "changed" if fields else "moved",
                    category["kind"],
                    fields,
                    old_position=old_position,
                    new_position=position,
                )
            )
    for name, (position, category) in old_categories.items():
        if name not in new_categories:
            categories.append(
                CategoryDiff(name, "removed", category["kind"], old_position=position)
            )
    return ContentDiff(header=header, categories=categories)
