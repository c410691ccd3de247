"""`auditlog up` as a real process whose broker freezes (SIGSTOP: its socket stays open, nothing answers): every
read, a repeat of the page's last view as much as a new one, is refused with ``503 audit_unavailable`` within the
ack timeout instead of being served unrecorded; once the broker runs again (SIGCONT), reads are served again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from auditlogkit.server.broker import free_port
from auditlogkit.server.settings import Settings
from tests.updemo import UpDemo, start_up_demo, stop_up_demo

ACK_TIMEOUT_S = Settings.model_fields["api_audit_ack_timeout_seconds"].default
SLACK_S = 1.5
FRESH_S = 1.0  # a repeat within this long of the last acknowledged record may still be folded


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpDemo]:
    u = start_up_demo(tmp_path_factory.mktemp("up-frozen"), free_port(), free_port())
    yield u
    stop_up_demo(u)


def broker_pid(up: UpDemo) -> int:
    """The PID of the Tansu child of the ``up`` process (the one listening on its Kafka port), from /proc."""
    assert up.proc is not None
    listener = f"tcp://{up.bootstrap}".encode()
    children = [int(c) for task in Path(f"/proc/{up.proc.pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    for pid in children:
        if listener in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no broker child of {up.proc.pid} among {children}")


def timed_get(up: UpDemo, **params: str | int) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = httpx.get(up.url.rstrip("/") + "/v1/events", params=params,
                  headers={"Authorization": f"Bearer {up.owner_token}"}, timeout=30)
    return r, time.monotonic() - t0


def test_reads_are_refused_within_the_ack_timeout_while_the_broker_is_frozen(up: UpDemo) -> None:
    assert timed_get(up, limit=1)[0].status_code == 200
    pid = broker_pid(up)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(FRESH_S + 0.5)
        reads: list[tuple[str, dict[str, str | int]]] = [("repeat", {"limit": 1}),
                                                         ("new", {"limit": 2, "status": "FAILED"})]
        for name, params in reads:
            r, took = timed_get(up, **params)
            assert r.status_code == 503, (name, r.status_code, r.text[:300])
            assert r.json()["error"]["code"] == "audit_unavailable" and r.headers["Retry-After"], name
            assert took < ACK_TIMEOUT_S + SLACK_S, (name, took)
    finally:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while (r := timed_get(up, limit=1)[0]).status_code != 200:
        assert r.status_code == 503 and time.monotonic() < deadline, (r.status_code, r.text[:300])
        time.sleep(0.5)
    assert timed_get(up, limit=2, status="FAILED")[0].status_code == 200
