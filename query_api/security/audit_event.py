"""The ``organization / audit_log`` event that records one read of the audit log, and whether a caller's can be.

Contract: :func:`build_event` is the event of a read (actor = token subject and e-mail, client IP when it is an IP
address, user agent cut to 1,024 characters, the request's id; ``detail`` holds the caller's role, the filters and what else the
endpoint says); :func:`unrecordable_claim` says which token claim would make that event fail the event contract
(authentication refuses such a token, :mod:`auditlogkit.query_api.security.auth`), or None.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from auditlogkit.query_api.security.principal import Principal
from auditlogkit.schemas.event import EventError, Status, parse_event
from auditlogkit.server.logs import get_logger

log = get_logger("auditlogkit.query_api.security.audit_event")

DESCRIPTIONS = {"audit_log.list": "Listed the audit log", "audit_log.export": "Exported the audit log",
                "audit_log.read": "Viewed the audit log", "audit_log.verify": "Verified the audit log's integrity",
                "audit_log.tail": "Tailed the audit log", "audit_log.stream_create": "Created a log stream",
                "audit_log.stream_update": "Changed a log stream", "audit_log.stream_delete": "Deleted a log stream",
                "audit_log.stream_test": "Sent a test event to a log stream"}


def build_event(principal: Principal, action: str, *, filters: dict[str, Any] | None, client_ip: str | None,
                user_agent: str | None, extra: dict[str, Any] | None = None, target_id: str | None = None,
                target_type: str = "audit_log", target_name: str | None = None,
                request_id: str | None = None) -> dict[str, Any]:
    ip: str | None = None
    if client_ip:
        try:
            ip = str(ipaddress.ip_address(client_ip))
        except ValueError:
            ip = None
    detail: dict[str, Any] = {"role": principal.role, **(extra or {})}
    if filters is not None:
        detail["filters"] = filters
    return {
        "org_id": principal.org_id,
        "workspace_id": None,
        "scope": "organization",
        "category": "audit_log",
        "action": action,
        "status": Status.SUCCESS.value,
        "actor": {"id": principal.sub, "email": principal.email or None, "type": "user", "ip": ip,
                  "user_agent": (user_agent or None) and user_agent[:1024]},
        "target": {"type": target_type, "id": target_id, "name": target_name},
        "description": DESCRIPTIONS[action],
        "detail": detail,
        "source": "query-api",
        "request_id": request_id,
    }


_CLAIM_OF_FIELD = {"actor.id": "sub", "actor.email": "email", "org_id": "org_id"}  # event fields from the token


def unrecordable_claim(principal: Principal) -> tuple[str, str] | None:
    """``None`` when this caller's reads can be recorded (its :func:`build_event` passes the event contract),
    else ``(claim, reason)`` of the token claim that breaks it (authentication refuses such a token)."""
    return _unrecordable(principal.sub, principal.email, principal.org_id)


@lru_cache(maxsize=1024)
def _unrecordable(sub: str, email: str, org_id: str) -> tuple[str, str] | None:
    caller = Principal(sub=sub, email=email, org_id=org_id, role="org_owner")
    event = build_event(caller, "audit_log.list", filters=None, client_ip=None, user_agent=None)
    event.update(event_id="00000000-0000-4000-8000-000000000000", occurred_at="2000-01-01T00:00:00Z")  # as the producer
    try:
        parse_event(event)
    except EventError as exc:
        claim = _CLAIM_OF_FIELD.get(exc.field)
        if claim is None:  # not the caller's fault (e.g. a catalog without audit_log.list): do not refuse tokens
            log.warning("auth.claims_probe_failed", field=exc.field, reason=exc.reason)
            return None
        return claim, exc.reason
    return None
