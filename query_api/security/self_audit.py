"""Reading the audit log is itself audited, or refused: every read publishes an ``organization / audit_log`` event.

Contract of :class:`ReadAuditor`:
- :meth:`record` builds the event (:func:`~auditlogkit.query_api.security.audit_event.build_event`: actor = token subject and e-mail, client IP and user agent; ``detail`` holds
  the filters, the row count and what else the endpoint says) and waits for the broker's acknowledgement for at
  most ``api_audit_ack_timeout_seconds``; when that fails, or no producer is attached yet, it raises
  ``503 audit_unavailable`` and the endpoint sends no data. (An event that reaches the broker after the wait
  ran out is still stored: a refused read may appear as recorded, never the reverse.)
- without a producer configured at all (state ``off``: an app built without self-audit, e.g. in tests)
  nothing is recorded;
- :meth:`record_list` folds identical repeats of one list view (:func:`view_key`: same caller, filters, client IP
  and user agent) within ``window_s`` (the page's auto-refresh) into the first one, and only while the broker is
  known to answer: an ack or a metadata answer younger than ``fresh_s``, else the repeat waits for a metadata
  answer at most ``ack_timeout_s`` and is refused with 503 like any read when none comes (a frozen broker keeps its
  socket open, so a connection is no proof). The folded calls and their rows are published by
  :meth:`flush_coalesced` as one event with ``detail.coalesced`` and the first call's IP and user agent. Cursor
  pages are never folded.
- :attr:`state` is a :class:`SelfAuditState`: ``ok``, ``failing`` (the last publish failed: ``/readyz`` is red
  until :meth:`probe` reaches the broker or a publish succeeds), ``connecting`` (no producer attached yet) or ``off``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from starlette.requests import Request

from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.errors import ApiError
from auditlogkit.query_api.core.observability import current_request_id
from auditlogkit.query_api.security.audit_event import build_event
from auditlogkit.query_api.security.client_ip import client_of
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.security.self_audit")
PRODUCER_LINGER_MS = 1  # the self-audit's own producer: each read waits for its ack, so batch for a moment only


class SelfAuditState(StrEnum):
    """Whether reads can be recorded (:attr:`ReadAuditor.state`, ``self_audit`` of ``/readyz``)."""

    OK = "ok"
    FAILING = "failing"  # the last publish failed
    CONNECTING = "connecting"  # no producer attached yet (reads are refused)
    OFF = "off"  # no producer configured: nothing is recorded


@dataclass
class _Folded:
    principal: Principal
    filters: dict[str, Any]
    first_at: float
    calls: int = 0
    rows: int = 0
    client_ip: str | None = None
    user_agent: str | None = None


class ReadAuditor:
    """Publishes read events and knows whether it can (module contract)."""

    def __init__(self, producer: AuditProducer | None, *, ack_timeout_s: float = 2.0, window_s: float = 60.0,
                 fresh_s: float = 1.0, max_views: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.producer = producer
        #: the message headers that prove the API published an event (create_app sets them; unsigned events are
        #: dead-lettered as ``reserved`` by the consumer)
        self.sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None
        self.state = SelfAuditState.OK if producer is not None else SelfAuditState.OFF
        self.ack_timeout_s = ack_timeout_s
        self.window_s = window_s
        self.fresh_s = fresh_s
        self.max_views = max_views
        self._clock = clock
        self._views: dict[str, _Folded] = {}
        self._answered_at: float | None = None  # when the broker last acknowledged a publish or answered a probe

    def attach(self, producer: AuditProducer) -> None:
        self.producer = producer
        self.state = SelfAuditState.OK

    async def record(self, request: Request, principal: Principal, action: str, *,
                     filters: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                     target_id: str | None = None, target_type: str = "audit_log",
                     target_name: str | None = None) -> None:
        """Publish and wait for the ack, or raise 503 ``audit_unavailable``."""
        if self.state == SelfAuditState.OFF:
            return
        ip, ua = client_of(request)
        await self._publish(build_event(principal, action, filters=filters, client_ip=ip, user_agent=ua,
                                        extra=extra, target_id=target_id, target_type=target_type,
                                        target_name=target_name, request_id=current_request_id()))

    async def record_list(self, request: Request, principal: Principal, filters: dict[str, Any], rows: int,
                          *, page: bool) -> None:
        """A list read: folded into an identical recent one while healthy (module contract), else recorded."""
        if self.state == SelfAuditState.OFF:
            return
        if page:
            await self.record(request, principal, "audit_log.list", filters=filters,
                              extra={"rows": rows, "page": True})
            return
        ip, ua = client_of(request)
        key = view_key(principal, filters, datetime.now(UTC), client_ip=ip, user_agent=ua)
        folded = self._views.get(key)
        connected = self.state == SelfAuditState.OK and self.producer is not None and self.producer.connected()
        if folded is not None and connected and self._clock() - folded.first_at < self.window_s:
            await self._answering()
            folded.calls += 1
            folded.rows += rows
            return
        await self.record(request, principal, "audit_log.list", filters=filters, extra={"rows": rows, "page": False})
        if folded is None and len(self._views) < self.max_views:  # repeats fold into this recorded call from now
            self._views[key] = _Folded(principal, filters, self._clock(), client_ip=ip, user_agent=ua)

    async def _answering(self) -> None:
        """Returns when the broker answered within ``fresh_s``, or answers a metadata request within
        ``ack_timeout_s``; else the state turns ``failing`` and 503 ``audit_unavailable`` is raised."""
        producer = self.producer
        if producer is None:
            raise _unavailable("the audit log's own recorder is not connected to the broker yet")
        if self._answered_at is not None and self._clock() - self._answered_at < self.fresh_s:
            return
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await producer.reachable()
        except Exception as exc:
            raise self._failing("audit_log.list", exc) from None
        self._answered_at = self._clock()

    async def flush_coalesced(self, *, everything: bool = False) -> int:
        """Publish the folded repeats of views whose window closed (all of them with ``everything``); returns
        how many events were published. A view whose event cannot be published is kept for the next flush."""
        now = self._clock()
        published = 0
        for key, f in list(self._views.items()):
            if not everything and now - f.first_at < self.window_s:
                continue
            if f.calls:
                try:
                    await self._publish(build_event(
                        f.principal, "audit_log.list", filters=f.filters, client_ip=f.client_ip,
                        user_agent=f.user_agent, extra={"rows": f.rows, "page": False, "coalesced": f.calls}))
                except ApiError:
                    continue
                published += 1
            self._views.pop(key, None)
        return published

    async def _publish(self, event: dict[str, Any]) -> None:
        producer = self.producer
        if producer is None:
            raise _unavailable("the audit log's own recorder is not connected to the broker yet")
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                ack = await producer.send(event, sign=self.sign or _no_headers)
                await ack
        except Exception as exc:
            raise self._failing(event["action"], exc) from None
        if self.state == SelfAuditState.FAILING:
            log.info("self_audit.recovered", action=event["action"])
        self.state = SelfAuditState.OK
        self._answered_at = self._clock()

    def _failing(self, action: str, exc: Exception) -> ApiError:
        """Turn ``failing`` (logged once) and return the 503 to raise."""
        if self.state != SelfAuditState.FAILING:
            log.error("self_audit.failing", action=action, error=repr(exc))
        self.state = SelfAuditState.FAILING
        return _unavailable("this read cannot be recorded in the audit log right now (the broker did not "
                            f"answer within {self.ack_timeout_s:g} s); nothing was served")

    async def probe(self) -> bool:
        """Whether reads can be recorded (``ok`` or ``off``); while failing, True (and ``ok`` again) once the
        broker answers a metadata request."""
        if self.state != SelfAuditState.FAILING or self.producer is None:
            return self.state in (SelfAuditState.OK, SelfAuditState.OFF)
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await self.producer.reachable()
        except Exception:
            return False
        log.info("self_audit.recovered", action="probe")
        self.state = SelfAuditState.OK
        self._answered_at = self._clock()
        return True


def _no_headers(_value: bytes) -> list[tuple[str, bytes]]:
    return []


def _unavailable(message: str) -> ApiError:
    return ApiError(503, message, code="audit_unavailable", headers={"Retry-After": "5"})


def view_key(principal: Principal, filters: dict[str, Any], now: datetime, *, client_ip: str | None = None,
             user_agent: str | None = None) -> str:
    """One list *view*: the filters other than the period, plus the period's length and whether it ends at
    "now" (a live view, e.g. on auto-refresh), or its exact bounds otherwise; per caller, client IP and user
    agent (a call from elsewhere is never folded into another's record)."""
    rest = {k: v for k, v in filters.items() if k not in ("start", "end")}
    start = datetime.fromisoformat(str(filters["start"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(filters["end"]).replace("Z", "+00:00"))
    live = abs((now - end).total_seconds()) <= 120
    period: object = ["live", round((end - start).total_seconds() / 60)] if live else [filters["start"], filters["end"]]
    return json.dumps([principal.org_id, principal.sub, client_ip, (user_agent or "")[:1024], rest, period],
                      sort_keys=True, default=str)
