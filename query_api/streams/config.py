"""A stream's configuration as its owner gives it: checked here, before anything is stored.

Contract (every refusal is a :class:`StreamConfigError` naming the field, e.g. ``destination.url``; the API answers
422):
- :func:`check_name`: 1 to :data:`NAME_MAX` characters, no control characters;
- :func:`check_destination`: a known ``type`` (:mod:`auditlogkit.query_api.streams.destinations`) and exactly its fields:
  strings within their length and pattern, the required ones present; a URL passes
  :func:`auditlogkit.query_api.streams.ssrf.check_url` (so an address refused here is refused before it is stored). Given the
  stream's current destination of the same type, a secret left out keeps its value (a PATCH of one credential);
- :func:`check_filters`: only ``scope``, ``category``, ``action`` (one code or a list), ``status`` and
  ``workspace_id``, validated by the list's own filter table (:data:`auditlogkit.query_api.read.filters.FILTERS`); the result
  is JSON-ready (``action`` a list);
- :func:`check_start`: ``"now"`` / absent (None: from where the stored log ends at creation) or an RFC 3339 time
  not in the future and within the retention (a backfill of what was stored from then on);
- :func:`check_state`: ``active`` or ``paused`` (``failing`` is the delivery's to set, never the owner's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from auditlogkit.query_api.read.filters import BY_NAME, FilterError
from auditlogkit.query_api.streams.destinations import destinations
from auditlogkit.query_api.streams.ssrf import AllowList, Resolver, SsrfError, check_url, system_resolver
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.event import as_utc

NAME_MAX = 100
STATES = ("active", "paused")
FILTER_KEYS = ("scope", "category", "action", "status", "workspace_id")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class StreamConfigError(ValueError):
    """A configuration value that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """A checked destination: its type, its plain fields and its secrets (never in a repr)."""

    type: str
    fields: dict[str, str]
    secrets: dict[str, str] = field(repr=False)


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StreamConfigError("name", "name must be a non-empty string")
    name = name.strip()
    if len(name) > NAME_MAX or _CONTROL.search(name):
        raise StreamConfigError("name", f"name must be at most {NAME_MAX} characters without control characters")
    return name


def check_state(state: Any) -> str:
    if state not in STATES:
        raise StreamConfigError("state", f"state must be one of {', '.join(STATES)}")
    return str(state)


def check_destination(raw: Any, allow: AllowList, resolver: Resolver = system_resolver, *,
                      current: DestinationConfig | None = None) -> DestinationConfig:
    """The checked destination (module contract)."""
    if not isinstance(raw, Mapping):
        raise StreamConfigError("destination", "destination must be an object with a type and its fields")
    kind = raw.get("type", current.type if current else None)
    known = destinations()
    if kind not in known:
        raise StreamConfigError("destination.type", f"type must be one of {', '.join(known)}")
    specs = {f.name: f for f in known[kind].FIELDS}
    unknown = sorted(set(raw) - set(specs) - {"type"})
    if unknown:
        raise StreamConfigError(f"destination.{unknown[0]}", f"{kind} has no field {unknown[0]!r}; its fields: "
                                f"{', '.join(specs)}")
    keep = current if current is not None and current.type == kind else None
    fields: dict[str, str] = {}
    secrets: dict[str, str] = {}
    for name, spec in specs.items():
        value = raw.get(name)
        if value is None or value == "":
            previous = (keep.secrets if spec.secret else keep.fields).get(name) if keep else None
            if previous:
                (secrets if spec.secret else fields)[name] = previous
            elif spec.required:
                raise StreamConfigError(f"destination.{name}", f"{kind} needs {name}")
            continue
        if not isinstance(value, str):
            raise StreamConfigError(f"destination.{name}", f"{name} must be a string")
        if len(value) > spec.max_chars or _CONTROL.search(value):
            raise StreamConfigError(f"destination.{name}", f"{name} must be at most {spec.max_chars} characters "
                                    "without control characters")
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            raise StreamConfigError(f"destination.{name}", f"{name} is not valid (the pattern is {spec.pattern})")
        if spec.url:
            try:
                check_url(value, allow, resolver)
            except SsrfError as exc:
                raise StreamConfigError(f"destination.{name}", str(exc)) from None
        (secrets if spec.secret else fields)[name] = value
    return DestinationConfig(str(kind), fields, secrets)


def check_filters(raw: Any, catalog: Catalog) -> dict[str, Any]:
    """The checked filters, JSON-ready (module contract)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise StreamConfigError("filters", f"filters must be an object with some of: {', '.join(FILTER_KEYS)}")
    unknown = sorted(set(raw) - set(FILTER_KEYS))
    if unknown:
        raise StreamConfigError(f"filters.{unknown[0]}", f"a stream filters by {', '.join(FILTER_KEYS)} only")
    for name, v in raw.items():  # the filter table parses query-string values: strings, or lists of them
        if not (isinstance(v, str) or v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
            raise StreamConfigError(f"filters.{name}", "a filter's value must be a string or a list of strings")
        if isinstance(v, list) and not BY_NAME[name].repeatable:
            raise StreamConfigError(f"filters.{name}", f"{name} takes one value (a string), not a list")
    values: dict[str, Any] = {}
    for name in FILTER_KEYS:
        try:
            v = BY_NAME[name].parse(name, raw.get(name), catalog, values)
        except FilterError as exc:
            raise StreamConfigError(f"filters.{exc.field}", exc.message) from None
        if v is not None:
            values[name] = v
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def check_start(raw: Any, retention_days: int, now: datetime | None = None) -> datetime | None:
    """None for ``"now"`` / absent, else the checked start time (module contract)."""
    if raw is None or raw == "now":
        return None
    now = now or datetime.now(UTC)
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
        except ValueError:
            raise StreamConfigError("start", "start must be \"now\" or an RFC 3339 time") from None
    if not isinstance(raw, datetime):
        raise StreamConfigError("start", "start must be \"now\" or an RFC 3339 time")
    start = as_utc(raw)
    if start > now + timedelta(seconds=5):
        raise StreamConfigError("start", "start must not be in the future (use \"now\")")
    if start < now - timedelta(days=retention_days):
        raise StreamConfigError("start", f"start lies before the retention of {retention_days} days")
    return start
