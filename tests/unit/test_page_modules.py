"""The page's ES modules (query_api/static/js): every import resolves, the page's mutable state lives only in
state.js, and the modules stay small (main.js is the entry point that wires the parts)."""

from __future__ import annotations

import re

import pytest

from auditlogkit.query_api.routes.page import STATIC_DIR as STATIC

JS = STATIC / "js"
MODULES = {p.name: p.read_text(encoding="utf-8") for p in sorted(JS.glob("*.js"))}

IMPORT = re.compile(r'^import\s*(?:\{([^}]*)\}\s*from\s*)?"([^"]+)";', re.M)
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:const|let|function\*?|class)\s+([\w$]+)", re.M)
TOP_LEVEL_VAR = re.compile(r"^(?:export\s+)?(?:let|var)\s+(\w+)", re.M)
# a change of the state object: an assignment to one of its properties, or a mutating call on one
PAGE_MUTATION = re.compile(r"\bpage(?:\.\w+)+\s*(?:[-+*/|&]?=(?!=)|\+\+|--)|\bpage\.\w+\.(?:add|delete|clear|set|push|splice)\(|"
                           r"Object\.assign\(\s*page\b")
# top-level `let`s that are not page state: the API client's 401 hook, set once by session.js
ALLOWED_LETS = {"api.js": {"onUnauthorized"}}


def _imports(src: str) -> list[tuple[str, list[str]]]:
    """(relative path, imported names) of each static import of a module."""
    return [(path, [n.strip().split(" as ")[0] for n in (names or "").split(",") if n.strip()])
            for names, path in IMPORT.findall(src)]


def test_the_page_loads_main_as_its_one_module() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/static/js/main.js">']


@pytest.mark.parametrize("name", MODULES)
def test_every_import_is_a_module_that_exports_the_names(name: str) -> None:
    for path, names in _imports(MODULES[name]):
        assert path.startswith("./") and path.endswith(".js"), (name, path)  # same-origin files, no bare specifiers
        target = path[2:]
        assert target in MODULES, f"{name} imports {path}, which does not exist"
        exported = set(EXPORT.findall(MODULES[target]))
        assert set(names) <= exported, f"{name} imports {sorted(set(names) - exported)} that {target} does not export"


def test_the_import_graph_is_acyclic_and_reaches_every_module() -> None:
    graph = {name: [p[2:] for p, _ in _imports(src)] for name, src in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in trail, "import cycle: " + " -> ".join((*trail[trail.index(name):], name))
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, (*trail, name))
        done.add(name)

    visit("main.js", ())
    assert done == set(MODULES), f"modules main.js never loads: {sorted(set(MODULES) - done)}"


@pytest.mark.parametrize("name", [n for n in MODULES if n != "state.js"])
def test_only_state_js_holds_mutable_state(name: str) -> None:
    src = MODULES[name]
    assert set(TOP_LEVEL_VAR.findall(src)) <= ALLOWED_LETS.get(name, set()), f"{name}: top-level let/var"
    changes = [m.group(0) for m in PAGE_MUTATION.finditer(src)]
    assert not changes, f"{name} changes the page state itself (use the functions of state.js): {changes}"


def test_state_js_holds_the_page_state() -> None:
    src = MODULES["state.js"]
    assert re.search(r"^export const page = \{", src, re.M)
    assert PAGE_MUTATION.search(src)  # the check above does find changes where there are some


def test_main_js_is_a_small_entry_point() -> None:
    assert len(MODULES["main.js"].splitlines()) < 150


@pytest.mark.parametrize("name", MODULES)
def test_modules_stay_small(name: str) -> None:
    assert len(MODULES[name].splitlines()) <= 300, name
