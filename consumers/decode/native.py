"""Rows -> one ClickHouse ``Native`` block: how the consumer hands its rows to the store.

Contract:
- :class:`NativeEncoder` is built from the column type names of ``audit_events`` as the store reports them
  (:meth:`auditlogkit.consumers.store.inserter.Inserter.column_types`), so the bytes always match the live table;
- :meth:`NativeEncoder.encode` turns rows in :data:`auditlogkit.schemas.rows.EVENT_COLUMNS` order into one self-contained
  Native block (column count, row count, then name, type and data of each column), written by clickhouse-connect's
  own column serialisers: the same values as ``client.insert`` would send;
- blocks concatenate: ``b"".join(blocks)`` is a valid Native stream for one INSERT. ClickHouse keeps the
  blocks apart and derives one deduplication token per block from the INSERT's token, so a retry deduplicates
  only when it sends the same blocks (the worker's retries do: a batch's blocks are fixed once decoded).
It needs no connection, so it runs in the decode processes (:mod:`auditlogkit.consumers.decode.pool`) as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.common import write_leb128
from clickhouse_connect.driver.insert import InsertContext

from auditlogkit.schemas.rows import EVENT_COLUMNS
from auditlogkit.schemas.tables import EVENTS_TABLE


class NativeEncoder:
    def __init__(self, type_names: Sequence[str], columns: Sequence[str] = EVENT_COLUMNS) -> None:
        if len(type_names) != len(columns):
            raise ValueError(f"{len(type_names)} column types for {len(columns)} columns")
        self._types = [get_from_name(n) for n in type_names]
        self._heads = [_leb_str(c) + _leb_str(t.insert_name) for c, t in zip(columns, self._types, strict=True)]
        self._ctx = InsertContext(EVENTS_TABLE, list(columns), self._types, column_oriented=True)

    def encode(self, rows: Sequence[tuple[Any, ...]], tail: Sequence[Sequence[Any]] = ()) -> bytes:
        """One Native block holding ``rows`` (empty bytes for no rows). With ``tail``, the rows hold only the
        leading columns and ``tail`` the values of the last ``len(tail)`` columns, column by column."""
        if not rows:
            return b""
        out = bytearray()
        write_leb128(len(self._types), out)
        write_leb128(len(rows), out)
        columns = [*zip(*rows, strict=True), *tail]
        for head, typ, column in zip(self._heads, self._types, columns, strict=True):
            out += head
            typ.write_column(column, out, self._ctx)
        return bytes(out)


def _leb_str(s: str) -> bytes:
    out = bytearray()
    data = s.encode()
    write_leb128(len(data), out)
    return bytes(out + data)
