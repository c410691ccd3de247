"""The contract the code cites is in the repository, and the README stays a short entry point.

Code and docs cite the contract by file name (``API.md "Live tail"``, ``EVENT.md``): every such upper-case ``.md``
name cited in a ``.py``, ``.js``, ``.html`` or ``.md`` file of ours must exist in the repository (the contract lives
in ``docs/contract/``). Nothing may point at files outside the repository. Every relative Markdown link of the
README and the docs resolves, anchors included. The README starts with the two set-up commands, lists every
document, and stays under :data:`README_MAX_LINES` lines (measured figures live in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: directories that are not ours: environments, caches, build output, test artifacts
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "build", "dist", "__pycache__", ".mypy_cache", ".pytest_cache",
             ".ruff_cache", ".hypothesis", ".auditlog"}
SKIP_PATHS = {ROOT / "tests" / "artifacts"}
CITING_SUFFIXES = {".py", ".js", ".html", ".md"}
CITED = re.compile(r"(?<![\w.-])([A-Z][A-Z0-9_]*\.md)\b")
CONTRACT = {"API.md", "EVENT.md", "CATALOG.md", "MEASURED.md"}
#: a path outside the repository (written in two parts so that this file does not contain it)
OUTSIDE = re.compile("|".join(re.escape(p) for p in ("../" + "shared/", "/work/" + "shared")))
README = ROOT / "README.md"
README_MAX_LINES = 150
SETUP_COMMANDS = ["python3 -m venv .venv && .venv/bin/pip install -c requirements.lock '.[server]' && "
                  ".venv/bin/auditlog up --demo", "scripts/test"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _ours(root: Path = ROOT) -> Iterator[Path]:
    """Every file of the checkout that is ours (sorted walk; skipped directories are not entered)."""
    for path in sorted(root.iterdir()):
        if path.is_dir():
            if path.name in SKIP_DIRS or path.name.endswith(".egg-info") or path in SKIP_PATHS:
                continue
            yield from _ours(path)
        elif path.is_file():
            yield path


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (screenshots, wheels)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


FILES = list(_ours())
DOCS = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "deploy").rglob("*.md"))]


def test_the_scan_sees_our_sources_and_skips_what_is_not_ours() -> None:
    names = {_rel(p) for p in FILES}
    assert {"schemas/event.py", "query_api/core/app.py", "README.md", "docs/security.md"} <= names
    assert not any(n.startswith((".venv/", ".git/", "tests/artifacts/")) for n in names)


def test_the_contract_files_are_in_docs_contract() -> None:
    present = {p.name for p in (ROOT / "docs" / "contract").glob("*.md")}
    assert not CONTRACT - present, f"missing from docs/contract/: {sorted(CONTRACT - present)}"


def test_every_cited_md_file_exists_in_the_repository() -> None:
    existing = {p.name for p in FILES if p.suffix == ".md"}
    missing: dict[str, list[str]] = {}
    for path in FILES:
        if path.suffix not in CITING_SUFFIXES or (text := _text(path)) is None:
            continue
        for name in set(CITED.findall(text)) - existing:
            missing.setdefault(name, []).append(_rel(path))
    assert missing == {}, f"cited but not in the repository (add it, e.g. to docs/contract/): {missing}"


def test_the_citation_pattern() -> None:
    text = 'see API.md "Live tail", (EVENT.md), docs/contract/CATALOG.md; not notes.md, my-API.md or SOME_API.mdx'
    assert CITED.findall(text) == ["API.md", "EVENT.md", "CATALOG.md"]


def test_no_file_points_outside_the_repository() -> None:
    hits = [f"{_rel(p)}:{n}" for p in FILES if (text := _text(p)) is not None and OUTSIDE.search(text)
            for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == [], f"references to files outside the repository (link the copy in docs/ instead): {hits}"


def _slugs(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them (code blocks skipped)."""
    out, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest):
            broken.append(f"{target} (no such heading)")
    assert broken == [], f"{_rel(doc)}: broken links {broken}"


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    head = text.split("\n## ", 1)[0]  # before the first section
    blocks = re.findall(r"```sh\n(.*?)\n```", head, re.S)
    assert blocks[:2] == SETUP_COMMANDS, f"the README's first commands changed: {blocks[:2]}"


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (> {README_MAX_LINES}): move details to docs/ "
                                       "(figures: docs/benchmarks.md)")


def test_readme_lists_every_document() -> None:
    text = README.read_text(encoding="utf-8")
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(text)}
    docs = sorted((ROOT / "docs").rglob("*.md"))
    unlisted = [_rel(p) for p in docs if p.resolve() not in linked]
    assert unlisted == [], f"README.md's Documentation section does not link {unlisted}"
