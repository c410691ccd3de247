"""The import graph of our packages (read with ``ast``, nothing imported): layers point one way.

Layers, bottom up: ``schemas`` (the event contract) <- ``producers`` <- the base modules of ``auditlog`` <-
``consumers`` / ``query_api`` (independent of each other) <- the entry points of ``auditlog`` (``cli``, ``cli_up``,
``cli_migrate``, ``cli_emit``, ``embedded``) that put everything together. Every import counts, also one inside a
function, and so does a module named by a dotted string (``importlib.import_module("consumers.cli")``).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("auditlog", "consumers", "query_api", "schemas", "producers")
#: auditlog's modules every part may use: they import nothing above them (closed under imports)
BASE = frozenset({"auditlog", "auditlog.settings", "auditlog.store", "auditlog.kafka", "auditlog.logs",
                  "auditlog.private_dir", "auditlog.stopsignals"})

#: Known imports against the layers: auditlog's entry points import the parts they start, which makes the
#: packages auditlog <-> consumers and auditlog <-> query_api a cycle. A shrinking allow-list: remove an entry
#: when its import goes (the test fails on an entry that no longer occurs), never add one.
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset({
    ("auditlog.cli", "consumers.cli"),  # COMMAND_MODULES: `auditlog consume`, `auditlog dlq`
    ("auditlog.cli", "query_api.cli"),  # COMMAND_MODULES: `auditlog api`, `auditlog export`
    ("auditlog.embedded", "consumers.worker"),  # `auditlog up` runs a consumer worker ...
    ("auditlog.embedded", "query_api.app"),  # ... and the API
    ("auditlog.embedded", "query_api.auth"),  # ... and mints the demo tokens
    ("auditlog.embedded", "query_api.serving"),  # ... with the API's own uvicorn server
    ("auditlog.cli_token", "query_api.auth"),  # `auditlog token` mints development tokens with the same function
})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


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
    return mod.partition(".")[0]


def _edges(skip_known: bool) -> set[tuple[str, str]]:
    return {(m, t) for m, ts in imports().items() for t in ts if not (skip_known and (m, t) in KNOWN_UPWARD)}


def test_the_graph_is_read() -> None:
    assert "auditlog.store" in imports()["auditlog.migrations"]
    assert "consumers.cli" in imports()["auditlog.cli"]  # a dotted string counts
    assert "schemas.event" in imports()["query_api.stats"]


def test_known_violations_still_exist() -> None:
    gone = KNOWN_UPWARD - _edges(skip_known=False)
    assert not gone, f"fixed: remove {sorted(gone)} from KNOWN_UPWARD"


def test_no_cycle_among_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for m, t in _edges(skip_known=True):
        if _package(m) != _package(t):
            graph[_package(m)].add(_package(t))

    def reaches(src: str, dst: str, seen: set[str]) -> bool:
        return any(n == dst or (n not in seen and reaches(n, dst, seen | {n})) for n in graph[src])

    cycles = sorted(p for p in PACKAGES if reaches(p, p, {p}))
    assert not cycles, f"packages in an import cycle: {cycles}; package graph: {graph}"


def test_schemas_imports_nothing_of_ours_outside_schemas() -> None:
    bad = sorted((m, t) for m, t in _edges(skip_known=False) if _package(m) == "schemas" and _package(t) != "schemas")
    assert not bad


def test_producers_import_only_schemas() -> None:
    bad = sorted((m, t) for m, t in _edges(skip_known=False)
                 if _package(m) == "producers" and _package(t) not in ("producers", "schemas"))
    assert not bad


def test_consumers_and_query_api_are_independent() -> None:
    pair = {"consumers", "query_api"}
    bad = sorted((m, t) for m, t in _edges(skip_known=False)
                 if {_package(m), _package(t)} == pair)
    assert not bad


def test_auditlog_base_modules_import_only_base_modules() -> None:
    assert modules().keys() >= BASE
    seen, todo = set(BASE), list(BASE)
    while todo:
        for t in imports()[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert seen == BASE, f"the base modules reach {sorted(seen - BASE)}"
    for m in BASE:
        assert not {_package(t) for t in imports()[m]} & {"consumers", "query_api", "producers"}


def test_shared_facts_live_low() -> None:
    """What the API's modules share lives in errors/models, not in one route module or the stats query."""
    assert "query_api.stats" not in imports()["query_api.models"]
    routes = {m for m in modules() if m.startswith("query_api.api_")}
    for m in modules():
        if m != "query_api.app":
            assert not imports()[m] & routes, f"{m} imports a route module: {sorted(imports()[m] & routes)}"
