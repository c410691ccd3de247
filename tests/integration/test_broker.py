"""The embedded broker: it does not outlive the process that started it (even SIGKILLed), and a taken port is a clear error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

CHILD = """
import sys, time
from auditlogkit.server.broker import EmbeddedBroker
b = EmbeddedBroker().start()
print("BROKER_PID", b.proc.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_broker_is_stopped_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert parent.stdout is not None
        line = next(ln for ln in parent.stdout if ln.startswith("BROKER_PID"))
        pid_s = line.split()[1]
        broker = psutil.Process(int(pid_s))
        assert broker.is_running() and broker.status() != psutil.STATUS_ZOMBIE
        os.kill(parent.pid, signal.SIGKILL)  # no finally, no atexit: only the kernel can stop the broker now
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not broker.is_running() or broker.status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.05)
        else:
            broker.kill()
            pytest.fail(f"broker {broker.pid} still running 10 s after its parent was SIGKILLed")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_up_with_a_taken_kafka_port_says_so_and_exits_1(tmp_path: Path) -> None:
    from auditlogkit.server.broker import free_port
    from tests.updemo import AUDITLOG

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [AUDITLOG, "up", "--kafka-port", str(port), "--port", str(free_port()), "--data", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot start: Kafka port 127.0.0.1:{port} is already in use" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
