"""Where a request comes from, as the self-audit records it, and which proxies may say so.

Contract: :func:`client_of` is the request's client IP (the peer address, or what a trusted proxy forwarded: uvicorn
rewrites it before the app sees it) and its ``User-Agent``. :func:`proxy_options` are the uvicorn options of every
server of ours: ``X-Forwarded-For`` / ``-Proto`` are believed only from the proxies of
``AUDITLOG_API_FORWARDED_ALLOW_IPS`` (none listed: never, whatever uvicorn's own default or its
``FORWARDED_ALLOW_IPS`` variable say), so the client IP the self-audit records cannot be chosen by the client.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from auditlogkit.server.settings import Settings


def client_of(request: Request) -> tuple[str | None, str | None]:
    """(client IP, user agent) of ``request``; None for what it lacks."""
    return (request.client.host if request.client else None), request.headers.get("user-agent")


def proxy_options(settings: Settings) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the proxy headers (module contract)."""
    allowed = settings.forwarded_allow_ips
    return {"proxy_headers": bool(allowed), "forwarded_allow_ips": allowed}
