"""``auditlog up`` keeps its data directory private: the directory and every directory below it 0700, every file
without group/other access (``auditlog.log``, ``tansu.log``, ``jwt-secret`` exactly 0600), including files that
existed with looser modes before the start and files chDB and the broker create while it runs; the banner's
store URL carries no credentials."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from auditlogkit.server.broker import free_port
from tests.updemo import AUDITLOG

pytestmark = pytest.mark.timeout(120)


def _modes(root: Path) -> dict[str, int]:
    """Mode of every directory and file under ``root`` (symlinks skipped), by path relative to ``root``."""
    out = {".": stat.S_IMODE(os.lstat(root).st_mode)}
    for base, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            p = Path(base) / name
            st = os.lstat(p)
            if not stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode) | (0o40000 if stat.S_ISDIR(st.st_mode) else 0)
    return out


def _assert_private(root: Path) -> dict[str, int]:
    modes = _modes(root)
    dirs = {p: m & 0o777 for p, m in modes.items() if m & 0o40000 or p == "."}
    files = {p: m for p, m in modes.items() if p not in dirs}
    assert set(dirs.values()) == {0o700}, {p: oct(m) for p, m in dirs.items() if m != 0o700}
    assert files and not [p for p, m in files.items() if m & 0o077], {p: oct(m) for p, m in files.items() if m & 0o077}
    for name in ("auditlog.log", "tansu.log", "jwt-secret"):
        assert files[name] == 0o600, (name, oct(files[name]))
    return modes


def test_up_makes_the_data_directory_private_and_prints_no_credentials(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "chdb" / "old").mkdir(parents=True)
    for d in (data, data / "chdb", data / "chdb" / "old"):
        os.chmod(d, 0o755)
    for name, content in (("auditlog.log", "{}\n"), ("tansu.log", ""), ("jwt-secret", "k" * 48),
                          ("chdb/old/leftover.bin", "x")):
        (data / name).write_text(content)
        os.chmod(data / name, 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")}
    env["AUDITLOG_SESSION_TIMEOUT_MS"] = "3000"
    old_umask = os.umask(0o022)  # a usual umask: `up` must not depend on the caller's
    try:
        proc = subprocess.Popen([AUDITLOG, "up", "--port", str(free_port()), "--kafka-port", str(free_port()),
                                 "--data", str(data)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    finally:
        os.umask(old_umask)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY"):
                break
        assert lines and lines[-1].startswith("READY"), "".join(lines)
        running = _assert_private(data)
        assert any(p.startswith("chdb/store/") for p in running), "chDB's own files are checked too"
        os.kill(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, "".join(lines) + rest
    _assert_private(data)
    store_line = next(line for line in lines if re.match(r"\s+Store\s", line))
    assert f"chdb://{data / 'chdb'}" in store_line
