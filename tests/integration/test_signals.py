"""SIGTERM stops ``auditlog up``, ``consume`` and ``api`` as cleanly as SIGINT would: exit code 0, the graceful-stop
output, flushed and committed offsets for the consumer. Every process is started the way a shell script starts a
background job (SIGINT ignored), and each command is also stopped during its start-up (before it serves)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from auditlogkit.server.broker import EmbeddedBroker, free_port, port_is_free
from auditlogkit.server.settings import Settings
from tests.consumer_helpers import committed_offsets, consumer_env, highwaters, log_events, publish
from tests.factories import random_events
from tests.updemo import AUDITLOG

pytestmark = pytest.mark.timeout(180)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what bash does for a script's background job


class Proc:
    """A subprocess with SIGINT ignored whose merged output is read line by line by a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      preexec_fn=_ignore_sigint)
        self.lines: list[str] = []
        self._arrived: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)
            self._arrived.put(line)
        self._arrived.put(None)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pred: Callable[[str], bool], timeout: float = 60.0) -> str:
        """The first new line that satisfies ``pred``; fails if the process ends or the time is up first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._arrived.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"exited ({self.popen.wait(5)}) before the expected line:\n{self.output}")
            if pred(line):
                return line
        raise AssertionError(f"expected line not seen within {timeout}s:\n{self.output}")

    def terminate(self, within: float) -> tuple[int, float]:
        """SIGTERM by PID; (exit code, seconds it took). SIGKILL and fail if it does not exit ``within``."""
        t0 = time.monotonic()
        os.kill(self.popen.pid, signal.SIGTERM)
        try:
            code = self.popen.wait(within)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running {within}s after SIGTERM:\n{self.output}") from None
        time.sleep(0.1)  # let the reader thread take the last lines
        return code, time.monotonic() - t0

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)


@contextmanager
def running(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[Proc]:
    p = Proc(cmd, env)
    try:
        yield p
    finally:
        p.kill()


def _event(line: str, name: str) -> dict[str, object] | None:
    return next(iter(log_events(line, name)), None)


# ----- up -----------------------------------------------------------------------------------------------------
def _up_cmd(data: Path, port: int, kafka_port: int) -> list[str]:
    return [AUDITLOG, "up", "--port", str(port), "--kafka-port", str(kafka_port), "--data", str(data)]


def _up_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")},
            "AUDITLOG_SESSION_TIMEOUT_MS": "3000"}


def test_up_stops_cleanly_on_sigterm_with_sigint_ignored(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    with running(_up_cmd(tmp_path / "d", port, kafka_port), _up_env()) as up:
        up.wait_for(lambda line: line.startswith("READY"))
        os.kill(up.popen.pid, signal.SIGINT)  # inherited as ignored: stays ignored, as for any background job
        time.sleep(1.0)
        assert up.popen.poll() is None, up.output
        code, took = up.terminate(within=30)
    assert code == 0, up.output
    assert up.lines[-2:] == ["auditlog: stopping ...\n", "auditlog: stopped\n"], up.output
    assert took < 20
    log = (tmp_path / "d" / "auditlog.log").read_text()
    assert log_events(log, "up.stop_requested")[-1]["signal"] == "SIGTERM"
    assert log_events(log, "consumer.stopped"), "the consumer flushed, committed and left the group"
    assert log_events(log, "stack.stopped")
    assert port_is_free(port) and port_is_free(kafka_port), "API and broker are gone"


def test_up_stops_cleanly_on_sigterm_during_start_up(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    with running(_up_cmd(tmp_path / "d", port, kafka_port), _up_env()) as up:
        up.wait_for(lambda line: line.startswith("auditlog: starting"))
        code, took = up.terminate(within=30)
    assert code == 0, up.output
    assert not any(line.startswith("READY") for line in up.lines), up.output
    assert up.lines[-1] == "auditlog: stopped\n", up.output
    assert took < 15
    assert port_is_free(port) and port_is_free(kafka_port), "API and broker are gone"


# ----- consume ------------------------------------------------------------------------------------------------
def _readyz(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
        body: dict[str, object] = json.loads(r.read())
        return body


def _stored(port: int) -> int:
    try:
        workers = _readyz(port)["workers"]
    except OSError:
        return -1
    assert isinstance(workers, list)
    return sum(int(w["stored"]) for w in workers)


async def test_consume_stops_cleanly_on_sigterm_with_sigint_ignored(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = consumer_env(settings, tmp_path / "c", consumer_metrics_port=port)
    values: list[bytes | None] = [json.dumps(e).encode() for e in random_events(500, seed=31)]
    await publish(settings.kafka_bootstrap, settings.topic, values)
    with running([sys.executable, "-m", "auditlogkit.server.app.cli", "consume"], env) as c:
        deadline = time.monotonic() + 60
        while _stored(port) < len(values):
            assert time.monotonic() < deadline and c.popen.poll() is None, c.output[-3000:]
            time.sleep(0.2)
        code, took = c.terminate(within=30)
    assert code == 0, c.output[-3000:]
    assert took < 20
    assert log_events(c.output, "consumer.stop_requested")[-1]["signal"] == "SIGTERM"
    assert log_events(c.output, "consumer.stopped")[-1]["stored"] == len(values)
    hw = await highwaters(settings.kafka_bootstrap, settings.topic)
    com = await committed_offsets(settings.kafka_bootstrap, settings.consumer_group, settings.topic)
    assert {p: max(o, 0) for p, o in com.items()} == hw, "every consumed offset is committed"


def test_consume_stops_cleanly_on_sigterm_during_start_up(settings: Settings, tmp_path: Path) -> None:
    env = consumer_env(settings, tmp_path / "c")
    with running([sys.executable, "-m", "auditlogkit.server.app.cli", "consume"], env) as c:
        c.wait_for(lambda line: _event(line, "consumer.starting") is not None)
        code, took = c.terminate(within=30)
    assert code == 0, c.output[-3000:]
    assert took < 20
    assert log_events(c.output, "consumer.stop_requested")[0]["signal"] == "SIGTERM"
    # usually before the workers exist (start-up ends there); if it came later they stop as after a join
    assert log_events(c.output, "consumer.start_aborted") or log_events(c.output, "consumer.stopped"), c.output


# ----- api ----------------------------------------------------------------------------------------------------
def _api_env(broker: EmbeddedBroker, chdb: Path) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("AUDITLOG_")},
            "AUDITLOG_CLICKHOUSE_URL": f"chdb://{chdb}", "AUDITLOG_JWT_SECRET": "s" * 32,
            "AUDITLOG_KAFKA_BOOTSTRAP": broker.bootstrap}


def test_api_stops_cleanly_on_sigterm_with_sigint_ignored(broker: EmbeddedBroker, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "auditlogkit.server.app.cli", "api", "--port", str(port)]
    with running(cmd, _api_env(broker, tmp_path / "chdb")) as api:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert _readyz(port)["store"] == "ok"
                break
            except OSError:
                assert time.monotonic() < deadline and api.popen.poll() is None, api.output
                time.sleep(0.2)
        code, took = api.terminate(within=20)
    assert code == 0, api.output
    assert took < 10
    assert log_events(api.output, "api.stop_requested")[-1]["signal"] == "SIGTERM"
    assert api.lines[-1] == "auditlog api: stopped\n", api.output
    assert not log_events(api.output, "api.token_claims_unchecked"), "loopback only: no warning"
    assert port_is_free(port)


def test_api_on_all_interfaces_warns_about_unchecked_claims_and_stops_during_start_up(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "auditlogkit.server.app.cli", "api", "--host", "0.0.0.0", "--port", str(port)]
    with running(cmd, _api_env(broker, tmp_path / "chdb")) as api:
        api.wait_for(lambda line: _event(line, "api.token_claims_unchecked") is not None)
        code, took = api.terminate(within=20)
    assert code == 0, api.output
    assert took < 10
    warning = log_events(api.output, "api.token_claims_unchecked")[0]
    assert warning["missing"] == ["AUDITLOG_JWT_AUDIENCE", "AUDITLOG_JWT_ISSUER"]
    assert any("set AUDITLOG_JWT_AUDIENCE and AUDITLOG_JWT_ISSUER" in line for line in api.lines), api.output
    assert log_events(api.output, "api.stopped")[0]["signal"] == "SIGTERM"
    assert api.lines[-1] == "auditlog api: stopped\n", api.output
