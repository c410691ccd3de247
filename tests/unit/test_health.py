"""The consumer's health server: /healthz is liveness of the event loop (not of progress), /readyz readiness."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

from auditlogkit.consumers.health import HealthServer


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_healthz_is_503_while_the_event_loop_is_blocked_and_200_again_after() -> None:
    statuses = [{"ready": False, "stalled": True}]  # behind, not ready: must still count as alive
    srv = HealthServer("127.0.0.1", 0, lambda: statuses, max_beat_age=0.5).start()
    beat = asyncio.create_task(srv.heartbeat(every=0.05))
    try:
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(_get, srv.port, "/healthz") == 200
        assert await asyncio.to_thread(_get, srv.port, "/readyz") == 503
        seen: dict[str, int] = {}
        probe = threading.Thread(target=lambda: (time.sleep(0.9), seen.setdefault("code", _get(srv.port, "/healthz"))))
        probe.start()
        time.sleep(1.3)  # blocks the event loop: no heartbeat while the probe asks
        probe.join()
        assert seen["code"] == 503
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(_get, srv.port, "/healthz") == 200
    finally:
        beat.cancel()
        srv.stop()


def test_healthz_without_a_heartbeat_task_is_200() -> None:
    srv = HealthServer("127.0.0.1", 0, lambda: []).start()
    try:
        assert _get(srv.port, "/healthz") == 200
    finally:
        srv.stop()


def test_every_consumer_metric_is_documented_for_operators() -> None:
    """docs/operations.md lists each metric of consumers/metrics.py (and no metric that does not exist)."""
    import re
    from pathlib import Path

    from prometheus_client.metrics import MetricWrapperBase

    from auditlogkit.consumers import metrics

    defined = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            suffix = "_total" if obj._type == "counter" else ""
            defined[obj._name + suffix] = obj._type
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    documented = dict(re.findall(r"^\| `(auditlog_consumer_[a-z_]+)(?:\{[^}]*\})?` \| (\w+) \|", doc, re.M))
    assert documented == defined
