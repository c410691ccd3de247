"""Shared bits of the benchmarks: repo on ``sys.path``, machine facts, results as JSON in ``bench/results/``, and
:func:`tree_pythonpath` (a tree under test importable as ``auditlogkit``, also one from before that package)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tree_pythonpath(tree: Path) -> str:
    """``PYTHONPATH`` that makes ``auditlogkit`` the code of ``tree``: the tree itself (its ``auditlogkit/`` links its
    folders), or, for a tree from before that package existed (side-by-side runs against an older commit), a
    directory of such links made here, then the tree (whose code imports itself by the folders' names)."""
    if (tree / "auditlogkit").is_dir():
        return str(tree)
    farm = Path(tempfile.gettempdir()) / f"auditlogkit-links-{hashlib.sha256(str(tree.resolve()).encode()).hexdigest()[:12]}"
    kit = farm / "auditlogkit"
    if not kit.is_dir():
        kit.mkdir(parents=True)
        for f in (tree / "producers").glob("*.py"):
            (kit / f.name).symlink_to(f.resolve())
        for name, folder in (("schemas", "schemas"), ("consumers", "consumers"), ("query_api", "query_api"),
                             ("server", "auditlog")):
            (kit / name).symlink_to((tree / folder).resolve())
    return f"{farm}{os.pathsep}{tree}"


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_1m": round(load[0], 2), "loadavg_5m": round(load[1], 2),
            "python": platform.python_version(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def cpu_seconds_of(proc: Any) -> float:
    """User + system CPU seconds so far of a ``psutil.Process`` (all its threads)."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# ----- helpers added for bench/streams.py (the older benches keep their own copies) ---------------------------
def git_rev(tree: Path = ROOT) -> str:
    """``git rev-parse --short HEAD`` of ``tree``, ``+dirty`` when tracked files differ from it."""
    import subprocess

    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+dirty" if dirty else "")


def start_up(data: Path, port: int, kafka_port: int, env: dict[str, str] | None = None,
             extra: tuple[str, ...] = (), timeout: float = 120.0) -> Any:
    """``auditlog up`` of this checkout as a subprocess (its own session, so its process group is its own) on a
    data directory and loopback ports; returns the ``subprocess.Popen`` once it printed READY (its further output is
    read and dropped by a thread). Stop it with :func:`stop_proc`."""
    import subprocess
    import threading

    full = {**os.environ, "PYTHONPATH": str(ROOT), "AUDITLOG_LOG_LEVEL": "warning", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", "up", "--port", str(port), "--kafka-port",
                             str(kafka_port), "--data", str(data), *extra], cwd=ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("READY"):
                threading.Thread(target=_drain_lines, args=(proc.stdout,), daemon=True).start()
                return proc
            if time.monotonic() > deadline:
                break
    except BaseException:
        stop_proc(proc, 10)
        raise
    stop_proc(proc, 10)
    raise RuntimeError("auditlog up did not become READY:\n" + "".join(out[-30:]))


def _drain_lines(stream: Any) -> None:
    for _ in stream:
        pass


def stop_proc(proc: Any, grace: float = 30.0) -> None:
    """SIGTERM to a ``subprocess.Popen`` by its PID, SIGKILL after ``grace`` seconds; nothing if it has ended."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def up_token(data: Path, sub: str, org: str = "acme", permissions: tuple[str, ...] = ("audit:read",),
             role: str = "org_owner", ttl_seconds: int = 3600) -> str:
    """A token for ``up`` on ``data``, signed with the JWT secret it generated there."""
    from auditlogkit.query_api.security.auth import mint_token

    return mint_token((data / "jwt-secret").read_text().strip(), sub=sub, email=f"{sub}@{org}.example", org_id=org,
                      role=role, permissions=permissions, ttl_seconds=ttl_seconds)


def thread_cpu(pid: int, main: str = "main") -> dict[str, float]:
    """CPU seconds (user + system) per thread name of ``pid``, its main thread named ``main`` (Python threads share
    the process's name)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        key = main if int(tid) == pid else comm
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def latency_ms(values: list[float], *, mean: bool = False) -> dict[str, Any]:
    """n, p50/p95/p99/max (and the mean) in ms of ``values`` given in seconds; ``{"n": 0}`` for none."""
    if not values:
        return {"n": 0}
    out = {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 1),
           "p95_ms": round(percentile(values, 95) * 1000, 1), "p99_ms": round(percentile(values, 99) * 1000, 1),
           "max_ms": round(max(values) * 1000, 1)}
    if mean:
        out["mean_ms"] = round(sum(values) / len(values) * 1000, 1)
    return out
