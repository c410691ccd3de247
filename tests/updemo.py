"""Run ``auditlog up --demo`` as a subprocess (for the end-to-end and browser tests) and read what it prints.

Contract of the output (``auditlog/app/cli_up.py``): a banner with ``  Page      <url>`` and
``  Broker    <host:port> ...``, then ``OWNER_TOKEN=<jwt>`` and ``ADMIN_TOKEN=<jwt>`` lines, then a line starting
with ``READY``. :func:`parse_up_output` turns those lines into :class:`UpDemo`; :func:`start_up_demo` starts the
process on free loopback ports and waits for READY; :func:`stop_up_demo` stops it by PID (SIGTERM, then
SIGKILL after a bounded wait).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

AUDITLOG = str(Path(sys.executable).with_name("auditlog"))


@dataclass
class UpDemo:
    url: str
    bootstrap: str
    owner_token: str
    admin_token: str
    data_dir: Path | None = None
    proc: subprocess.Popen[str] | None = None
    page_s: float = 0.0  # seconds from start until the page URL was printed (the API answers by then)
    output: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """scheme://host:port of the app (what every page request must stay on)."""
        m = re.match(r"(https?://[^/]+)", self.url)
        assert m, self.url
        return m.group(1)


def parse_up_output(lines: list[str]) -> UpDemo | None:
    """The URL, broker and tokens once all are printed and READY was seen; else None."""
    url = bootstrap = owner = admin = None
    ready = False
    for line in lines:
        if m := re.match(r"\s+Page\s+(https?://\S+)", line):
            url = m.group(1)
        elif m := re.match(r"\s+Broker\s+(\S+)", line):
            bootstrap = m.group(1)
        elif line.startswith("OWNER_TOKEN="):
            owner = line.split("=", 1)[1].strip()
        elif line.startswith("ADMIN_TOKEN="):
            admin = line.split("=", 1)[1].strip()
        elif line.startswith("READY"):
            ready = True
    if ready and url and bootstrap and owner and admin:
        return UpDemo(url=url, bootstrap=bootstrap, owner_token=owner, admin_token=admin, output=list(lines))
    return None


def start_up_demo(data_dir: Path, port: int, kafka_port: int, timeout: float = 240.0,
                  env: dict[str, str] | None = None) -> UpDemo:
    """Start ``auditlog up --demo`` on 127.0.0.1 (``env``: extra variables) and return once it printed READY (or
    raise with its output).

    The timeout holds even if the process goes silent: its output is read by a thread (which keeps draining it
    into ``UpDemo.output`` afterwards, so a chatty process never blocks on a full pipe) and waited for here."""
    proc = subprocess.Popen(
        [AUDITLOG, "up", "--demo", "--port", str(port), "--kafka-port", str(kafka_port), "--data", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "AUDITLOG_SESSION_TIMEOUT_MS": "3000", **(env or {})},
    )
    lines: list[str] = []
    arrived: queue.Queue[str | None] = queue.Queue()  # each line as it comes, None at end of output
    threading.Thread(target=_drain, args=(proc, lines, arrived), daemon=True).start()
    t0 = time.monotonic()
    deadline = t0 + timeout
    page_s = 0.0
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = arrived.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            proc.wait(10)
            raise RuntimeError("auditlog up --demo exited early:\n" + "".join(lines))
        if not page_s and re.match(r"\s+Page\s+", line):
            page_s = time.monotonic() - t0
        if line.startswith("READY"):
            up = parse_up_output(lines)
            if up is None:
                stop_up_demo_pid(proc)
                raise RuntimeError("auditlog up --demo printed READY without URL/broker/tokens:\n" + "".join(lines))
            up.proc, up.data_dir, up.page_s, up.output = proc, data_dir, page_s, lines
            return up
    stop_up_demo_pid(proc)
    raise RuntimeError(f"auditlog up --demo not ready after {timeout:.0f}s:\n" + "".join(lines))


def _drain(proc: subprocess.Popen[str], sink: list[str], arrived: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        sink.append(line)
        arrived.put(line)
    arrived.put(None)


def stop_up_demo_pid(proc: subprocess.Popen[str], grace_s: float = 30.0) -> int:
    """SIGTERM (graceful stop) to that PID, then SIGKILL of it if it has not exited after ``grace_s``; returns
    the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(10)


def stop_up_demo(up: UpDemo) -> int:
    """Stop it; the exit code (0 after a clean stop), or 0 when it was never started."""
    return stop_up_demo_pid(up.proc) if up.proc is not None else 0


def wait_ready(proc: subprocess.Popen[str], timeout: float) -> list[str]:
    """The lines ``up`` (started by the caller, output piped) printed until READY; its output keeps being drained
    into the returned list afterwards. Stops it by PID and raises with the output if it ends or takes longer."""
    lines: list[str] = []
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY"):
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(timeout) or proc.poll() is not None:
        stop_up_demo_pid(proc, 5)
        raise AssertionError("up did not start:\n" + "".join(lines))
    return lines
