"""Build the auditlogkit wheel from a clean copy of the tracked files (what ``pip install .`` of a fresh clone
builds), and a fresh virtualenv with only the SDK installed from it (its dependencies at the locked versions)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: each folder and where its files are in the wheel (auditlogkit/ links them into one package)
INSTALLED_AT = {"auditlog": "auditlogkit/server", "schemas": "auditlogkit/schemas", "producers": "auditlogkit",
                "consumers": "auditlogkit/consumers", "query_api": "auditlogkit/query_api"}


def copy_tracked(dest: Path) -> list[str]:
    """Copy the tracked files of the folders, auditlogkit/ (its links kept as links) and what a build reads to
    ``dest``; returns the folders' files."""
    tracked = subprocess.run(["git", "ls-files", *INSTALLED_AT, "auditlogkit"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for f in [*tracked, "pyproject.toml", "README.md", "requirements.lock"]:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f, follow_symlinks=False)
    return [f for f in tracked if not f.startswith("auditlogkit/")]


def build_wheel(work: Path) -> Path:
    src = work / "src"
    copy_tracked(src)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = work.glob("auditlogkit-*.whl")
    return wheel


def sdk_venv(work: Path) -> Path:
    """A new virtualenv with the SDK alone (``pip install -c requirements.lock <wheel>``); its python."""
    wheel = build_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "requirements.lock"),
                           str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return python
