"""A Server-Sent Events reader for tests and benches: one thread per stream over a plain socket (so a test can cut
it at once), the SSE fields of the HTML standard (``id``, ``event``, ``data``, comments). No assertions here."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: dict[str, Any]
    at: float  # time.time() when the chunk that completed it was read


@dataclass
class SseClient:
    base_url: str
    token: str
    params: dict[str, Any] = field(default_factory=dict)
    last_event_id: str | None = None
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int | None = None
    error: str | None = None
    live: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = None

    def start(self) -> SseClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait_live(self, timeout: float = 20) -> SseClient:
        if not self.live.wait(timeout):
            raise TimeoutError(f"stream not live: status={self.status} error={self.error}")
        return self

    def wait_for(self, n: int, timeout: float = 30) -> list[SseEvent]:
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.events)} of {n} events; status={self.status} error={self.error}")
            if self.ended.is_set() and len(self.events) < n:
                raise RuntimeError(f"stream ended after {len(self.events)} of {n} events ({self.error})")
            time.sleep(0.02)
        return self.events

    def stop(self) -> None:
        """Disconnect at once (the socket is shut down under the reading thread) and wait for the thread."""
        self._stop.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def ids(self) -> list[str]:
        return [str(e.data["event_id"]) for e in self.events]

    def _run(self) -> None:
        try:
            self._read()
        except Exception as exc:  # a shut-down socket (stop) or a broken stream: recorded, not raised
            if not self._stop.is_set():
                self.error = repr(exc)
        finally:
            self.ended.set()
            if self._sock is not None:
                self._sock.close()

    def _read(self) -> None:
        """GET over a plain socket (HTTP/1.1, chunked body), so that :meth:`stop` can cut it from another thread."""
        url = httpx.URL(self.base_url + "/v1/events/stream", params=self.params)
        headers = {"Host": f"{url.host}:{url.port}", "Authorization": f"Bearer {self.token}",
                   "Accept": "text/event-stream", "Connection": "close"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        self._sock = socket.create_connection((url.host, url.port or 80), timeout=60)
        target = url.raw_path.decode("ascii")
        self._sock.sendall((f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                            + "\r\n").encode())
        f = self._sock.makefile("rb")
        self.status = int(f.readline().split()[1])
        head: dict[str, str] = {}
        while (line := f.readline().decode().strip()):
            k, _, v = line.partition(":")
            head[k.strip().lower()] = v.strip()
        body = _chunks(f) if head.get("transfer-encoding") == "chunked" else iter(lambda: f.read1(65536), b"")
        if self.status != 200:
            self.error = b"".join(body).decode()
            return
        buf = b""
        fields: dict[str, str] = {}
        for data in body:
            at = time.time()  # the chunk's receipt: its events are stamped with it, not after their parsing
            *lines, buf = (buf + data).split(b"\n")  # every complete line at once (linear in the chunk)
            for raw in lines:
                self._line(raw.decode().rstrip("\r"), fields, at)

    def _line(self, line: str, fields: dict[str, str], at: float) -> None:
        if line == "":
            if "id" in fields:
                self.last_event_id = fields["id"]  # also an id-only message (it moves Last-Event-ID)
            if "data" in fields:
                self.events.append(SseEvent(fields.get("id"), fields.get("event", "message"),
                                            json.loads(fields["data"]), at))
            fields.clear()
        elif line.startswith(":"):
            self.comments.append(line[1:].strip())
            if line[1:].strip() == "live":
                self.live.set()
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            fields[name] = fields[name] + "\n" + value if name == "data" and "data" in fields else value


def _chunks(f: Any) -> Iterator[bytes]:
    """The body of a chunked HTTP/1.1 response."""
    while True:
        size = int(f.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        yield f.read(size)
        f.readline()
