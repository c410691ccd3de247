"""The uvicorn server every process of ours runs the app with (``auditlog api``, ``auditlog up``, tests).

Contract of :class:`AppServer`: installs no signal handlers (the process's owner handles SIGINT/SIGTERM and sets
``should_exit``); on shutdown it first ends the app's live tails (their clients resume elsewhere or later with
``Last-Event-ID``), so that open streams do not hold the graceful shutdown until its timeout.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn


class AppServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state: Any = getattr(self.config.app, "state", None)
        hub = getattr(state, "tail_hub", None)
        if hub is not None:
            hub.end_all()
        await super().shutdown(sockets)
