"""The uvicorn server every process of ours runs the app with (``auditlog api``, ``auditlog up``, tests).

Contract of :class:`AppServer`: installs no signal handlers (the process's owner handles SIGINT/SIGTERM and sets
``should_exit``); on shutdown it first ends the app's live tails (their clients resume elsewhere or later with
``Last-Event-ID``), so that open streams do not hold the graceful shutdown until its timeout.

:func:`proxy_options` are the uvicorn options of every server of ours: ``X-Forwarded-For`` / ``-Proto`` are believed
only from the proxies of ``AUDITLOG_API_FORWARDED_ALLOW_IPS`` (none listed: never, whatever uvicorn's own default or
its ``FORWARDED_ALLOW_IPS`` variable say), so the client IP the self-audit records cannot be chosen by the client.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from auditlog.settings import Settings


def proxy_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the proxy headers (module contract)."""
    allowed = settings.forwarded_allow_ips
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed}


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
