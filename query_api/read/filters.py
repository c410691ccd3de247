"""The event filters of API.md: ONE table (:data:`FILTERS`), and the validated value shared by list, export and stats.

Each filter is declared once, as a :class:`FilterSpec` in :data:`FILTERS` (name, type, help, validation, SQL
condition, page label). Derived from the table: the query parameters of ``/v1/events``, ``/v1/events/export`` and
``/v1/stats`` (:func:`auditlogkit.query_api.deps.event_filters`), the flags of ``auditlog export`` (:mod:`auditlogkit.query_api.cli`),
:meth:`EventFilters.describe` (self-audit events) and :meth:`EventFilters.conditions` (the SQL); the page's list
(``static/js/filter_table.js``) is generated from it by :mod:`auditlogkit.query_api.core.page_filters`.

Contract of :func:`parse_filters`:
- ``start``/``end`` are RFC 3339 (a value without zone is taken as UTC); default: the last 7 days
  (``end`` = now, ``start`` = ``end`` - 7 days); ``start`` after ``end`` is an error on ``start``;
- ``scope``, ``category``, ``action`` (repeatable) must be catalog codes consistent with each other: an unknown
  code is an error naming the field and the valid values;
- ``ip`` must be an IPv4/IPv6 address (compared in its normalised form, as stored);
- string values may not contain NUL bytes and are at most 512 characters; an empty one is no filter.
Errors are :class:`FilterError` (no HTTP here: the API answers 422, or 403 for ``forbidden``; the CLI prints it).
Every condition binds its values as server-side parameters (``{f_<name>:Type}``); no value is ever put into SQL
text. Tenant checks (another org or workspace named: ``forbidden``) happen in :mod:`auditlogkit.query_api.security.scoping`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, get_args, get_origin

from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.event import StatusText, as_utc, normal_ip

DEFAULT_RANGE = timedelta(days=7)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_TEXT = 512
Status = StatusText

# The keyword-search haystack. It is also the expression of the skipping index ``idx_search`` in
# schemas/migrations/0001_events.sql (keep both texts identical so ClickHouse can use the index).
SEARCH_EXPR = ("lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), "
               "' ', description))")


class FilterError(Exception):
    """A filter value that cannot be used: ``field`` names the filter. ``forbidden``: valid, but outside the
    caller's tenant (the API answers 403, else 422)."""

    def __init__(self, field: str, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.forbidden = forbidden


Parser = Callable[[str, Any, Catalog, Mapping[str, Any]], Any]
"""(name, raw value, catalog, the filters parsed before it) -> the validated value, or None (not set)."""
Condition = Callable[[Any, Catalog], tuple[str, dict[str, Any]]]
"""(validated value, catalog) -> (SQL condition with ``{name:Type}`` placeholders, their values)."""
RowTest = Callable[[Mapping[str, Any]], bool]
Match = Callable[[Any, Catalog], RowTest | None]
"""(validated value, catalog) -> the same condition as a test of one stored row (a dict by column, datetimes
aware UTC), true exactly when ClickHouse's condition is; None: this value is left to ClickHouse."""


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One filter. ``name`` is its query parameter, its CLI flag (``--name-with-dashes``) and its key in
    :class:`EventFilters` and :meth:`EventFilters.describe`."""

    name: str
    type: Any
    """Its type in the API / OpenAPI: ``str``, ``datetime``, ``Status`` or ``list[str]`` (repeatable)."""
    help: str
    """The OpenAPI description and the CLI help."""
    parse: Parser
    condition: Condition
    match: Match | None = None
    """The condition as a row test (the page window, :mod:`auditlogkit.query_api.read.recent`); None: none."""
    label: str | None = None
    """Its chip label on the page; None: not on the page."""
    widget: str | None = None
    """How the page offers it: ``period``, ``scope``, ``category``, ``action``, ``status``, ``search`` or ``text``
    (an exact-match text field); written into the page's generated ``static/js/filter_table.js``."""

    @property
    def repeatable(self) -> bool:
        return get_origin(self.type) is list

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# ----- validation ----------------------------------------------------------------------------------------------
def _iso(ts: datetime) -> str:
    return as_utc(ts).isoformat().replace("+00:00", "Z")


def utc(ts: datetime) -> datetime:
    try:
        return as_utc(ts)
    except OverflowError:  # e.g. year 1 with a positive offset
        return EARLIEST - timedelta(days=1)


def clean_text(name: str, value: str | None) -> str | None:
    """``None`` for absent/empty; :class:`FilterError` for NUL bytes or overlong values."""
    if value is None or value == "":
        return None
    if "\x00" in value:
        raise FilterError(name, f"{name} must not contain NUL bytes")
    if len(value) > MAX_TEXT:
        raise FilterError(name, f"{name} is longer than {MAX_TEXT} characters")
    return value


def _check_bounds(name: str, v: datetime) -> None:
    if not EARLIEST <= v <= LATEST:
        raise FilterError(name, f"{name} must lie between {_iso(EARLIEST)} and {_iso(LATEST)}")


def parse_time(name: str, raw: Any, _catalog: Catalog, _earlier: Mapping[str, Any]) -> datetime | None:
    """A datetime (or its RFC 3339 text, from the CLI) within :data:`EARLIEST`..:data:`LATEST`, in UTC."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise FilterError(name, f"{name} {raw!r} is not an RFC 3339 datetime") from None
    v = utc(raw)
    _check_bounds(name, v)
    return v


def parse_text(name: str, raw: Any, _catalog: Catalog, _earlier: Mapping[str, Any]) -> str | None:
    return clean_text(name, raw)


def parse_status(name: str, raw: Any, _catalog: Catalog, _earlier: Mapping[str, Any]) -> str | None:
    v = clean_text(name, raw)
    if v is not None and v not in get_args(Status):
        raise FilterError(name, f"unknown status {v!r}; valid: {', '.join(get_args(Status))}")
    return v


def parse_ip(name: str, raw: Any, _catalog: Catalog, _earlier: Mapping[str, Any]) -> str | None:
    v = clean_text(name, raw)
    if v is None:
        return None
    try:
        return normal_ip(v.strip())
    except ValueError:
        raise FilterError(name, f"ip {v!r} is not an IPv4 or IPv6 address") from None


def parse_scope(name: str, raw: Any, catalog: Catalog, _earlier: Mapping[str, Any]) -> str | None:
    v = clean_text(name, raw)
    if v is not None and v not in catalog.scopes:
        raise FilterError(name, f"unknown scope {v!r}; valid: {', '.join(catalog.scopes)}")
    return v


def _scopes(catalog: Catalog, scope: str | None) -> list[Any]:
    return [catalog.scopes[scope]] if scope else list(catalog.scopes.values())


def parse_category(name: str, raw: Any, catalog: Catalog, earlier: Mapping[str, Any]) -> str | None:
    """A category code of the catalog (of ``scope`` when that is set)."""
    v = clean_text(name, raw)
    if v is None:
        return None
    scope = earlier.get("scope")
    valid = [c for s in _scopes(catalog, scope) for c in s.categories]
    if v not in valid:
        where = f" for scope {scope!r}" if scope else ""
        raise FilterError(name, f"unknown category {v!r}{where}; valid: {', '.join(dict.fromkeys(valid))}")
    return v


def parse_actions(name: str, raw: Any, catalog: Catalog, earlier: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Action codes of the catalog (of ``scope`` / ``category`` when set), each once, in the given order."""
    items = [raw] if isinstance(raw, str) else list(raw or ())
    acts = [a for a in (clean_text(name, a) for a in items) if a is not None]
    scope, category = earlier.get("scope"), earlier.get("category")
    valid = [ac for s in _scopes(catalog, scope) for c in s.categories.values() if category in (None, c.code)
             for ac in c.actions]
    for a in acts:
        if a not in valid:
            where = f" for {scope or '*'}/{category or '*'}"
            raise FilterError(name, f"unknown action {a!r}{where}; valid: {', '.join(dict.fromkeys(valid))}")
    return tuple(dict.fromkeys(acts)) or None


# ----- SQL -----------------------------------------------------------------------------------------------------
def cond(sql: str, convert: Callable[[Any], Any] | None = None) -> Condition:
    """A constant condition; each of its placeholders is bound to the filter's value (``convert``-ed)."""
    names = list(dict.fromkeys(re.findall(r"\{([a-z_][a-z0-9_]*):", sql)))

    def condition(value: Any, _catalog: Catalog) -> tuple[str, dict[str, Any]]:
        v = convert(value) if convert else value
        return sql, dict.fromkeys(names, v)

    return condition


def like_contains(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (its ``%``, ``_`` and ``\\`` taken literally), lower-cased."""
    esc = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def keyword_condition(value: Any, catalog: Catalog) -> tuple[str, dict[str, Any]]:
    """``q``: the text columns contain it, or the event's (scope, action) has a catalog code/label containing it."""
    text_cond = f"{SEARCH_EXPR} LIKE {{f_q:String}}"
    pairs = catalog.actions_matching(value)
    if pairs:
        return (f"({text_cond} OR (scope, action) IN {{f_q_pairs:Array(Tuple(String, String))}})",
                {"f_q": like_contains(value), "f_q_pairs": pairs})
    return text_cond, {"f_q": like_contains(value)}


# ----- the same conditions as row tests ----------------------------------------------------------------------
def ms(ts: datetime) -> datetime:
    """``ts`` as ClickHouse binds it to a ``DateTime64(3)`` parameter: cut to the millisecond."""
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)


def equals(column: str) -> Match:
    """``column = value`` (a NULL column equals nothing)."""
    def match(value: Any, _catalog: Catalog) -> RowTest:
        return lambda row: row[column] == value
    return match


def time_bound(op: Callable[[Any, Any], bool]) -> Match:
    """``occurred_at <op> value`` with the value cut to the millisecond, as bound."""
    def match(value: Any, _catalog: Catalog) -> RowTest:
        bound = ms(value)
        return lambda row: op(row["occurred_at"], bound)
    return match


def _actions_match(value: Any, _catalog: Catalog) -> RowTest:
    wanted = frozenset(value)
    return lambda row: row["action"] in wanted


def _target_match(value: Any, _catalog: Catalog) -> RowTest:
    return lambda row: row["target_id"] == value or row["target_name"] == value


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with A-Z lowered and nothing else: ClickHouse's ``lowerUTF8`` of an ASCII text, and what that
    lowers in any text that ASCII can be found in."""
    return text.translate(_ASCII_LOWER)


SEARCH_TEXT = "search_ascii"
"""The key under which a holder of rows may keep :func:`search_text` (the page window does, once per row)."""


def search_text(row: Mapping[str, Any]) -> str:
    """:data:`SEARCH_EXPR` of a row with only A-Z lowered: for an ASCII needle, ``lowerUTF8(...) LIKE`` finds it
    exactly where this text contains the lowered needle (ClickHouse lowers a character only into one of the
    same UTF-8 length, so no other character lowers into ASCII)."""
    return (f"{row['actor_email'] or ''} {row['target_id'] or ''} {row['target_name'] or ''} "
            f"{row['description']}").translate(_ASCII_LOWER)


def keyword_match(value: Any, catalog: Catalog) -> RowTest | None:
    """:func:`keyword_condition` as a row test, for an ASCII keyword (any other is left to ClickHouse)."""
    if not value.isascii():
        return None
    needle = ascii_lower(value)
    pairs = frozenset(catalog.actions_matching(value))
    if pairs:
        return lambda row: (needle in (row.get(SEARCH_TEXT) or search_text(row))
                            or (row["scope"], row["action"]) in pairs)
    return lambda row: needle in (row.get(SEARCH_TEXT) or search_text(row))


# ----- THE filter table -----------------------------------------------------------------------------------------
_TS = "DateTime64(3, 'UTC')"
FILTERS: tuple[FilterSpec, ...] = (
    FilterSpec("start", datetime, "RFC 3339; default end - 7 days", parse_time,
               cond(f"occurred_at >= {{f_start:{_TS}}}"), time_bound(operator.ge), label="Period", widget="period"),
    FilterSpec("end", datetime, "RFC 3339; default now", parse_time,
               cond(f"occurred_at <= {{f_end:{_TS}}}"), time_bound(operator.le), label="Period", widget="period"),
    FilterSpec("scope", str, "catalog scope code", parse_scope,
               cond("scope = {f_scope:String}"), equals("scope"), label="Scope", widget="scope"),
    FilterSpec("category", str, "catalog category code (of the scope when given)", parse_category,
               cond("category = {f_category:String}"), equals("category"), label="Category", widget="category"),
    FilterSpec("action", list[str], "catalog action code; repeatable", parse_actions,
               cond("action IN {f_action:Array(String)}", list), _actions_match, label="Action", widget="action"),
    FilterSpec("status", Status, "SUCCESS or FAILED", parse_status,
               cond("status = {f_status:String}"), equals("status"), label="Status", widget="status"),
    FilterSpec("actor_email", str, "exact e-mail of the actor", parse_text,
               cond("actor_email = {f_actor_email:String}"), equals("actor_email"), label="User", widget="text"),
    FilterSpec("actor_id", str, "exact actor id", parse_text,
               cond("actor_id = {f_actor_id:String}"), equals("actor_id"), label="User ID", widget="text"),
    FilterSpec("ip", str, "exact client IP (IPv4 or IPv6)", parse_ip,
               cond("actor_ip = {f_ip:String}"), equals("actor_ip"), label="IP address", widget="text"),
    FilterSpec("workspace_id", str, "exact workspace id (must be one you may see)", parse_text,
               cond("workspace_id = {f_workspace_id:String}"), equals("workspace_id"), label="Workspace", widget="text"),
    FilterSpec("target", str, "exact target id or name", parse_text,
               cond("(target_id = {f_target:String} OR target_name = {f_target2:String})"),
               _target_match, label="Target", widget="text"),
    FilterSpec("q", str, "keyword, case-insensitive: scope/category/action codes and labels, e-mail, target "
                         "id/name, description", parse_text, keyword_condition, keyword_match, label="Search", widget="search"),
    FilterSpec("org_id", str, "your own org id (another org is a 403)", parse_text,
               cond("org_id = {f_org_id:String}"), equals("org_id")),
)
"""Every filter, in parameter order. A validator sees the filters before it (category sees scope)."""
BY_NAME: Mapping[str, FilterSpec] = MappingProxyType({s.name: s for s in FILTERS})


# ----- the validated filters -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventFilters:
    """The validated filters that are set, by name (``start`` and ``end`` always; ``action`` a tuple)."""

    values: Mapping[str, Any]

    @property
    def start(self) -> datetime:
        return self.values["start"]

    @property
    def end(self) -> datetime:
        return self.values["end"]

    def get(self, name: str) -> Any:
        """The value of filter ``name``, None when it is not set."""
        if name not in BY_NAME:
            raise KeyError(f"no filter {name!r}")
        return self.values.get(name)

    def describe(self) -> dict[str, object]:
        """The filters as JSON-ready values (for the self-audit event and logs)."""
        return {name: _json(v) for name, v in self.values.items()}

    def conditions(self, catalog: Catalog) -> list[tuple[str, dict[str, Any]]]:
        """(SQL condition, bound parameters) of every filter that is set, in table order."""
        return [BY_NAME[name].condition(v, catalog) for name, v in self.values.items()]

    def row_tests(self, catalog: Catalog, skip: tuple[str, ...] = ()) -> list[RowTest] | None:
        """:meth:`conditions` as row tests (every one must hold) but those of ``skip`` (which the caller applies
        itself), or None when one is left to ClickHouse."""
        tests = []
        for name, v in self.values.items():
            if name in skip:
                continue
            match = BY_NAME[name].match
            test = match(v, catalog) if match is not None else None
            if test is None:
                return None
            tests.append(test)
        return tests


def _json(v: Any) -> object:
    if isinstance(v, datetime):
        return _iso(v)
    if isinstance(v, tuple):
        return list(v)
    return v


def parse_filters(catalog: Catalog, raw: Mapping[str, Any], *, now: datetime | None = None) -> EventFilters:
    """The validated filters (module contract) from raw values by filter name (absent/None: not set): used by
    the API and by ``auditlog export``."""
    unknown = set(raw) - BY_NAME.keys()
    if unknown:
        raise TypeError(f"unknown filters: {sorted(unknown)}")
    values: dict[str, Any] = {}
    for spec in FILTERS:
        v = spec.parse(spec.name, raw.get(spec.name), catalog, values)
        if v is not None:
            values[spec.name] = v
    end = values.setdefault("end", now or datetime.now(UTC))
    if "start" not in values:
        values["start"] = end - DEFAULT_RANGE
        _check_bounds("start", values["start"])
    if values["start"] > end:
        raise FilterError("start", f"start ({_iso(values['start'])}) is after end ({_iso(end)})")
    ordered = {s.name: values[s.name] for s in FILTERS if s.name in values}
    return EventFilters(MappingProxyType(ordered))
