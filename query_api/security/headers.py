"""Security headers on every HTTP response of the app (API.md "Limits and security").

Contract of :func:`install_browser_security`:
- every response (the page, static files, API JSON, streamed exports, errors including 404/401/429 and the 500
  of an unhandled exception, ``/docs``, ``/openapi.json``) carries :data:`CONTENT_SECURITY_POLICY` (same origin
  only, no inline script or style, no framing), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``, replacing any value a route set;
- with ``settings.api_docs`` on, responses under ``/docs`` additionally allow ``data:`` images (the Swagger UI
  stylesheet draws its icons with them); nothing else is relaxed;
- the middleware is pure ASGI: it rewrites the start message only and never buffers a body.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditlogkit.server.settings import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
DOCS_CONTENT_SECURITY_POLICY = f"{CONTENT_SECURITY_POLICY}; img-src 'self' data:"
DOCS_PATH = "/docs"


def security_headers(csp: str) -> dict[str, str]:
    """The headers sent with a response whose Content-Security-Policy is ``csp``."""
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class BrowserSecurityMiddleware:
    """Sets :func:`security_headers` on the start message of every HTTP response."""

    def __init__(self, app: ASGIApp, *, docs: bool) -> None:
        self.app = app
        self.docs = docs
        self.headers = security_headers(CONTENT_SECURITY_POLICY)
        self.docs_headers = security_headers(DOCS_CONTENT_SECURITY_POLICY)

    def _headers_for(self, path: str) -> dict[str, str]:
        if self.docs and (path == DOCS_PATH or path.startswith(DOCS_PATH + "/")):
            return self.docs_headers
        return self.headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers_for(str(scope.get("path", "")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_browser_security(app: FastAPI, settings: Settings) -> None:
    """Wrap the whole middleware stack of ``app`` (outside Starlette's server-error middleware, so the 500 of an
    unhandled exception gets the headers too) in :class:`BrowserSecurityMiddleware`."""
    build: Callable[[], ASGIApp] = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return BrowserSecurityMiddleware(build(), docs=settings.api_docs)

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
