"""The API's event shape on the read side: one column spec, and what follows from it.

Contract:
- :data:`EVENT_SHAPE` lists the fields of the API's event in the order of its OpenAPI schema
  (``models.EventOut``): public name, nesting (``actor.*``, ``target.*``, ``publisher.*``), the stored column of
  ``audit_events`` with its ClickHouse type, the position in the CSV export, and for a catalog label the code it
  labels. A stored field is named by its public path (:func:`_stored`): its column, type and JSON-ness come
  from the column spec ``schemas/columns.py`` (a test checks that every column the spec calls public is here
  once). A field with neither column nor label is set by the read itself (``detail_omitted``);
- derived from it: the SELECT list of the reads (:func:`select_list`), the event as JSON (:func:`public_event`),
  the export's per-field SQL (:func:`value_sql`, :attr:`EventField.json_type`, :data:`CSV_FIELDS`,
  :data:`NDJSON_FIELDS`, used by ``export.py``); ``models.EventOut`` is checked against it by a test;
- labels: :func:`catalog_labels` is the one rule (the catalog's labels of the stored (scope, action), else the
  codes themselves; view ``audit_events_flat`` joins by the same key). :func:`label_params` hands that rule's
  table to ClickHouse, where :func:`value_sql` of a label looks it up, so an export labels like the API;
- the insert side (``schemas/rows.py``: ``EVENT_COLUMNS``, ``event_values``) follows from the same spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.columns import COLUMNS
from auditlogkit.schemas.event import format_ts

#: the code fields a label can label, in the order :func:`catalog_labels` returns their labels
LABELLED: tuple[str, ...] = ("scope", "category", "action")


@dataclass(frozen=True, slots=True)
class EventField:
    """One field of the API's event."""

    name: str  #: the key in the API's JSON (inside ``group`` when nested)
    column: str | None = None  #: the stored column of ``audit_events``; None: not stored
    ch_type: str = ""  #: the column's ClickHouse type in the DDL (without DEFAULT / CODEC)
    group: str | None = None  #: ``actor`` / ``target``: a key of that nested object
    csv: int | None = None  #: the position in the CSV export; None: not in it
    label_of: str | None = None  #: a catalog label: the code field (one of :data:`LABELLED`) it labels
    json_text: bool = False  #: stored JSON text: an object in the API, spliced as is into NDJSON

    @property
    def flat(self) -> str:
        """The flat name (CSV header): the column, or the public name of a label."""
        return self.column or self.name

    @property
    def path(self) -> str:
        """``actor.email``; ``scope`` for a top-level field."""
        return f"{self.group}.{self.name}" if self.group else self.name

    @property
    def nullable(self) -> bool:
        return "Nullable(" in self.ch_type

    @property
    def is_time(self) -> bool:
        return self.ch_type.startswith("DateTime64")

    @property
    def exported(self) -> bool:
        """In the exports and in :func:`public_event` (stored or a label; not a flag of one read)."""
        return self.column is not None or self.label_of is not None

    @property
    def json_type(self) -> str:
        """The ClickHouse type of the value the exports render (all text but the number ``schema_version``)."""
        if self.ch_type.startswith(("UInt", "Int")):
            return self.ch_type
        return "Nullable(String)" if self.nullable else "String"


#: public path -> the spec of its column (``schemas/columns.py``)
_PUBLIC_COLUMNS = {c.public: c for c in COLUMNS if c.public is not None}


def _stored(path: str, csv: int | None = None) -> EventField:
    """The field at public ``path`` (``actor.email``): column, type and JSON-ness from the column spec."""
    c = _PUBLIC_COLUMNS[path]
    group, _, name = path.rpartition(".")
    return EventField(name, c.name, c.ch_type, group=group or None, csv=csv, json_text=c.encode == "json")


EVENT_SHAPE: tuple[EventField, ...] = (
    _stored("schema_version"),
    _stored("event_id", csv=0),
    _stored("occurred_at", csv=1),
    _stored("org_id", csv=3),
    _stored("workspace_id", csv=4),
    _stored("scope", csv=5),
    EventField("scope_label", label_of="scope", csv=6),
    _stored("category", csv=7),
    EventField("category_label", label_of="category", csv=8),
    _stored("action", csv=9),
    EventField("action_label", label_of="action", csv=10),
    _stored("status", csv=11),
    _stored("actor.id", csv=12),
    _stored("actor.email", csv=13),
    _stored("actor.type", csv=14),
    _stored("actor.ip", csv=15),
    _stored("actor.user_agent", csv=16),
    _stored("target.type", csv=17),
    _stored("target.id", csv=18),
    _stored("target.name", csv=19),
    _stored("description", csv=20),
    _stored("detail", csv=23),
    EventField("detail_omitted"),
    _stored("source", csv=21),
    _stored("request_id", csv=22),
    _stored("received_at", csv=2),
    _stored("publisher.via", csv=24),
    _stored("publisher.id", csv=25),
)

STORED: tuple[EventField, ...] = tuple(f for f in EVENT_SHAPE if f.column is not None)
TIME_COLUMNS: tuple[str, ...] = tuple(f.flat for f in STORED if f.is_time)
#: the CSV export's columns in file order (event_id and occurred_at first: ``export.line_key`` reads them)
CSV_FIELDS: tuple[EventField, ...] = tuple(sorted((f for f in EVENT_SHAPE if f.csv is not None),
                                                  key=lambda f: f.csv or 0))
