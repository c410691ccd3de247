"""The real app under uvicorn on 127.0.0.1, in a thread of the test process (it shares the process's chDB engine).

The server's event loop is ``app.state.server_loop`` (e.g. to start a producer the app will use on it).

:func:`live_server` yields the base URL; the listening socket can get a small send buffer (accepted sockets
inherit it) so that a client that stops reading stalls the server after little data.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from auditlogkit.query_api.core.serving import AppServer


@contextlib.contextmanager
def live_server(app: Any, *, send_buffer: int | None = None) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = AppServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                    timeout_graceful_shutdown=2))
    async def serve() -> None:
        app.state.server_loop = asyncio.get_running_loop()  # for a test that must run something on it
        await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def stalled_get(base_url: str, path: str, headers: dict[str, str], *, receive_buffer: int = 4096) -> socket.socket:
    """Send a GET and never read the answer: a client that stalls (its tiny receive window fills at once)."""
    host, port = base_url.removeprefix("http://").split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    s.connect((host, int(port)))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
    return s
