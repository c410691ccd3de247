"""The filters of API.md as one validated value, shared by list, export and stats.

Contract of :func:`parse_filters` (and of :func:`event_filters`, the FastAPI dependency built on it):
- ``start``/``end`` are RFC 3339 (a value without zone is taken as UTC); default: the last 7 days
  (``end`` = now, ``start`` = ``end`` - 7 days); ``start`` after ``end`` is a 422 on ``start``;
- ``scope``, ``category``, ``action`` (repeatable) must be catalog codes consistent with each other: an unknown
  code is a 422 naming the field and the valid values;
- ``ip`` must be an IPv4/IPv6 address (compared in its normalised form, as stored);
- string values may not contain NUL bytes and are at most 512 characters (422 otherwise).
Tenant checks (another org or workspace named: 403) happen in :mod:`query_api.scoping`, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

from fastapi import Depends, Query, Request

from query_api.errors import invalid
from schemas.catalog import Catalog
from schemas.event import normal_ip

DEFAULT_RANGE = timedelta(days=7)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_TEXT = 512
Status = Literal["SUCCESS", "FAILED"]


@dataclass(frozen=True, slots=True)
class EventFilters:
    start: datetime
    end: datetime
    scope: str | None = None
    category: str | None = None
    actions: tuple[str, ...] = ()
    status: str | None = None
    actor_email: str | None = None
    actor_id: str | None = None
    ip: str | None = None
    workspace_id: str | None = None
    target: str | None = None
    q: str | None = None
    org_id: str | None = None

    def describe(self) -> dict[str, object]:
        """The filters as JSON-ready values (for the self-audit event and logs)."""
        out: dict[str, object] = {"start": _iso(self.start), "end": _iso(self.end)}
        for k in ("scope", "category", "status", "actor_email", "actor_id", "ip", "workspace_id", "target", "q",
                  "org_id"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.actions:
            out["action"] = list(self.actions)
        return out


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc(ts: datetime) -> datetime:
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # e.g. year 1 with a positive offset
        return EARLIEST - timedelta(days=1)


def clean_text(name: str, value: str | None) -> str | None:
    """``None`` for absent/empty; 422 for NUL bytes or overlong values."""
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise invalid(name, f"{name} must not contain NUL bytes")
    if len(value) > MAX_TEXT:
        raise invalid(name, f"{name} is longer than {MAX_TEXT} characters")
    return value


def check_codes(catalog: Catalog, scope: str | None, category: str | None, actions: tuple[str, ...]) -> None:
    """422 unless scope/category/actions are catalog codes that fit together."""
    if scope is not None and scope not in catalog.scopes:
        raise invalid("scope", f"unknown scope {scope!r}; valid: {', '.join(catalog.scopes)}")
    scopes = [catalog.scopes[scope]] if scope else list(catalog.scopes.values())
    if category is not None:
        valid = [c for s in scopes for c in s.categories]
        if category not in valid:
            where = f" for scope {scope!r}" if scope else ""
            raise invalid("category", f"unknown category {category!r}{where}; valid: {', '.join(dict.fromkeys(valid))}")
    for a in actions:
        valid = [ac for s in scopes for c in s.categories.values() if category in (None, c.code) for ac in c.actions]
        if a not in valid:
            where = f" for {scope or '*'}/{category or '*'}"
            raise invalid("action", f"unknown action {a!r}{where}; valid: {', '.join(dict.fromkeys(valid))}")


def _check_bounds(name: str, v: datetime) -> None:
    if not EARLIEST <= v <= LATEST:
        raise invalid(name, f"{name} must lie between {_iso(EARLIEST)} and {_iso(LATEST)}")


def parse_filters(
    catalog: Catalog, *, start: datetime | None = None, end: datetime | None = None, scope: str | None = None,
    category: str | None = None, actions: list[str] | tuple[str, ...] = (), status: str | None = None,
    actor_email: str | None = None, actor_id: str | None = None, ip: str | None = None,
    workspace_id: str | None = None, target: str | None = None, q: str | None = None, org_id: str | None = None,
) -> EventFilters:
    """The validated filters (module contract) from raw values: used by the API and by ``auditlog export``."""
    now = datetime.now(UTC)
    end_ = utc(end) if end is not None else now
    _check_bounds("end", end_)  # before the default start is derived from it (year 1 - 7 days overflows)
    start_ = utc(start) if start is not None else end_ - DEFAULT_RANGE
    _check_bounds("start", start_)
    if start_ > end_:
        raise invalid("start", f"start ({_iso(start_)}) is after end ({_iso(end_)})")
    if status is not None and status not in get_args(Status):
        raise invalid("status", f"unknown status {status!r}; valid: {', '.join(get_args(Status))}")
    texts = {k: clean_text(k, v) for k, v in (("scope", scope), ("category", category), ("actor_email", actor_email),
                                                ("actor_id", actor_id), ("ip", ip), ("workspace_id", workspace_id),
                                                ("target", target), ("q", q), ("org_id", org_id))}
    acts = tuple(a for a in (clean_text("action", a) for a in actions) if a is not None)
    check_codes(catalog, texts["scope"], texts["category"], acts)
    ip_norm = texts["ip"]
    if ip_norm is not None:
        try:
            ip_norm = normal_ip(ip_norm.strip())
        except ValueError:
            raise invalid("ip", f"ip {ip_norm!r} is not an IPv4 or IPv6 address") from None
    return EventFilters(start=start_, end=end_, scope=texts["scope"], category=texts["category"],
                        actions=tuple(dict.fromkeys(acts)), status=status, actor_email=texts["actor_email"],
                        actor_id=texts["actor_id"], ip=ip_norm, workspace_id=texts["workspace_id"],
                        target=texts["target"], q=texts["q"], org_id=texts["org_id"])


def event_filters(
    request: Request,
    start: Annotated[datetime | None, Query(description="RFC 3339; default end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="RFC 3339; default now")] = None,
    scope: Annotated[str | None, Query(description="catalog scope code")] = None,
    category: Annotated[str | None, Query(description="catalog category code (of the scope when given)")] = None,
    action: Annotated[list[str] | None, Query(description="catalog action code; repeatable")] = None,
    status: Annotated[Status | None, Query(description="SUCCESS or FAILED")] = None,
    actor_email: Annotated[str | None, Query(description="exact e-mail of the actor")] = None,
    actor_id: Annotated[str | None, Query(description="exact actor id")] = None,
    ip: Annotated[str | None, Query(description="exact client IP (IPv4 or IPv6)")] = None,
    workspace_id: Annotated[str | None, Query(description="exact workspace id (must be one you may see)")] = None,
    target: Annotated[str | None, Query(description="exact target id or name")] = None,
    q: Annotated[str | None, Query(description="keyword, case-insensitive: scope/category/action codes and labels, "
                                             "e-mail, target id/name, description")] = None,
    org_id: Annotated[str | None, Query(description="your own org id (another org is a 403)")] = None,
) -> EventFilters:
    """Dependency: :func:`parse_filters` of the request's query parameters."""
    return parse_filters(request.app.state.catalog, start=start, end=end, scope=scope, category=category,
                         actions=action or (), status=status, actor_email=actor_email, actor_id=actor_id, ip=ip,
                         workspace_id=workspace_id, target=target, q=q, org_id=org_id)


Filters = Annotated[EventFilters, Depends(event_filters)]
