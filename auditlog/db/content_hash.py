"""The content hash of a stored event: its versions, each one definition as a ClickHouse expression and in Python.

Contract: a version (:class:`ContentHash`, in :data:`CONTENT_HASHES`) is the SHA-256 of its tag and each of its
columns as ``<byte length>:<text>`` (``~`` for NULL; ``occurred_at`` as epoch milliseconds). Its column list is a
FROZEN literal (:data:`CONTENT_COLUMNS_V1`), never derived from the table's columns (``schemas/columns.py``): a
column added to ``audit_events`` changes no stored event's hash. Changing a version's columns, tag or
serialization makes every digest recorded with it disagree: a different hash is a new version.
:data:`CONTENT_VERSION` is the version digests are recorded with: migration 0040's view writes
:data:`CONTENT_SHA256_SQL` at insert, the consumer's first-write check and the conflicts table use the same;
the verifier (:mod:`auditlogkit.server.db.integrity`) recomputes the version whose tag the store's digest view writes
(:func:`version_in`). :func:`content_sha256` is the Python reference.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from auditlogkit.schemas.event import epoch_ms

#: Version 1's columns, in hash order: every EVENT.md field, no provenance. FROZEN (written out, not derived).
CONTENT_COLUMNS_V1: tuple[str, ...] = (
    "org_id", "occurred_at", "event_id", "schema_version", "workspace_id", "scope", "category", "action",
    "status", "actor_id", "actor_email", "actor_type", "actor_ip", "actor_user_agent", "target_type", "target_id",
    "target_name", "description", "detail", "source", "request_id",
)
#: How a column becomes text before length-prefixing (default ``toString(col)``; NULL stays NULL).
_AS_TEXT = {"occurred_at": "toString(toUnixTimestamp64Milli(occurred_at))"}


@dataclass(frozen=True, slots=True)
class ContentHash:
    """One version of the content hash: its tag (the first bytes hashed) and its columns, in hash order."""

    version: int
    tag: str
    columns: tuple[str, ...]

    @property
    def sql(self) -> str:
        """The hash as a ClickHouse expression over audit_events' columns (FixedString(32))."""
        return f"SHA256(concat('{self.tag}', " + ", ".join(_field_sql(c) for c in self.columns) + "))"

    def digest(self, row: dict[str, Any]) -> bytes:
        """The same hash in Python, from a row as selected (dict by column; other keys ignored)."""
        parts = [self.tag.encode()]
        for col in self.columns:
            v = row[col]
            if v is None:
                parts.append(b"~")
                continue
            text = str(epoch_ms(v)) if col == "occurred_at" else str(v)
            b = text.encode("utf-8")
            parts.append(str(len(b)).encode() + b":" + b)
        return hashlib.sha256(b"".join(parts)).digest()


def _field_sql(col: str) -> str:
    v = _AS_TEXT.get(col, f"toString({col})")
    return f"ifNull(concat(toString(length({v})), ':', {v}), '~')"


#: Every version, by number. A new version is added here (with its own written-out columns), never edited.
CONTENT_HASHES: dict[int, ContentHash] = {
    1: ContentHash(1, "auditlog-content-v1", CONTENT_COLUMNS_V1),
}
#: The version digests are recorded with (the one migration 0040's view writes).
CONTENT_VERSION = 1

CONTENT_TAG = CONTENT_HASHES[CONTENT_VERSION].tag
CONTENT_COLUMNS: tuple[str, ...] = CONTENT_HASHES[CONTENT_VERSION].columns
#: The recorded version as a ClickHouse expression. FROZEN.
CONTENT_SHA256_SQL = CONTENT_HASHES[CONTENT_VERSION].sql


def content_sha256(row: dict[str, Any], version: int = CONTENT_VERSION) -> bytes:
    """The hash of ``version`` in Python, from a row as selected (dict by column): the reference for the SQL
    and for anyone re-checking an exported event outside ClickHouse."""
    return CONTENT_HASHES[version].digest(row)


def version_in(sql: str) -> int | None:
    """The version whose hash ``sql`` (e.g. a digest view's query) computes, by its quoted tag; None: none."""
    found = [v for v, h in CONTENT_HASHES.items() if f"'{h.tag}'" in sql]
    return found[0] if len(found) == 1 else None
