"""ASGI and WSGI middleware that open an :class:`~auditlogkit.context.AuditContext` per HTTP request (module contract).

Each request gets the client's address (the connection's peer; ``X-Forwarded-For``'s nearest untrusted hop only
when the peer is one of ``trusted_proxies``), its ``User-Agent`` and a request id (the ``X-Request-ID`` header when
it is a sane token of at most 128 characters, else a new UUID), which is also sent back in ``X-Request-ID``. The
service's authentication adds the actor with :func:`auditlogkit.context.bind`. Works with FastAPI/Starlette
(``app.add_middleware(AuditContextMiddleware)``) and Django/Flask (``application = AuditContextWSGIMiddleware(...)``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from auditlogkit.context import audit_context, request_id_from

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_USER_AGENT_MAX = 1024


class _Proxies:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.nets = [ipaddress.ip_network(t, strict=False) for t in trusted]

    def trusts(self, host: str | None) -> bool:
        if not host or not self.nets:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in n for n in self.nets)

    def client(self, peer: str | None, forwarded: str | None) -> str | None:
        """The nearest address in ``X-Forwarded-For`` that is not a trusted proxy (the peer when it is not one)."""
        if not self.trusts(peer) or not forwarded:
            return _ip_or_none(peer)
        for hop in reversed([h.strip() for h in forwarded.split(",")]):
            if not self.trusts(hop):
                return _ip_or_none(hop)
        return _ip_or_none(peer)


def _ip_or_none(host: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(host)) if host else None
    except ValueError:
        return None


class AuditContextMiddleware:
    """ASGI: an audit context per HTTP request (module contract)."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.proxies = _Proxies(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        peer = (scope.get("client") or (None, None))[0]
        rid = request_id_from(headers.get("x-request-id"))

        async def send_with_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        with audit_context(ip=self.proxies.client(peer, headers.get("x-forwarded-for")), request_id=rid,
                           user_agent=headers.get("user-agent", "")[:_USER_AGENT_MAX] or None):
            await self.app(scope, receive, send_with_id)


class AuditContextWSGIMiddleware:
    """WSGI: an audit context per request (module contract)."""

    def __init__(self, app: WSGIApp, *, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.proxies = _Proxies(trusted_proxies)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        rid = request_id_from(environ.get("HTTP_X_REQUEST_ID"))

        def start_with_id(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            return start_response(status, [*headers, ("X-Request-ID", rid)], *exc)

        with audit_context(ip=self.proxies.client(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR")),
                           request_id=rid, user_agent=environ.get("HTTP_USER_AGENT", "")[:_USER_AGENT_MAX] or None):
            # the body is produced inside the context too: a streaming response's events still see it
            result = self.app(environ, start_with_id)
            try:
                yield from result
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