#: an NDJSON line: the typed fields in shape order, then the stored JSON text as is
NDJSON_FIELDS: tuple[EventField, ...] = (tuple(f for f in EVENT_SHAPE if f.exported and not f.json_text)
                                         + tuple(f for f in EVENT_SHAPE if f.json_text))
assert [f.csv for f in CSV_FIELDS] == list(range(len(CSV_FIELDS))), "CSV positions must be 0..n-1"
assert {f.label_of for f in EVENT_SHAPE if f.label_of} == set(LABELLED)
assert [f.path for f in CSV_FIELDS[:2]] == ["event_id", "occurred_at"]


# ----- the read: SELECT list and JSON ---------------------------------------------------------------------------
def select_list(cap_detail: bool = False) -> str:
    """The stored columns, comma-separated. ``cap_detail``: a JSON text longer than ``{d_max:UInt32}`` bytes
    comes back NULL as ``<col>_capped`` with the flag ``<col>_omitted`` (own aliases: an alias equal to the
    column would also rename it inside the flag's expression)."""
    cols = []
    for f in STORED:
        c = f.flat
        if cap_detail and f.json_text:
            cols += [f"if(length({c}) > {{d_max:UInt32}}, NULL, {c}) AS {c}_capped",
                     f"ifNull(length({c}) > {{d_max:UInt32}}, 0) AS {c}_omitted"]
        else:
            cols.append(c)
    return ", ".join(cols)


SELECT_COLUMNS = select_list()


def catalog_labels(catalog: Catalog, scope: str, category: str, action: str) -> tuple[str, str, str]:
    """(scope_label, category_label, action_label) of a stored event: the catalog's labels of (scope, action),
    else the codes themselves. The one label rule (exports apply it through :func:`label_params`)."""
    return catalog.labels(scope, action) or (scope, category, action)


def _json_text(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def _same(v: Any) -> Any:
    return v


def _converter(f: EventField) -> Callable[[Any], Any]:
    """Stored value -> JSON value: JSON text parsed, datetimes as RFC 3339 strings, UUIDs as text."""
    if f.json_text:
        return _json_text
    if f.is_time:
        return format_ts
    if f.ch_type == "UUID":
        return str
    return _same


#: (group, name, column, conversion) of each field of public_event(); for a label, "column" is its index in
#: catalog_labels()
_PUBLIC: tuple[tuple[str | None, str, str | int, Callable[[Any], Any]], ...] = tuple(
    (f.group, f.name, f.column, _converter(f)) if f.column is not None
    else (f.group, f.name, LABELLED.index(f.label_of or ""), _same)
    for f in EVENT_SHAPE if f.exported)


def public_event(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """A selected row (dict keyed by column; :func:`select_list`) as the API's event in :data:`EVENT_SHAPE`
    order, labels included (``detail_omitted`` is the read's to add)."""
    labels = catalog_labels(catalog, *(row[c] for c in LABELLED))
    out: dict[str, Any] = {}
    for group, name, col, conv in _PUBLIC:
        v = labels[col] if isinstance(col, int) else conv(row[col])
        if group is None:
            out[name] = v
        else:
            out.setdefault(group, {})[name] = v
    return out


# ----- the exports: per-field SQL ------------------------------------------------------------------------------
def ts_sql(col: str) -> str:
    """RFC 3339 UTC with milliseconds, like :func:`auditlogkit.schemas.event.format_ts`."""
    return f"concat(substring(formatDateTime({col}, '%Y-%m-%dT%H:%i:%S.%f', 'UTC'), 1, 23), 'Z')"


_LABEL_KEY_SQL = "concat(scope, '/', action)"


def label_params(catalog: Catalog) -> dict[str, list[str]]:
    """:func:`catalog_labels` of every catalog action as ClickHouse parameters: keys ``scope/action`` and one
    label array per labelled code (no label text ever enters the SQL)."""
    keys: list[str] = []
    labels: list[list[str]] = [[] for _ in LABELLED]
    for scope, category, action in catalog.all_actions():
        keys.append(f"{scope}/{action}")
        for out, label in zip(labels, catalog_labels(catalog, scope, category, action), strict=True):
            out.append(label)
    return {"x_label_key": keys, **{f"x_{code}_label": ls for code, ls in zip(LABELLED, labels, strict=True)}}


def value_sql(f: EventField) -> str:
    """ClickHouse SQL of the field's value as the exports render it (type :attr:`EventField.json_type`)."""
    if f.label_of is not None:
        return (f"transform({_LABEL_KEY_SQL}, {{x_label_key:Array(String)}}, {{x_{f.label_of}_label:Array(String)}}, "
                f"toString({f.label_of}))")
    col = f.flat
    if f.is_time:
        return ts_sql(col)
    if f.ch_type == "LowCardinality(Nullable(String))":
        return f"CAST({col}, 'Nullable(String)')"
    if f.ch_type == "UUID" or f.ch_type.startswith(("Enum", "LowCardinality(")):
        return f"toString({col})"
    return col
