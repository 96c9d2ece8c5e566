"""YAML import/export of a constitution (schema: docs/constitution-yaml.md).

Export writes the same plain content dict a published version freezes, so
export -> import -> export is byte-identical and keeps the content hash. Import
composes the YAML node tree (every node knows its line) and validates it node by
node, so each error names its line. Aliases and anchors are refused while
composing: a "billion laughs" file fails at its first alias, before anything
expands.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from django.db import transaction

from constitutions import services
from constitutions.models import Constitution, ConstitutionVersion

SCHEMA_VERSION = 1
MAX_BYTES = 1_000_000  # a real constitution is a few KB; refuse anything absurd
SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]{1,80}$")

TOP_REQUIRED = ("name", "slug", "domain", "categories")
TOP_OPTIONAL = ("schema_version",)
CATEGORY_REQUIRED = ("name", "kind", "description", "example_queries")
CATEGORY_OPTIONAL = ("excludes", "example_responses", "languages", "tags", "target_fpr")


class YamlImportError(Exception):
    """Every problem found, each as "line N: ..." (sorted by line)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- Export -------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # our own importer refuses aliases, so never write any


# Line breaks other than "\n" are folded to spaces when PyYAML reads them back
# from plain, single-quoted or block scalars; only double quotes escape them.
_FRAGILE_BREAKS = frozenset("\r\x85\u2028\u2029")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text reads best as a literal block; PyYAML falls back to a
    # quoted style by itself whenever a block could not round-trip exactly.
    if _FRAGILE_BREAKS.intersection(value):
        style: str | None = '"'
    else:
        style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def export_content(content: dict[str, Any]) -> str:
    """The YAML text for a content dict (a draft's or a version's)."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "name": content["name"],
        "slug": content["slug"],
        "domain": content["domain"],
        "categories": [
            {key: category[key] for key in services.CATEGORY_FIELDS}
            for category in content["categories"]
        ],
    }
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=88,
    )


def export_draft(constitution: Constitution) -> str:
    return export_content(constitution.draft_content())


def export_version(version: ConstitutionVersion) -> str:
    return export_content(version.content)


# --- Parse and validate -------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases (YAML bombs) while composing."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise YamlImportError(
                [
                    f"line {event.start_mark.line + 1}: aliases (*{event.anchor}) are not allowed"
                ]
            )
        if getattr(event, "anchor", None) is not None:
            raise YamlImportError(
                [
                    f"line {event.start_mark.line + 1}: anchors (&{event.anchor}) are not allowed"
                ]
            )
        return super().compose_node(parent, index)


def _shown(text: str, limit: int = 80) -> str:
    """A name as error messages quote it: at most `limit` characters, NUL and lone
    surrogates escaped (the page that shows the error must be able to encode it)."""
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return shown.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Checker:
    """Walks the node tree, collecting "line N: ..." errors and building content."""

    def __init__(self) -> None:
        self.errors: list[tuple[int, str]] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: yaml.Node, message: str) -> None:
        self.errors.append((_line(node), message))

    def value(self, node: yaml.Node) -> Any:
        """The node's Python value; a value YAML cannot build (an unknown or unsafe
        tag such as !!python/name, `!!int abc`, a date like 2020-13-45) is an
        error on its line and None."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
            reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            tag = f" ({node.tag})" if node.tag and not node.tag.startswith("tag:yaml.org") else ""
            self.error(node, f"cannot read this value{tag}: {reason}"[:200])
            return None

    def mapping(
        self,
        node: yaml.Node,
        *,
        what: str,
        required: tuple[str, ...],
        optional: tuple[str, ...],
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping of field: value")
            return None
        fields: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key in fields:
                self.error(key_node, f"{what}: duplicate field '{key}'")
            elif key not in required and key not in optional:
                self.error(key_node, f"{what}: unknown field '{key}'")
            else:
                fields[key] = value_node
        for key in required:
            if key not in fields:
                self.error(node, f"{what}: missing required field '{key}'")
        return fields

    def text(
        self,
        fields: dict[str, yaml.Node],
        key: str,
        what: str,
        *,
        required: bool = True,
    ) -> str | None:
        node = fields.get(key)
        if node is None:
            return None if required else ""
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, str) or (required and not value.strip()):
            self.error(
                node, f"{what}{key} must be a {'non-empty ' if required else ''}string"
            )
            return None
        return value

    def string_list(
        self, fields: dict[str, yaml.Node], key: str, what: str, minimum: int = 0
    ) -> list[str] | None:
        node = fields.get(key)
        if node is None:
            return [] if minimum == 0 else None
        items = self.value(node) if isinstance(node, yaml.SequenceNode) else None
        if (
            not isinstance(items, list)
            or len(items) < minimum
            or not all(isinstance(item, str) and item.strip() for item in items)
        ):
            need = f"at least {minimum} " if minimum else ""
            self.error(node, f"{what}{key} must be a list of {need}non-empty strings")
            return None
        return items


