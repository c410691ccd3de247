"""docs/architecture.md names only module paths that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(r"`((?:auditlog|consumers|query_api|schemas|producers|tests)/[\w./]*)`")


def test_every_path_named_in_the_architecture_doc_exists() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(PATH.findall(text))
    assert len(named) > 30, "the doc should name the modules it describes"
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"
