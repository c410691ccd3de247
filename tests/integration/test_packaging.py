"""The wheel that ``pip install .`` builds (README's first command) holds every file of our packages.

The suite runs from an editable install, which imports from the tree: a package or data file left out of the
wheel shows only here (``consumers.steps`` once was, and ``auditlog up`` failed on a fresh machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("auditlog", "schemas", "producers", "consumers", "query_api")


def test_the_wheel_holds_every_tracked_file_of_our_packages(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert any(f.startswith("consumers/steps/") for f in tracked)  # a subpackage is among them
    src = tmp_path / "src"  # a copy of the working tree's files: the build writes build/ and *.egg-info beside them
    for f in [*tracked, "pyproject.toml", "README.md"]:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("auditlog-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in tracked if f not in in_wheel]
    assert missing == [], missing
    entry = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    assert "auditlog = auditlog.app.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
