"""Module docstrings state a contract, not history; modules stay small enough to read.

Every ``.py`` under auditlog/, consumers/, query_api/ and schemas/ is parsed with ``ast`` (nothing is imported):
no module docstring may cite an issue or acceptance number (history belongs in git and docs/, the contract in
the docstring), and no module may grow beyond :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("auditlog", "consumers", "query_api", "schemas")
MAX_LINES = 400
HISTORY = re.compile(r"\b(issue|acceptance)\s*\d", re.IGNORECASE)
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_every_package_has_modules() -> None:
    assert {p.relative_to(ROOT).parts[0] for p in SOURCES} == set(PACKAGES)


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_module_docstring_cites_no_issue_or_acceptance(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
    hit = HISTORY.search(doc)
    assert hit is None, f"{_name(path)}: module docstring cites {hit.group(0)!r}; state the contract instead"


@pytest.mark.parametrize("path", SOURCES, ids=_name)
def test_module_is_at_most_max_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines (> {MAX_LINES}): split it"


def test_the_pattern_catches_history() -> None:
    assert HISTORY.search("Chaos (Issue 5 acceptance 1)")
    assert HISTORY.search("see acceptance4")
    assert not HISTORY.search("migration 0040 adds the digests; tissue 3 is not an issue")
