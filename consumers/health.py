"""The small HTTP server of ``auditlog consume``: ``/metrics`` (Prometheus, default registry), ``/readyz``
(200 when every worker is ready, else 503; JSON body with each worker's status) and ``/healthz`` (liveness:
200 unless the event loop has not run its heartbeat for ``max_beat_age`` seconds, i.e. it is blocked; a worker
that is merely behind or waiting for the store stays alive).

Runs in a daemon thread on loopback by default; ``status`` callables are read-only snapshots (thread-safe).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class HealthServer:
    def __init__(self, host: str, port: int, statuses: Callable[[], list[dict[str, Any]]],
                 max_beat_age: float = 30.0) -> None:
        outer = self
        self.max_beat_age = max_beat_age
        self._beat: float | None = None  # monotonic time of the loop's last heartbeat; None: no heartbeat task

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/readyz":
                    sts = outer.statuses()
                    ok = bool(sts) and all(s.get("ready") for s in sts)
                    self._send(200 if ok else 503, json.dumps({"ready": ok, "workers": sts}).encode())
                elif path == "/healthz":
                    age = outer.beat_age()
                    alive = age is None or age <= outer.max_beat_age
                    body = {"status": "ok" if alive else "event loop blocked", "loop_beat_age_s": age}
                    self._send(200 if alive else 503, json.dumps(body).encode())
                else:
                    self._send(404, b'{"detail":"not found"}')

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.statuses = statuses
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="consumer-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def beat_age(self) -> float | None:
        beat = self._beat
        return None if beat is None else round(time.monotonic() - beat, 3)

    async def heartbeat(self, every: float = 1.0) -> None:
        """Run on the workers' event loop (as a task) until cancelled: proves to ``/healthz`` that it turns."""
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(every)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
