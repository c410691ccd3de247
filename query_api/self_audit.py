"""Reading the audit log is itself audited: list and export calls publish ``organization / audit_log`` events.

Contract of :func:`publish`: builds an ``audit_log.list`` / ``audit_log.export`` event for the caller (actor =
token subject and e-mail, client IP and user agent, the filters in ``detail``) and hands it to the producer
without waiting for the broker's ack. It never fails the request: an event the producer refuses or cannot send is
logged (``self_audit.failed``) with the reason.

Contract of :class:`ReadCoalescer`: list reads of *one view* by one caller within ``window_s`` are recorded once
(an open page on auto-refresh, or paging through one view, would otherwise write an event every few seconds).
A view is the filters other than the period, plus the period's length and whether it ends at "now" (a live
view), or its exact bounds otherwise. Any other filter, another caller, or the window passing makes a new record;
exports are never coalesced. So a read cannot be hidden: at worst identical repeats are folded into the first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from auditlog.logs import get_logger
from producers.producer import AuditProducer
from query_api.auth import Principal

log = get_logger("query_api.self_audit")
_tasks: set[asyncio.Task[None]] = set()


def build_event(principal: Principal, action: str, *, filters: dict[str, Any], client_ip: str | None,
                user_agent: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ip: str | None = None
    if client_ip:
        try:
            ip = str(ipaddress.ip_address(client_ip))
        except ValueError:
            ip = None
    verb = "Exported" if action == "audit_log.export" else "Listed"
    return {
        "org_id": principal.org_id,
        "workspace_id": None,
        "scope": "organization",
        "category": "audit_log",
        "action": action,
        "status": "SUCCESS",
        "actor": {"id": principal.sub, "email": principal.email or None, "type": "user", "ip": ip,
                  "user_agent": (user_agent or None) and user_agent[:1024]},
        "target": {"type": "audit_log", "id": None, "name": None},
        "description": f"{verb} the audit log",
        "detail": {"filters": filters, "role": principal.role, **(extra or {})},
        "source": "query-api",
    }


async def publish(producer: AuditProducer | None, event: dict[str, Any]) -> None:
    if producer is None:
        return
    try:
        fut = await producer.send(event)
    except Exception as exc:
        log.warning("self_audit.failed", action=event["action"], error=repr(exc))
        return

    async def wait_ack() -> None:
        try:
            await fut
        except Exception as exc:
            log.warning("self_audit.failed", action=event["action"], error=repr(exc))

    task = asyncio.ensure_future(wait_ack())
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class ReadCoalescer:
    """Remembers recently audited list views (bounded LRU); see the module doc."""

    def __init__(self, window_s: float = 60.0, max_views: int = 10_000) -> None:
        self.window_s = window_s
        self.max_views = max_views
        self._seen: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def view_key(principal: Principal, filters: dict[str, Any], now: datetime) -> str:
        rest = {k: v for k, v in filters.items() if k not in ("start", "end")}
        start = datetime.fromisoformat(str(filters["start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(filters["end"]).replace("Z", "+00:00"))
        live = abs((now - end).total_seconds()) <= 120
        period: object = ["live", round((end - start).total_seconds() / 60)] if live else [filters["start"], filters["end"]]
        return json.dumps([principal.org_id, principal.sub, rest, period], sort_keys=True, default=str)

    def first(self, principal: Principal, filters: dict[str, Any]) -> bool:
        """True when this read of this view should be recorded (not seen within the window)."""
        now = time.monotonic()
        key = self.view_key(principal, filters, datetime.now(UTC))
        seen = self._seen.get(key)
        if seen is not None and now - seen < self.window_s:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_views:
            self._seen.popitem(last=False)
        return True
