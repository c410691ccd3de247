"""One import package, ``auditlogkit``, assembled from the repository's folders by the links in ``auditlogkit/``:
``producers/`` is its top (every module linked one by one), ``schemas/``, ``consumers/`` and ``query_api/`` its
subpackages of the same names, ``auditlog/`` is ``auditlogkit.server``. The folders' own names are never import
names (a service's ``schemas.py`` or django-auditlog's ``auditlog`` must not collide with ours): no module, test
or benchmark imports them."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "auditlogkit"
SUBPACKAGES = {"schemas": "schemas", "consumers": "consumers", "query_api": "query_api", "server": "auditlog"}
FOLDERS = ("auditlog", "schemas", "producers", "consumers", "query_api")


def test_auditlogkit_links_every_sdk_module_and_the_four_subpackages() -> None:
    links = {p.name: os.readlink(p) for p in KIT.iterdir() if p.name != "__pycache__"}
    assert all((KIT / name).is_symlink() for name in links)
    expected = {p.name: f"../producers/{p.name}" for p in (ROOT / "producers").glob("*.py")}
    expected |= {name: f"../{folder}" for name, folder in SUBPACKAGES.items()}
    assert links == expected


def test_no_python_file_imports_a_folder_by_its_own_name() -> None:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    bad = []
    for f in files:
        if f.startswith("auditlogkit/"):
            continue
        tree = ast.parse((ROOT / f).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            bad += [f"{f}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FOLDERS]
    assert bad == []
