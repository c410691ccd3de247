"""A live tail's position in the stored log, its opaque text (the SSE ``id``) and its SQL.

Contract:
- a :class:`Position` maps each Kafka partition of the events topic to the offset of the last stored row passed
  (a partition it does not name: nothing of it passed yet);
- the consumer makes a partition's rows visible in offset order, so "the rows after a position" is exact: no row
  at or below it appears later (on a sharded cluster only with synchronous distributed inserts);
- :func:`encode` / :func:`decode` round-trip a position through a short URL-safe text MACed with the server's
  :attr:`~auditlogkit.server.signing.Purpose.TAIL_POSITION` key over the position and the topic's name (16 bytes of MAC);
  :func:`decode` raises :class:`ValueError` for anything this server secret did not make for this topic (another
  topic or secret, an edit, the old unsigned form, junk), so a client can only resume where it was sent;
- :func:`after_sql` / :func:`between_sql` are conditions with bound parameters only (``{tp_…:UInt32}``,
  ``{to_…:UInt64}``); the ``idx_position`` minmax index (migration 0050) lets ClickHouse skip older granules.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from auditlogkit.server.signing import Purpose, ServerKeys

Position = dict[int, int]
MAX_PARTITIONS = 10_000
MAX_OFFSET = (1 << 63) - 1
_VERSION = b"2"
MAC_BYTES = 16


def _signed(topic: str, raw: bytes) -> bytes:
    return topic.encode("utf-8") + b"\x00" + raw


def encode(position: Mapping[int, int], topic: str, keys: ServerKeys) -> str:
    """The opaque, signed text of ``position`` (partitions in order) for ``topic``."""
    body = ",".join(f"{p}:{o}" for p, o in sorted(position.items()))
    raw = _VERSION + b"|" + body.encode("ascii")
    mac = keys.mac(Purpose.TAIL_POSITION, _signed(topic, raw))[:MAC_BYTES]
    return base64.urlsafe_b64encode(raw + mac).decode("ascii").rstrip("=")


def decode(text: str, topic: str, keys: ServerKeys) -> Position:
    """The position :func:`encode` made for ``topic`` with ``keys``; ValueError otherwise."""
    if not text or len(text) > 200_000:
        raise ValueError("empty or oversized position")
    try:
        signed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a position") from None
    raw, mac = signed[:-MAC_BYTES], signed[-MAC_BYTES:]
    if len(signed) <= MAC_BYTES or not keys.verify(Purpose.TAIL_POSITION, _signed(topic, raw), mac):
        raise ValueError("not a position this server issued for this topic")
    version, _, body = raw.partition(b"|")
    if version != _VERSION:
        raise ValueError("not a position")
    out: Position = {}
    for item in filter(None, body.decode("ascii", "replace").split(",")):
        p_text, _, o_text = item.partition(":")
        if not (p_text.isdigit() and o_text.isdigit()):
            raise ValueError("not a position")
        p, o = int(p_text), int(o_text)
        if p >= MAX_PARTITIONS or o > MAX_OFFSET or p in out:
            raise ValueError("not a position")
        out[p] = o
    return out


def advanced(position: Mapping[int, int], partition: int, offset: int) -> Position:
    """A copy of ``position`` that has passed ``offset`` of ``partition``."""
    out = dict(position)
    if offset > out.get(partition, -1):
        out[partition] = offset
    return out


def highest(a: Mapping[int, int], b: Mapping[int, int]) -> Position:
    """Per partition the further of the two positions (what has passed either)."""
    return {p: max(a.get(p, -1), b.get(p, -1)) for p in {*a, *b}}


def after_sql(position: Mapping[int, int], prefix: str = "a") -> tuple[str, dict[str, Any]]:
    """Rows after ``position``: for a named partition its later offsets, and every row of any other partition."""
    conds: list[str] = []
    params: dict[str, Any] = {}
    for i, (p, o) in enumerate(sorted(position.items())):
        conds.append(f"(kafka_partition = {{{prefix}p{i}:UInt32}} AND kafka_offset > {{{prefix}o{i}:UInt64}})")
        params[f"{prefix}p{i}"], params[f"{prefix}o{i}"] = p, o
    top = max(position, default=-1)
    for p in range(top):  # partitions below the highest named one that it does not name (plain ranges: the
        if p not in position:  # minmax index can use them, a NOT IN it cannot)
            conds.append(f"kafka_partition = {{{prefix}n{p}:UInt32}}")
            params[f"{prefix}n{p}"] = p
    conds.append(f"kafka_partition > {{{prefix}top:Int64}}")
    params[f"{prefix}top"] = top
    return "(" + " OR ".join(conds) + ")", params


def between_sql(low: Mapping[int, int], high: Mapping[int, int], prefix: str = "b") -> tuple[str, dict[str, Any]]:
    """Rows after ``low`` and at or below ``high`` (a partition ``high`` does not name has none)."""
    conds: list[str] = []
    params: dict[str, Any] = {}
    for i, (p, hi) in enumerate(sorted(high.items())):
        lo = low.get(p, -1)
        if hi <= lo:
            continue
        if lo < 0:
            conds.append(f"(kafka_partition = {{{prefix}p{i}:UInt32}} AND kafka_offset <= {{{prefix}h{i}:UInt64}})")
        else:
            conds.append(f"(kafka_partition = {{{prefix}p{i}:UInt32}} AND kafka_offset > {{{prefix}l{i}:UInt64}} "
                         f"AND kafka_offset <= {{{prefix}h{i}:UInt64}})")
            params[f"{prefix}l{i}"] = lo
        params[f"{prefix}p{i}"], params[f"{prefix}h{i}"] = p, hi
    return ("(" + " OR ".join(conds) + ")" if conds else "0"), params
