"""Autocomplete of actor e-mails from the aggregated ``audit_actors`` table (migration 0020).

Contract: :func:`suggest` returns at most ``limit`` distinct e-mails of the caller's scope whose lower-cased form
starts with the ``prefix`` lower-cased the same way (``lowerUTF8``), alphabetically, each with the time it was last
seen. The lookup is a primary-key range on (org_id, email_key), not a scan of events. The scope is exactly the
event list's: a workspace admin sees an e-mail only if it was seen on an event of one of its workspaces (rows of
events without a workspace, ``workspace_id = ''``, are never in its scope: :meth:`ScopedQuery.aggregated`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from auditlogkit.query_api.read.filters import ascii_lower
from auditlogkit.query_api.read.recent import TableChanges, watch
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.event import as_utc, format_ts
from auditlogkit.schemas.tables import ACTORS_TABLE
from auditlogkit.server.store import Store

MIN_PREFIX = 2
MAX_RESULTS = 20


def suggest(store: Store, sq: ScopedQuery, prefix: str, limit: int = MAX_RESULTS) -> list[dict[str, Any]]:
    sq.aggregated()  # '' is "no workspace" in this table
    # lower-cased by ClickHouse, like email_key itself (Python's str.lower differs for some letters)
    sq.add("startsWith(email_key, lowerUTF8({a_prefix:String}))", a_prefix=prefix)
    sql = (f"SELECT actor_email, max(last_seen) AS last_seen FROM {ACTORS_TABLE} "
           f"WHERE {sq.where()} GROUP BY actor_email ORDER BY lowerUTF8(actor_email), actor_email LIMIT {{lim:UInt32}} "
           "SETTINGS max_threads = 1")  # a key range in a few small parts: more threads only cost their start
    out = []
    for email, last_seen in store.client().query(sql, parameters={**sq.params, "lim": limit}).result_rows:
        out.append({"email": email, "last_seen": format_ts(as_utc(last_seen))})
    return out


@dataclass(frozen=True, slots=True)
class _Held:
    reading: tuple[int, ...]  # the table's directories when read
    settled: bool  # TableChanges.reading's: an equal reading later means nothing new
    rows: list[tuple[str, str, str, datetime]]  # (email_key, actor_email, workspace_id, last_seen), sorted


class ActorsWindow:
    """Each organization's actor e-mails held in memory on the embedded engine, re-read whenever ``audit_actors``
    changed: :meth:`suggest` answers exactly as :func:`suggest` would, or None (a non-ASCII prefix, whose
    ``lowerUTF8`` Python does not reproduce; a store that is not the embedded engine: nothing to watch without a
    query). At most ``max_orgs`` organizations, the least recently asked dropped first."""

    def __init__(self, store: Store, max_orgs: int = 64) -> None:
        self.store, self.max_orgs = store, max_orgs
        self._changes: TableChanges | None = None
        self._watched = False
        self._orgs: OrderedDict[str, _Held] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"served": 0, "declined": 0, "reads": 0}

    def suggest(self, sq: ScopedQuery, prefix: str, limit: int = MAX_RESULTS) -> list[dict[str, Any]] | None:
        if not prefix.isascii():
            self.stats["declined"] += 1
            return None
        p = sq.principal
        with self._lock:
            if not self._watched:
                self._changes, self._watched = watch(self.store, ACTORS_TABLE)[1], True
            reading = self._changes.reading() if self._changes is not None else None
            if reading is None:
                self.stats["declined"] += 1
                return None
            held = self._orgs.get(p.org_id)
            if held is None or held.reading != reading[0] or not held.settled:
                held = _Held(reading[0], reading[1], self._read(p.org_id))
                self._orgs[p.org_id] = held
                while len(self._orgs) > self.max_orgs:
                    self._orgs.popitem(last=False)
            self._orgs.move_to_end(p.org_id)
            self.stats["served"] += 1
        want = ascii_lower(prefix)
        seen = None if p.is_owner else frozenset(w for w in p.workspaces if w)
        last: dict[str, tuple[str, datetime]] = {}
        for key, email, ws, ts in held.rows:
            if key.startswith(want) and (seen is None or ws in seen):
                prev = last.get(email)
                if prev is None or ts > prev[1]:
                    last[email] = (key, ts)
        ordered = sorted(last.items(), key=lambda kv: (kv[1][0], kv[0]))[:limit]
        return [{"email": email, "last_seen": format_ts(as_utc(ts))} for email, (_, ts) in ordered]

    def _read(self, org_id: str) -> list[tuple[str, str, str, datetime]]:
        self.stats["reads"] += 1
        rows = self.store.client().query(
            f"SELECT email_key, actor_email, workspace_id, max(last_seen) FROM {ACTORS_TABLE} "
            "WHERE org_id = {o:String} GROUP BY email_key, actor_email, workspace_id SETTINGS max_threads = 1",
            parameters={"o": org_id}).result_rows
        return sorted((str(k), str(e), str(w), t) for k, e, w, t in rows)


def read_suggest(window: ActorsWindow | None, store: Store, sq: ScopedQuery, prefix: str) -> list[dict[str, Any]]:
    """Autocomplete: the actors window's answer when it has one, else :func:`suggest`."""
    if window is not None:
        got = window.suggest(sq, prefix)
        if got is not None:
            return got
    return suggest(store, sq, prefix)
