"""The content hash of a stored event: one definition, as a ClickHouse expression and in Python.

Contract: :data:`CONTENT_SHA256_SQL` (FROZEN: changing it makes every stored digest disagree) is the SHA-256 of
:data:`CONTENT_TAG` and each column of :data:`CONTENT_COLUMNS` as ``<byte length>:<text>`` (``~`` for NULL);
:func:`content_sha256` computes the same from a selected row. Migration 0040 writes it at insert; the verifier
(:mod:`auditlog.db.integrity`) recomputes it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from schemas.event import epoch_ms

CONTENT_TAG = "auditlog-content-v1"
#: The content columns, in hash order. FROZEN, written out: a column added to audit_events later is not part of
#: this hash (a test checks they are the event's own columns of schemas/rows.py, in its order).
CONTENT_COLUMNS: tuple[str, ...] = (
    "org_id", "occurred_at", "event_id", "schema_version", "workspace_id", "scope", "category", "action",
    "status", "actor_id", "actor_email", "actor_type", "actor_ip", "actor_user_agent", "target_type", "target_id",
    "target_name", "description", "detail", "source", "request_id",
)
#: How a column becomes text before length-prefixing (default ``toString(col)``; NULL stays NULL).
_AS_TEXT = {"occurred_at": "toString(toUnixTimestamp64Milli(occurred_at))"}


def _field_sql(col: str) -> str:
    v = _AS_TEXT.get(col, f"toString({col})")
    return f"ifNull(concat(toString(length({v})), ':', {v}), '~')"


#: The content hash as a ClickHouse expression over audit_events' columns (FixedString(32)). FROZEN.
CONTENT_SHA256_SQL = "SHA256(concat('" + CONTENT_TAG + "', " + ", ".join(_field_sql(c) for c in CONTENT_COLUMNS) + "))"


def content_sha256(row: dict[str, Any]) -> bytes:
    """The same hash in Python, from a row as selected (dict by column): the reference for the SQL above and
    for anyone re-checking an exported event outside ClickHouse."""
    parts = [CONTENT_TAG.encode()]
    for col in CONTENT_COLUMNS:
        v = row[col]
        if v is None:
            parts.append(b"~")
            continue
        text = str(epoch_ms(v)) if col == "occurred_at" else str(v)
        b = text.encode("utf-8")
        parts.append(str(len(b)).encode() + b":" + b)
    return hashlib.sha256(b"".join(parts)).digest()
