"""One HTTP request of a destination, to a checked address, and what its reply means.

Contract:
- :func:`post` checks the URL again at send time (:func:`auditlogkit.query_api.streams.ssrf.resolve`) and connects to the
  checked address only (the URL's host stays the ``Host`` header and the TLS server name, so certificates are
  verified against it); redirects are not followed (a 3xx is a refusal), proxies from the environment are not
  used, every request has the stream's timeout;
- :func:`outcome` reads a reply: 2xx delivered; 408, 429 and 5xx retryable with ``Retry-After`` (seconds or an
  HTTP date, at most a day); any other status a refusal. A timeout, a refused or failed connection and a broken
  reply are retryable;
- :class:`Clients` holds one ``httpx.AsyncClient`` per destination host of a stream (a pooled connection is never
  reused for another host, even on the same address).
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

import httpx

from auditlogkit.query_api.streams.destinations.base import Context, Outcome, delivered, failed, refused
from auditlogkit.query_api.streams.ssrf import SsrfError, resolve

RETRYABLE = frozenset({408, 429})
logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry request URLs: not ours to log
MAX_RETRY_AFTER = 86_400.0
USER_AGENT = "auditlog-streams/1"


class Clients:
    """The HTTP clients of one stream, one per host (module contract)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._clients: dict[str, httpx.AsyncClient] = {}

    def get(self, host: str) -> httpx.AsyncClient:
        c = self._clients.get(host)
        if c is None:
            c = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=httpx.Timeout(self.timeout),
                                  headers={"User-Agent": USER_AGENT})
            self._clients[host] = c
        return c

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (None when absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), MAX_RETRY_AFTER))


def outcome(resp: httpx.Response, ctx: Context) -> Outcome:
    """What the reply ``resp`` means (module contract)."""
    status = resp.status_code
    if 200 <= status < 300:
        return delivered(status, f"HTTP {status}")
    text = ctx.scrub(" ".join(resp.text.split())[:200]) if resp.content else ""
    message = f"HTTP {status}" + (f": {text}" if text else "")
    if 300 <= status < 400:
        return refused(f"HTTP {status}: redirects are not followed (configure the final URL)", status)
    if status in RETRYABLE or status >= 500:
        return failed(message, status, retry_after(resp.headers.get("Retry-After")))
    return refused(message, status)


async def post(ctx: Context, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST ``body`` to ``url`` (module contract)."""
    try:
        target = await resolve(url, ctx.allow, ctx.resolver)
    except SsrfError as exc:
        return refused(str(exc))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    clients = ctx.clients or Clients(ctx.timeout)
    try:
        resp = await clients.get(target.host).post(target.pinned_url(), content=body, extensions=extensions,
                                                   headers={**headers, "Host": target.host_header})
    except httpx.TimeoutException:
        return failed(f"no reply from {target.host} within {ctx.timeout:g} s")
    except httpx.ConnectError as exc:
        return failed(ctx.scrub(f"cannot connect to {target.host}:{target.port}: {exc}"))
    except httpx.HTTPError as exc:
        return failed(ctx.scrub(f"request to {target.host} failed: {type(exc).__name__}: {exc}"))
    finally:
        if ctx.clients is None:
            await clients.aclose()
    return outcome(resp, ctx)
