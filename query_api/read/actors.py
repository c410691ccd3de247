"""Autocomplete of actor e-mails from the aggregated ``audit_actors`` table (migration 0020).

Contract: :func:`suggest` returns at most ``limit`` distinct e-mails of the caller's scope whose lower-cased form
starts with the ``prefix`` lower-cased the same way (``lowerUTF8``), alphabetically, each with the time it was last
seen. The lookup is a primary-key range on (org_id, email_key), not a scan of events. The scope is exactly the
event list's: a workspace admin sees an e-mail only if it was seen on an event of one of its workspaces (rows of
events without a workspace, ``workspace_id = ''``, are never in its scope: :meth:`ScopedQuery.aggregated`).
"""

from __future__ import annotations

from typing import Any

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
