"""One composition root: ``auditlog api`` and ``auditlog consume`` migrate with the operator's catalog, as ``up``
and ``migrate`` do, so restarting one of them alone keeps an operator's relabelling in the analysts' view.

Each command runs as its own process on the same chDB directory, one after the other (chDB: one engine per
process); the store is read between them by a fresh process (:func:`sql_in_subprocess`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from auditlogkit.server.broker import free_port
from auditlogkit.server.settings import Settings
from tests.consumer_helpers import committed_offsets, consumer_env, publish, sql_in_subprocess
from tests.factories import make_event

pytestmark = pytest.mark.timeout(120)

RELABEL = ("Compute", "Virtual machine", "Destroy VM")  # service / vm / vm.delete: "Service", "VM", "Delete VM"
EXTRA = {"scopes": [{"code": "service", "label": RELABEL[0], "categories": [
    {"code": "vm", "label": RELABEL[1], "actions": [{"code": "vm.delete", "label": RELABEL[2]}]}]}]}
CATALOG_ROW = ("SELECT scope_label, category_label, action_label FROM catalog_actions FINAL "
               "WHERE scope = 'service' AND action = 'vm.delete'")


def _run_until(cmd: list[str], env: dict[str, str], ready: Callable[[], bool], what: str) -> None:
    """Start ``auditlog <cmd>``, wait until ``ready()``, stop it with SIGTERM: it must exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.app.cli", *cmd], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 45
        while not ready():
            assert proc.poll() is None, f"{what} exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"{what} not ready in time"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, f"{what} exited {proc.returncode}: {err}"


def _labels(data: Path) -> dict[str, list[list[str]]]:
    return sql_in_subprocess(data, {
        "catalog": CATALOG_ROW,
        "view": "SELECT scope_label, category_label, action_label FROM audit_events_flat WHERE action = 'vm.delete'",
    })


def test_api_and_consume_restarted_alone_keep_the_operators_relabel(settings: Settings, tmp_path: Path) -> None:
    extra = tmp_path / "catalog-extra.json"
    extra.write_text(json.dumps(EXTRA))
    data = tmp_path / "d"
    env = consumer_env(settings, data, catalog_extra=extra, jwt_secret="s" * 32)

    # the operator relabels and migrates: the analysts' catalog carries the new labels
    done = subprocess.run([sys.executable, "-m", "auditlogkit.server.app.cli", "migrate"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _labels(data) == {"catalog": [list(RELABEL)], "view": []}

    # `auditlog api` alone (its start-up migrates the store)
    port = free_port()

    def api_ready() -> bool:
        try:  # it answers (200, or 503 while its producers connect) once it has migrated the store
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    _run_until(["api", "--port", str(port)], env, api_ready, "auditlog api")
    assert _labels(data) == {"catalog": [list(RELABEL)], "view": []}, "auditlog api reverted the relabel"

    # `auditlog consume` alone: migrates, then stores an event of the relabelled action
    asyncio.run(publish(settings.kafka_bootstrap, settings.topic, [json.dumps(make_event()).encode()], keys=[b"acme"]))

    def consumed() -> bool:
        com = asyncio.run(committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic))
        return sum(max(o, 0) for o in com.values()) == 1

    _run_until(["consume"], env, consumed, "auditlog consume")
    assert _labels(data) == {"catalog": [list(RELABEL)], "view": [list(RELABEL)]}, "auditlog consume reverted it"
