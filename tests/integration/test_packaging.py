"""The wheel that ``pip install .`` builds (README's first command) holds every file of our packages.

The suite runs from an editable install, which imports from the tree: a package or data file left out of the
wheel shows only here (``auditlogkit.consumers.steps`` once was, and ``auditlog up`` failed on a fresh machine)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.distribution import INSTALLED_AT, copy_tracked

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_every_tracked_file_of_our_packages(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy of the working tree's files: the build writes build/ and *.egg-info beside them
    tracked = copy_tracked(src)
    assert any(f.startswith("consumers/steps/") for f in tracked)  # a subpackage is among them
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("auditlogkit-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{INSTALLED_AT[f.split('/', 1)[0]]}/{f.split('/', 1)[1]}" for f in tracked}
    assert sorted(expected - in_wheel) == []
    assert sorted(n for n in in_wheel if ".dist-info/" not in n and n not in expected) == []  # nothing else
    entry = next(n for n in in_wheel if n.endswith(".dist-info/entry_points.txt"))
    assert "auditlog = auditlogkit.server.app.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
