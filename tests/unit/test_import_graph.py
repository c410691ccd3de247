"""The import graph of our packages (read with ``ast``, nothing imported): layers point one way.

Layers, bottom up: ``schemas`` (the event contract) <- ``producers``; ``auditlog`` (the base: settings, logs,
store, Kafka, broker) imports nothing else of ours; ``auditlog.db`` (migrations, roles, content hash, integrity)
only the base and ``schemas``; ``consumers`` / ``query_api`` (independent of each other) sit on those; and
``auditlog.app`` (the command line and ``up``) puts everything together, imported by nothing. A subpackage is a
package of its own here. Every import counts, also one inside a function, and so does a module named by a dotted
string (``importlib.import_module("consumers.cli")``).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("auditlog", "consumers", "query_api", "schemas", "producers")
PACKAGES = ("auditlog", "auditlog.db", "auditlog.app", "consumers", "query_api", "schemas", "producers")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in TOP for p in sorted((ROOT / pkg).rglob("*.py"))}


def _ours(name: str) -> str | None:
    """The module of ours that ``name`` (a module or a name inside one) refers to, or None."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


@cache
def imports() -> dict[str, frozenset[str]]:
    """Module -> the modules of ours it imports (anywhere in it)."""
    out: dict[str, frozenset[str]] = {}
    for mod, path in modules().items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                names = [node.value] if node.value in modules() else []  # importlib.import_module("pkg.mod")
            found.update(m for m in map(_ours, names) if m is not None and m != mod)
        out[mod] = frozenset(found)
    return out


def _package(mod: str) -> str:
    """The package of ``mod``: its deepest package in :data:`PACKAGES` (``auditlog.db.roles`` -> ``auditlog.db``)."""
    return max((p for p in PACKAGES if mod == p or mod.startswith(p + ".")), key=len)


def _edges() -> set[tuple[str, str]]:
    return {(m, t) for m, ts in imports().items() for t in ts}


def test_the_graph_is_read() -> None:
    assert "auditlog.store" in imports()["auditlog.db.migrations"]
    assert "consumers.cli" in imports()["auditlog.app.cli"]  # a dotted string counts
    assert _package("auditlog.db.roles") == "auditlog.db" and _package("auditlog.store") == "auditlog"
    assert "schemas.event" in imports()["query_api.stats"]


def test_no_cycle_among_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for m, t in _edges():
        if _package(m) != _package(t):
            graph[_package(m)].add(_package(t))

    def reaches(src: str, dst: str, seen: set[str]) -> bool:
        return any(n == dst or (n not in seen and reaches(n, dst, seen | {n})) for n in graph[src])

    cycles = sorted(p for p in PACKAGES if reaches(p, p, {p}))
    assert not cycles, f"packages in an import cycle: {cycles}; package graph: {graph}"


def test_schemas_imports_nothing_of_ours_outside_schemas() -> None:
    bad = sorted((m, t) for m, t in _edges() if _package(m) == "schemas" and _package(t) != "schemas")
    assert not bad


def test_producers_import_only_schemas() -> None:
    bad = sorted((m, t) for m, t in _edges()
                 if _package(m) == "producers" and _package(t) not in ("producers", "schemas"))
    assert not bad


def test_consumers_and_query_api_are_independent() -> None:
    pair = {"consumers", "query_api"}
    bad = sorted((m, t) for m, t in _edges()
                 if {_package(m), _package(t)} == pair)
    assert not bad


def test_the_base_imports_nothing_else_of_ours() -> None:
    bad = sorted((m, t) for m, t in _edges() if _package(m) == "auditlog" and _package(t) != "auditlog")
    assert not bad


def test_the_database_owner_imports_only_the_base_and_schemas_without_a_cycle() -> None:
    bad = sorted((m, t) for m, t in _edges()
                 if _package(m) == "auditlog.db" and _package(t) not in ("auditlog.db", "auditlog", "schemas"))
    assert not bad
    db = {m for m in modules() if _package(m) == "auditlog.db"}

    def reaches(src: str, dst: str, seen: frozenset[str]) -> bool:
        return any(n == dst or (n not in seen and reaches(n, dst, seen | {n})) for n in imports()[src] & db)

    assert not sorted(m for m in db if reaches(m, m, frozenset({m})))


def test_nothing_imports_the_application() -> None:
    bad = sorted((m, t) for m, t in _edges() if _package(t) == "auditlog.app" and _package(m) != "auditlog.app")
    assert not bad


def test_shared_facts_live_low() -> None:
    """What the API's modules share lives in errors/models, not in one route module or the stats query."""
    assert "query_api.stats" not in imports()["query_api.models"]
    routes = {m for m in modules() if m.startswith("query_api.api_")}
    for m in modules():
        if m != "query_api.app":
            assert not imports()[m] & routes, f"{m} imports a route module: {sorted(imports()[m] & routes)}"
