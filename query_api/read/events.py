"""Reads of ``audit_events`` for the list and detail endpoints (one thread's client per call).

Contract:
- every function takes a :class:`~auditlogkit.query_api.security.scoping.ScopedQuery` (tenant scope always applied) and sees a
  re-sent event_id once (``FINAL``, or for pages the exact adjacent-copy dedup of :func:`list_page`);
- :func:`list_page` returns at most ``limit`` events newest first by (occurred_at, event_id) and the position
  of the last one when more rows follow (for the next cursor);
- returned datetimes are timezone-aware UTC (chDB hands back naive UTC values).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from auditlogkit.query_api.read.event_shape import SELECT_COLUMNS, TIME_COLUMNS, public_event, select_list
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.event import as_utc
from auditlogkit.schemas.tables import EVENTS_TABLE
from auditlogkit.server.store import Store

ORDER = "ORDER BY occurred_at DESC, event_id DESC"
DEDUP_SLACK = 16


def utc_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its datetimes aware UTC (:func:`auditlogkit.schemas.event.as_utc`)."""
    for k in TIME_COLUMNS:
        v = row.get(k)
        if isinstance(v, datetime):
            row[k] = as_utc(v)
    return row


def list_page(store: Store, sq: ScopedQuery, catalog: Catalog, limit: int, detail_max: int | None = None
              ) -> tuple[list[dict[str, Any]], tuple[datetime, uuid.UUID] | None]:
    """One page, newest first, each event once; a ``detail`` longer than ``detail_max`` bytes is left out
    (``detail: null, detail_omitted: true``; the detail endpoint serves it), so a page's size stays bounded.

    Dedup without FINAL (cheaper than FINAL on a large table): copies of one event share the whole sorting key,
    so in key order they are adjacent and keyset pagination (strictly after the last key) never splits a copy
    onto the next page; dropping adjacent repeats is therefore exact. A window with more repeats than the
    slack falls back to FINAL.
    """
    want = limit + 1
    columns = SELECT_COLUMNS
    params: dict[str, Any] = dict(sq.params)
    if detail_max is not None:
        columns = select_list(cap_detail=True)
        params["d_max"] = detail_max
    sql = f"SELECT {columns} FROM {EVENTS_TABLE} WHERE {sq.where()} {ORDER} LIMIT {{lim:UInt32}}"
    client = store.client()
    raw = [utc_row(r) for r in client.query(sql, parameters={**params, "lim": want + DEDUP_SLACK}).named_results()]
    rows = _drop_adjacent_repeats(raw)
    if len(rows) < want and len(raw) == want + DEDUP_SLACK:
        final_sql = sql.replace(f"FROM {EVENTS_TABLE} WHERE", f"FROM {EVENTS_TABLE} FINAL WHERE", 1)
        rows = [utc_row(r) for r in client.query(final_sql, parameters={**params, "lim": want}).named_results()]
    more = len(rows) > limit
    rows = rows[:limit]
    last = (rows[-1]["occurred_at"], rows[-1]["event_id"]) if more and rows else None
    return [public_row(r, catalog) for r in rows], last


def public_row(row: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The public JSON of a row selected with ``select_list(cap_detail=True)`` (list pages, the live tail)."""
    if "detail_capped" in row:  # select_list(cap_detail=True)
        row["detail"] = row.pop("detail_capped")
    out = public_event(row, catalog)
    out["detail_omitted"] = bool(row.get("detail_omitted"))  # as EventOut: always present on list rows
    return out


def _drop_adjacent_repeats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in rows:
        if out and out[-1]["event_id"] == r["event_id"] and out[-1]["occurred_at"] == r["occurred_at"]:
            continue
        out.append(r)
    return out


def get_event(store: Store, sq: ScopedQuery, catalog: Catalog, event_id: uuid.UUID) -> dict[str, Any] | None:
    sq.add("event_id = {e_id:UUID}", e_id=event_id)
    sql = f"SELECT {SELECT_COLUMNS} FROM {EVENTS_TABLE} FINAL WHERE {sq.where()} {ORDER} LIMIT 1"
    rows = list(store.client().query(sql, parameters=sq.params).named_results())
    return public_event(utc_row(rows[0]), catalog) if rows else None


def count(store: Store, sq: ScopedQuery) -> int:
    sql = f"SELECT count() FROM {EVENTS_TABLE} FINAL WHERE {sq.where()}"
    return int(store.client().query(sql, parameters=sq.params).result_rows[0][0])
