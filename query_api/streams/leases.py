"""Leases on streams in ``audit_stream_leases``: at most one deliverer sends a stream's events at any time.

Contract:
- a lease is a term of a stream: :meth:`Leases.try_lease` claims term n+1 when term n is free (released, expired by
  the store's clock, or never taken) with one INSERT whose deduplication token is ``lease:<stream>:<n+1>`` and reads
  the term back: of concurrent claims the store keeps the first, so exactly one claimant finds itself the holder
  (the migrator's claims work the same way);
- the holder renews its term (:meth:`Leases.renew_all`, one INSERT for all its streams; same key, later ``seq``)
  while it holds it, and :meth:`Leases.release` frees it (an expiry in the past). Expiries are the store's time
  (``now64``) plus ``seconds``; a :class:`~auditlogkit.query_api.streams.model.Lease`'s ``deadline`` is the holder's local
  time of the request plus ``seconds`` minus :func:`margin`, so a holder that stops sending by its deadline has
  stopped before anyone else can claim the next term;
- the rows of the nil stream id are the deliverers' roll-call (:meth:`Leases.present`, :meth:`Leases.members`),
  from which each deliverer takes its share of the streams.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass

from auditlogkit.query_api.streams.model import Lease
from auditlogkit.schemas.tables import STREAM_LEASES_TABLE as LEASES_TABLE
from auditlogkit.server.store import Store

ROLL_CALL = uuid.UUID(int=0)


def margin(seconds: float) -> float:
    """How long before the store's expiry a holder stops (a fifth of the lease, at least 0.5 s)."""
    return max(0.5, seconds / 5)


@dataclass(frozen=True, slots=True)
class Term:
    """The latest term of a stream: who holds it and whether it is still live (by the store's clock)."""

    term: int
    holder: str
    live: bool


def _seq() -> int:
    return time.time_ns()


class Leases:
    """The lease operations on one store (module contract); every method is one or two short queries."""

    def __init__(self, store: Store, seconds: float) -> None:
        self.store = store
        self.seconds = float(seconds)

    def _ms(self) -> int:
        return int(self.seconds * 1000)

    def _lease(self, stream_id: str, term: int, holder: str, t0: float) -> Lease:
        return Lease(stream_id, term, holder, t0 + self.seconds - margin(self.seconds))

    def current(self, stream_ids: list[str] | None = None) -> dict[str, Term]:
        """The latest term of every stream (of ``stream_ids``) that has one."""
        where = "stream_id != {nil:UUID}" + (" AND stream_id IN {ids:Array(UUID)}" if stream_ids is not None else "")
        params: dict[str, object] = {"nil": ROLL_CALL}
        if stream_ids is not None:
            params["ids"] = [uuid.UUID(s) for s in stream_ids]
        sql = (f"SELECT stream_id, argMax(tuple(term, holder, expires_at > now64(3)), (term, seq)) FROM {LEASES_TABLE} "
               f"WHERE {where} GROUP BY stream_id")
        rows = self.store.client().query(sql, parameters=params).result_rows
        return {str(sid): Term(int(t[0]), str(t[1]), bool(t[2])) for sid, t in rows}

    def _insert(self, stream_id: str, term: int, holder: str, expire_ms: int | None, token: str | None = None) -> None:
        expiry = "toDateTime64(0, 3, 'UTC')" if expire_ms is None else "now64(3) + toIntervalMillisecond({ms:UInt32})"
        params = {"sid": uuid.UUID(stream_id), "term": term, "holder": holder, "seq": _seq(), "ms": expire_ms or 0}
        settings = {"insert_deduplication_token": token} if token else None
        self.store.client().command(
            f"INSERT INTO {LEASES_TABLE} (stream_id, term, holder, expires_at, seq) "
            f"SELECT {{sid:UUID}}, {{term:UInt64}}, {{holder:String}}, {expiry}, {{seq:UInt64}}",
            parameters=params, settings=settings)

    def try_lease(self, stream_id: str, holder: str) -> Lease | None:
        """The lease of ``stream_id`` for ``holder`` when its current term is free and this claim wins, else None."""
        latest = self.current([stream_id]).get(stream_id)
        if latest is not None and latest.live:
            return None
        term = (latest.term if latest else 0) + 1
        t0 = time.monotonic()
        self._insert(stream_id, term, holder, self._ms(), token=f"lease:{stream_id}:{term}")
        rows = self.store.client().query(
            f"SELECT holder FROM {LEASES_TABLE} WHERE stream_id = {{sid:UUID}} AND term = {{term:UInt64}} "
            "ORDER BY seq LIMIT 1", parameters={"sid": uuid.UUID(stream_id), "term": term}).result_rows
        if not rows or rows[0][0] != holder:
            return None
        newer = self.current([stream_id]).get(stream_id)
        if newer is None or newer.term != term:
            return None
        return self._lease(stream_id, term, holder, t0)

    def renew_all(self, leases: list[Lease]) -> dict[str, Lease | None]:
        """Each lease renewed (None: it is no longer this holder's, or its deadline passed: claim it again)."""
        out: dict[str, Lease | None] = {}
        if not leases:
            return out
        t0 = time.monotonic()
        latest = self.current([lease.stream_id for lease in leases])
        keep = []
        for lease in leases:
            cur = latest.get(lease.stream_id)
            ok = cur is not None and cur.term == lease.term and cur.holder == lease.holder and lease.deadline > t0
            out[lease.stream_id] = None
            if ok:
                keep.append(lease)
        if keep:
            rows = [(uuid.UUID(lease.stream_id), lease.term, lease.holder, _seq()) for lease in keep]
            self.store.client().command(
                f"INSERT INTO {LEASES_TABLE} (stream_id, term, holder, expires_at, seq) "
                "SELECT r.1, r.2, r.3, now64(3) + toIntervalMillisecond({ms:UInt32}), r.4 "
                "FROM (SELECT arrayJoin({rows:Array(Tuple(UUID, UInt64, String, UInt64))}) AS r)",
                parameters={"rows": rows, "ms": self._ms()})
            for lease in keep:
                out[lease.stream_id] = self._lease(lease.stream_id, lease.term, lease.holder, t0)
        return out

    def release(self, lease: Lease) -> None:
        """Free ``lease`` at once (when it is still this holder's term)."""
        cur = self.current([lease.stream_id]).get(lease.stream_id)
        if cur is not None and cur.term == lease.term and cur.holder == lease.holder:
            self._insert(lease.stream_id, lease.term, lease.holder, None)

    # ----- roll-call -------------------------------------------------------------------------------------------
    @staticmethod
    def _member_term(holder: str) -> int:
        return int.from_bytes(hashlib.sha256(holder.encode()).digest()[:8], "big") >> 1

    def present(self, holder: str, leaving: bool = False) -> None:
        """Say that ``holder`` delivers (for ``seconds``), or that it leaves."""
        self._insert(str(ROLL_CALL), self._member_term(holder), holder, None if leaving else self._ms())

    def members(self) -> list[str]:
        """The deliverers present now, sorted."""
        sql = (f"SELECT holder FROM {LEASES_TABLE} WHERE stream_id = {{nil:UUID}} GROUP BY holder "
               "HAVING argMax(expires_at, seq) > now64(3) ORDER BY holder")
        return [str(r[0]) for r in self.store.client().query(sql, parameters={"nil": ROLL_CALL}).result_rows]
