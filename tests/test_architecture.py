"""The layout rules of ARCHITECTURE.md, checked on the source (no database).

Every import counts, those inside functions too: a cycle dodged by a local import
is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("guardweb", "constitutions", "classifiers")
MAX_LINES = 600

# The classifiers app's domains in dependency order: a module may import from its
# own layer's domain and from earlier layers, never from a later layer.
LAYERS = [
    {"ml"},
    {"models"},
    {"core"},
    {"datasets"},
    {"audit", "training"},
    {"review"},
    {"guard"},
    {"evaluation"},
    {"api", "playground", "management", "templatetags"},
    {"urls", "routing", "tasks"},
]
LAYER_OF = {domain: index for index, layer in enumerate(LAYERS) for domain in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(*packages: str) -> Iterator[Path]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Our modules that `path` imports anywhere in its body (function-local too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(*packages: str) -> dict[str, set[str]]:
    paths = list(source_files(*packages))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def domain(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "classifiers" and len(parts) > 1 else None


def test_no_import_cycle_among_our_modules() -> None:
    assert cycles(import_graph(*PACKAGES)) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in source_files(*PACKAGES, "bench")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_domains_import_only_their_own_and_earlier_layers() -> None:
    wrong = []
    for module, imports in import_graph(*PACKAGES).items():
        mine = domain(module)
        if mine is None or mine not in LAYER_OF:
            continue
        for other in imports:
            theirs = domain(other)
            if theirs is None or theirs == mine or theirs not in LAYER_OF:
                continue
            if LAYER_OF[theirs] >= LAYER_OF[mine]:
                wrong.append(f"{module} -> {other}")
    assert wrong == []


def test_ml_imports_nothing_outside_ml() -> None:
    wrong = [
        f"{module} -> {other}"
        for module, imports in import_graph(*PACKAGES).items()
        if domain(module) == "ml"
        for other in imports
        if domain(other) != "ml"
    ]
    assert wrong == []


def test_constitutions_use_only_the_ml_types_of_classifiers() -> None:
    wrong = [
        f"{module} -> {other}"
        for module, imports in import_graph(*PACKAGES).items()
        if module.startswith("constitutions")
        for other in imports
        if other.startswith("classifiers") and domain(other) != "ml"
    ]
    assert wrong == []


def test_worker_side_runs_never_import_services() -> None:
    # Services enqueue tasks and tasks call run: run importing services is a cycle
    # waiting to happen.
    wrong = [
        f"{module} -> {other}"
        for module, imports in import_graph("classifiers").items()
        if module.rpartition(".")[2] in ("run", "cascade_run")
        for other in imports
        if other.rpartition(".")[2] == "services"
    ]
    assert wrong == []


def test_no_private_name_is_imported_from_another_module() -> None:
    wrong = []
    for path in source_files(*PACKAGES, "bench"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                PACKAGES
            ):
                wrong += [
                    f"{module_name(path)}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert wrong == []


def test_bench_does_not_import_the_tests() -> None:
    known = {module_name(p) for p in source_files("tests", "bench")}
    wrong = [
        f"{module_name(p)} -> {other}"
        for p in source_files("bench")
        for other in imported_modules(p, known)
        if other.split(".")[0] == "tests"
    ]
    assert wrong == []
