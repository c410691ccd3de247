"""The uvicorn server every process of ours runs the app with (``auditlog api``, ``auditlog up``, tests).

Contract of :class:`AppServer`: installs no signal handlers (the process's owner handles SIGINT/SIGTERM and sets
``should_exit``); on shutdown it first ends the app's live tails (:func:`auditlogkit.query_api.core.app.end_live_tails`: their
clients resume elsewhere or later with ``Last-Event-ID``), so that open streams do not hold the graceful shutdown
until its timeout. Its uvicorn options for proxy headers are :func:`auditlogkit.query_api.security.client_ip.proxy_options`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from auditlogkit.query_api.core.app import end_live_tails


class AppServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_live_tails(self.config.app)
        await super().shutdown(sockets)
