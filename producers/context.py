"""The request an event belongs to: who is acting, from where, under which request id (module contract).

One :class:`AuditContext` per task or thread (a ``contextvars.ContextVar``): the middleware of
:mod:`auditlogkit.middleware` opens one per HTTP request with the client's address, user agent and request id; the
service's authentication adds the actor and tenant with :func:`bind` once it knows them; the producer fills what an
event leaves out from it (:func:`fill`). What the event sets itself always wins. Outside a request nothing is set.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal

from auditlogkit.schemas.catalog import Catalog

ActorType = Literal["user", "service", "system"]


@dataclass(frozen=True)
class AuditContext:
    org_id: str | None = None
    workspace_id: str | None = None
    actor_id: str | None = None
    actor_email: str | None = None
    actor_type: ActorType | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id_from(header: str | None) -> str:
    """The request id of an incoming request: its ``X-Request-ID`` when that is a sane token (letters, digits and
    ``._:/+=-``, at most 128), else a new one (32 hex digits). Never a caller's arbitrary text."""
    return header if header and _REQUEST_ID.match(header) else uuid.uuid4().hex


_current: ContextVar[AuditContext | None] = ContextVar("auditlog_context", default=None)


def current() -> AuditContext | None:
    """The context of this task or thread, or None outside one."""
    return _current.get()


@contextmanager
def audit_context(**fields: Any) -> Iterator[AuditContext]:
    """A context for the block (fields of :class:`AuditContext`), on top of the one around it."""
    ctx = replace(_current.get() or AuditContext(), **fields)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def bind(**fields: Any) -> AuditContext:
    """Add to the current context (e.g. the actor once authentication knows it): for the rest of the request.
    Outside any context this opens one for the current task or thread."""
    ctx = replace(_current.get() or AuditContext(), **fields)
    _current.set(ctx)
    return ctx


def fill(event: Mapping[str, Any], catalog: Catalog, *, source: str | None = None) -> dict[str, Any]:
    """``event`` with what it leaves out taken from the context (tenant, actor, address, user agent, request id),
    ``source`` (the producer's), ``status`` ``SUCCESS``, and ``scope``/``category`` when the catalog has exactly one
    place for its ``action``. Nothing the event sets is changed."""
    out = dict(event)
    ctx = _current.get()
    if ctx is not None:
        for key in ("org_id", "workspace_id", "request_id"):
            if key not in out and getattr(ctx, key) is not None:
                out[key] = getattr(ctx, key)
        given = out.get("actor")
        if given is None or isinstance(given, Mapping):
            actor = dict(given or {})
            for key, value in (("id", ctx.actor_id), ("email", ctx.actor_email), ("type", ctx.actor_type),
                               ("ip", ctx.ip), ("user_agent", ctx.user_agent)):
                if key not in actor and value is not None:
                    actor[key] = value
            if actor:
                out["actor"] = actor
    if source is not None:
        out.setdefault("source", source)
    out.setdefault("status", "SUCCESS")
    action = out.get("action")
    if isinstance(action, str) and ("scope" not in out or "category" not in out):
        places = [(s, c) for s, c in catalog.places(action) if out.get("scope", s) == s and out.get("category", c) == c]
        if len(places) == 1:
            [(scope, category)] = places
            out.setdefault("scope", scope)
            out.setdefault("category", category)
    return out
