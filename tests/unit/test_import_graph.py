"""The import graph of our packages (read with ``ast``, nothing imported): layers point one way, no module is in
a cycle, and no folder grows too wide.

Layers, bottom up: ``schemas`` (the event contract) <- ``producers`` (together the SDK a service installs);
``auditlog`` (the base: settings, logs, store, broker) imports nothing else of ours but the SDK's settings and Kafka
connection (``auditlogkit.settings``, ``auditlogkit.kafka``: one definition of ``AUDITLOG_KAFKA_*``); ``auditlogkit.server.db`` (migrations, roles, content hash, integrity)
only the base and ``schemas``; ``consumers`` / ``query_api`` (independent of each other) sit on those; and
``auditlogkit.server.app`` (the command line and ``up``) puts everything together, imported by nothing. A subpackage is a
package of its own here. Every import counts, also one inside a function, and so does a module named by a dotted
string (``importlib.import_module("auditlogkit.consumers.cli")``).

No two modules of ours import each other, directly or through others (:func:`test_no_cycle_among_modules`). There
every import statement counts, also one inside a function or under ``TYPE_CHECKING``: a deferred import is the
usual way to hide a cycle, not to remove one. A dotted string does not count there: it names a module loaded by
name, often in another process (``python -m auditlogkit.consumers.decode.helper``), which is no import of the one naming it.

In ``query_api``, only ``deps.py`` (per request) and the app factory (which sets it) touch ``app.state``
(:func:`test_only_deps_and_the_factory_touch_app_state`); and no folder of our packages holds more than
:data:`MAX_FLAT` Python files side by side (:func:`test_no_folder_is_too_wide`).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = ("auditlog", "consumers", "query_api", "schemas", "producers")
PACKAGES = ("auditlogkit.server", "auditlogkit.server.db", "auditlogkit.server.app", "auditlogkit.consumers", "auditlogkit.query_api", "auditlogkit.schemas", "auditlogkit")
MAX_FLAT = 15  # Python files (``__init__.py`` included) directly in one folder
#: the query_api modules that may touch ``app.state``: the per-request dependencies, the app factory that sets it,
#: and the command line's composition root, which attaches the producers to the app it built
APP_STATE_OWNERS = frozenset({"auditlogkit.query_api.deps", "auditlogkit.query_api.core.app", "auditlogkit.query_api.cli"})


#: each folder of :data:`TOP` and the package it is installed as (auditlogkit/ links them)
INSTALLED_AS = {"auditlog": "auditlogkit.server", "consumers": "auditlogkit.consumers",
                "query_api": "auditlogkit.query_api", "schemas": "auditlogkit.schemas", "producers": "auditlogkit"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = (*INSTALLED_AS[parts[0]].split("."), *parts[1:])
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
def _tree(mod: str) -> ast.Module:
    return ast.parse(modules()[mod].read_text(encoding="utf-8"))


@cache
def _imported(strings: bool) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for mod in modules():
        found: set[str] = set()
        for node in ast.walk(_tree(mod)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif strings and isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                names = [node.value] if node.value in modules() else []  # importlib.import_module("pkg.mod")
            found.update(m for m in map(_ours, names) if m is not None and m != mod)
        out[mod] = frozenset(found)
    return out


def imports() -> dict[str, frozenset[str]]:
    """Module -> the modules of ours it imports (anywhere in it) or names by a dotted string."""
    return _imported(strings=True)


def import_statements() -> dict[str, frozenset[str]]:
    """Module -> the modules of ours its import statements name (anywhere in it, also in a function)."""
    return _imported(strings=False)


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            out.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(c for c in out if len(c) > 1)


def _package(mod: str) -> str:
    """The package of ``mod``: its deepest package in :data:`PACKAGES` (``auditlogkit.server.db.roles`` -> ``auditlogkit.server.db``)."""
    return max((p for p in PACKAGES if mod == p or mod.startswith(p + ".")), key=len)


def _edges() -> set[tuple[str, str]]:
    return {(m, t) for m, ts in imports().items() for t in ts}


def test_the_graph_is_read() -> None:
    assert "auditlogkit.server.store" in imports()["auditlogkit.server.db.migrations"]
    assert "auditlogkit.consumers.cli" in imports()["auditlogkit.server.app.cli"]  # a dotted string counts
    assert "auditlogkit.consumers.cli" not in import_statements()["auditlogkit.server.app.cli"]  # but is no import statement
    assert _package("auditlogkit.server.db.roles") == "auditlogkit.server.db" and _package("auditlogkit.server.store") == "auditlogkit.server"
    assert "auditlogkit.schemas.event" in imports()["auditlogkit.query_api.read.stats"]
    assert "auditlogkit.query_api.read.filters" in import_statements()["auditlogkit.query_api.cli"]


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"}),
             "e": frozenset()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_no_cycle_among_modules() -> None:
    """No module of ours imports itself through others (module docstring: every import statement counts)."""
    cycles = _cycles(dict(import_statements()))
    assert not cycles, f"modules in an import cycle: {cycles}"


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
    bad = sorted((m, t) for m, t in _edges() if _package(m) == "auditlogkit.schemas" and _package(t) != "auditlogkit.schemas")
    assert not bad


def test_producers_import_only_schemas() -> None:
    bad = sorted((m, t) for m, t in _edges()
                 if _package(m) == "auditlogkit" and _package(t) not in ("auditlogkit", "auditlogkit.schemas"))
    assert not bad


def test_consumers_and_query_api_are_independent() -> None:
    pair = {"auditlogkit.consumers", "auditlogkit.query_api"}
    bad = sorted((m, t) for m, t in _edges()
                 if {_package(m), _package(t)} == pair)
    assert not bad


def test_the_base_imports_nothing_else_of_ours_but_the_sdks_connection_settings() -> None:
    bad = sorted((m, t) for m, t in _edges() if _package(m) == "auditlogkit.server" and _package(t) != "auditlogkit.server"
                 and t not in ("auditlogkit.settings", "auditlogkit.kafka"))
    assert not bad


def test_the_database_owner_imports_only_the_base_and_schemas_without_a_cycle() -> None:
    bad = sorted((m, t) for m, t in _edges()
                 if _package(m) == "auditlogkit.server.db" and _package(t) not in ("auditlogkit.server.db", "auditlogkit.server", "auditlogkit.schemas"))
    assert not bad
    db = {m for m in modules() if _package(m) == "auditlogkit.server.db"}

    def reaches(src: str, dst: str, seen: frozenset[str]) -> bool:
        return any(n == dst or (n not in seen and reaches(n, dst, seen | {n})) for n in imports()[src] & db)

    assert not sorted(m for m in db if reaches(m, m, frozenset({m})))


def test_nothing_imports_the_application() -> None:
    bad = sorted((m, t) for m, t in _edges() if _package(t) == "auditlogkit.server.app" and _package(m) != "auditlogkit.server.app")
    assert not bad


def test_shared_facts_live_low() -> None:
    """What the API's modules share lives in core/errors and models, not in one route module or the stats query;
    only the app factory includes the routes."""
    assert "auditlogkit.query_api.read.stats" not in imports()["auditlogkit.query_api.models"]
    routes = {m for m in modules() if m.startswith("auditlogkit.query_api.routes.")}
    assert len(routes) >= 8
    for m in modules():
        if m != "auditlogkit.query_api.core.app":
            assert not imports()[m] & routes, f"{m} imports a route module: {sorted(imports()[m] & routes)}"


def _touches_app_state(tree: ast.AST) -> list[int]:
    """Lines that read or write ``<...>app.state`` (``request.app.state``, ``app.state``, ``getattr(app, "state")``)."""
    def is_app(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "app") or (isinstance(node, ast.Attribute)
                                                                     and node.attr == "app")
    def is_state(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr == "state" and is_app(node.value)
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and is_app(node.args[0]) and isinstance(node.args[1], ast.Constant)
                and node.args[1].value == "state")

    return sorted(node.lineno for node in ast.walk(tree) if is_state(node))


def test_the_app_state_check_sees_every_form() -> None:
    code = "request.app.state.x\napp.state.y = 1\ngetattr(self.config.app, 'state', None)\nrequest.state.z\n"
    assert _touches_app_state(ast.parse(code)) == [1, 2, 3]


def test_only_deps_and_the_factory_touch_app_state() -> None:
    """The app-wide objects reach a request only through ``auditlogkit.query_api.deps`` (module docstring)."""
    assert set(modules()) >= APP_STATE_OWNERS
    bad = {m: lines for m in modules() if m.startswith("auditlogkit.query_api.") and m not in APP_STATE_OWNERS
           and (lines := _touches_app_state(_tree(m)))}
    assert not bad, f"app.state outside {sorted(APP_STATE_OWNERS)} (module: lines): {bad}"
    assert _touches_app_state(_tree("auditlogkit.query_api.deps")) and _touches_app_state(_tree("auditlogkit.query_api.core.app"))


def test_no_folder_is_too_wide() -> None:
    """Every folder of our packages holds at most :data:`MAX_FLAT` Python files directly (split it by role)."""
    folders = {p.parent for p in modules().values()}
    wide = {f.relative_to(ROOT).as_posix(): n for f in sorted(folders) if (n := len(list(f.glob("*.py")))) > MAX_FLAT}
    assert not wide, f"folders with more than {MAX_FLAT} Python files: {wide}"
