"""Reading the audit log is itself audited: list and export calls publish ``organization / audit_log`` events.

Contract of :func:`publish`: builds an ``audit_log.list`` / ``audit_log.export`` event for the caller (actor =
token subject and e-mail, client IP and user agent, the filters in ``detail``) and hands it to the producer
without waiting for the broker's ack. It never fails the request: an event the producer refuses or cannot send is
logged (``self_audit.failed``) with the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
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
