"""What requirements.lock is computed from (shared by scripts/lock and tests/unit/test_lock.py): the dependency
lists of pyproject.toml, normalised, and their digest."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def inputs() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {"dependencies": sorted(project["dependencies"]),
            **{f"extra:{k}": sorted(v) for k, v in sorted(project["optional-dependencies"].items())}}


def inputs_digest() -> str:
    return hashlib.sha256(json.dumps(inputs(), sort_keys=True).encode()).hexdigest()