def parse_yaml(data: str | bytes) -> dict[str, Any]:
    """Validated content dict from YAML text; raises `YamlImportError`."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise YamlImportError(
                [f"line 1: the file is larger than {MAX_BYTES} bytes"]
            )
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise YamlImportError(
                [f"line 1: the file is not UTF-8 ({exc.reason})"]
            ) from None
    if len(data.encode("utf-8")) > MAX_BYTES:
        raise YamlImportError([f"line 1: the file is larger than {MAX_BYTES} bytes"])
    try:
        root = yaml.compose(data, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise YamlImportError(
            [f"line {line}: invalid YAML: {exc.problem or exc}"]
        ) from None
    except yaml.YAMLError as exc:
        raise YamlImportError([f"line 1: invalid YAML: {exc}"]) from None
    except RecursionError:
        raise YamlImportError(["line 1: the YAML is nested too deeply"]) from None
    if root is None:
        raise YamlImportError(["line 1: the file is empty"])

    check = _Checker()
    top = check.mapping(
        root, what="constitution", required=TOP_REQUIRED, optional=TOP_OPTIONAL
    )
    if top is None:
        raise YamlImportError(
            [
                f"line {_line(root)}: the file must be a mapping with "
                f"{', '.join(TOP_REQUIRED)}"
            ]
        )
    if "schema_version" in top:
        version = check.value(top["schema_version"])
        if version != SCHEMA_VERSION or isinstance(version, bool):
            check.error(
                top["schema_version"], f"schema_version must be {SCHEMA_VERSION}"
            )
    name = check.text(top, "name", "")
    if name is not None and len(name) > services.MAX_NAME_LENGTH:
        check.error(top["name"], f"name must be at most {services.MAX_NAME_LENGTH} characters")
        name = None
    slug = check.text(top, "slug", "")
    if slug is not None and not SLUG_RE.match(slug):
        check.error(top["slug"], "slug must be 1-80 letters, digits, '-' or '_'")
        slug = None
    elif slug in services.RESERVED_SLUGS:
        check.error(top["slug"], f"slug '{slug}' is reserved; choose another")
        slug = None
    domain = check.text(top, "domain", "")
    for key, text in (("name", name), ("domain", domain)):
        problem = services.unstorable(text) if isinstance(text, str) else None
        if problem:
            check.error(top[key], f"{key} {problem}")
    categories: list[dict[str, Any]] = []
    categories_node = top.get("categories")
    if categories_node is not None and not isinstance(
        categories_node, yaml.SequenceNode
    ):
        check.error(categories_node, "categories must be a list")
    elif categories_node is not None and len(categories_node.value) > services.MAX_CATEGORIES:
        # Refused before any category is read: the work stays bounded.
        check.error(categories_node, f"at most {services.MAX_CATEGORIES} categories "
                    f"(this file has {len(categories_node.value)})")  # fmt: skip
    elif categories_node is not None:
        seen_names: list[str] = []
        for item_node in categories_node.value:
            category = _category(check, item_node, seen_names)
            if category is not None:
                categories.append(category)
                seen_names.append(category["name"])
    if check.errors:
        raise YamlImportError(
            [f"line {line}: {msg}" for line, msg in sorted(check.errors)]
        )
    return {"name": name, "slug": slug, "domain": domain, "categories": categories}


def _category(
    check: _Checker, node: yaml.Node, seen_names: list[str]
) -> dict[str, Any] | None:
    errors_before = len(check.errors)
    raw_name = None
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if getattr(key_node, "value", None) == "name" and isinstance(
                value_node, yaml.ScalarNode
            ):
                raw_name = check.value(value_node)
    named = isinstance(raw_name, str) and raw_name
    label = f"category '{_shown(raw_name)}'" if named else "category"
    what = label + ": "
    fields = check.mapping(
        node, what=label, required=CATEGORY_REQUIRED, optional=CATEGORY_OPTIONAL
    )
    if fields is None:
        return None
    values: dict[str, Any] = {
        "name": check.text(fields, "name", what),
        "kind": check.text(fields, "kind", what),
        "description": check.text(fields, "description", what),
        "excludes": check.text(fields, "excludes", what, required=False),
        "example_queries": check.string_list(
            fields, "example_queries", what, minimum=services.MIN_EXAMPLE_QUERIES
        ),
        "example_responses": check.string_list(fields, "example_responses", what),
        "languages": check.string_list(fields, "languages", what),
        "tags": check.string_list(fields, "tags", what),
        "target_fpr": None,
    }
    if "target_fpr" in fields:
        fpr = check.value(fields["target_fpr"])
        if isinstance(fpr, int) and not isinstance(fpr, bool):
            fpr = float(fpr)
        values["target_fpr"] = fpr
    # The editor's rules (unique names, allowed kinds, FPR range), for fields whose
    # type was right; the line is the offending field's (or the category's).
    semantic = services.validate_category(
        {k: v for k, v in values.items() if v is not None}
        | {"target_fpr": values["target_fpr"]},
        other_names=seen_names,
    )
    for field_name, messages in semantic.items():
        if values.get(field_name) is None and field_name != "target_fpr":
            continue  # already reported as missing or mistyped
        for message in messages:
            check.error(fields.get(field_name, node), what + message)
    if len(check.errors) > errors_before:
        return None
    return values


# --- Import -------------------------------------------------------------------------


def import_yaml(
    data: str | bytes,
    *,
    user: Any,
    mode: Literal["new", "replace"],
    target: Constitution | None = None,
) -> Constitution:
    """Create a constitution from YAML, or replace `target`'s draft; all or nothing."""
    content = parse_yaml(data)
    with transaction.atomic():
        if mode == "new":
            if Constitution.objects.filter(slug=content["slug"]).exists():
                raise YamlImportError(
                    [
                        f"line {_slug_line(data)}: a constitution with slug '{content['slug']}' "
                        "already exists; choose 'replace the draft' to update it"
                    ]
                )
            constitution = services.create_from_content(content, user=user)
            return constitution
        if target is None:
            raise ValueError("mode 'replace' needs a target constitution")
        return services.replace_draft(target, content, user=user)


def _slug_line(data: str | bytes) -> int:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    root = yaml.compose(text, Loader=_NoAliasLoader)
    for key_node, value_node in root.value:
        if key_node.value == "slug":
            return _line(value_node)
    return 1
