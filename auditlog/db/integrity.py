"""Tamper evidence for ``audit_events`` (``auditlog verify``): the content hash, the verifier, checkpoints.

Contract:
- ``audit_event_digests`` (migration 0040) holds one row per row ever inserted into ``audit_events``, written by
  a materialized view in the same INSERT; only the retention TTL removes rows; no auditlog role may alter it;
- the content hash is :mod:`auditlogkit.server.db.content_hash`: per version a FROZEN, written-out column list
  (:data:`CONTENT_COLUMNS_V1`: every EVENT.md field, no provenance; never derived from the table's columns, so
  adding a column changes no recomputed hash); :data:`CONTENT_SHA256_SQL` is the version digests are recorded
  with, :func:`content_sha256` its Python reference;
- :func:`recorded_hash`: the version the store's digest view writes (by its tag), the one :func:`verify`
  recomputes; a view writing a tag this code does not know raises :class:`UnknownHashVersion`;
- :func:`verify` compares, per (org_id, event_id), the hashes recorded at insert with those of the rows stored
  now and returns a :class:`Report` (counts per :data:`STATUSES`, a few ids per finding);
- :func:`make_checkpoint` / :func:`check_against`: a SHA-256 root over the digests kept outside ClickHouse,
  which exposes a rewrite of the digest table itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from auditlogkit.schemas.tables import CONFLICTS_TABLE, DIGESTS_TABLE, EVENTS_TABLE
from auditlogkit.server.db.content_hash import (
    CONTENT_COLUMNS as CONTENT_COLUMNS,  # the verifier's hash: content_hash.py's
)
from auditlogkit.server.db.content_hash import CONTENT_COLUMNS_V1 as CONTENT_COLUMNS_V1
from auditlogkit.server.db.content_hash import CONTENT_HASHES, CONTENT_VERSION, ContentHash, version_in
from auditlogkit.server.db.content_hash import CONTENT_SHA256_SQL as CONTENT_SHA256_SQL
from auditlogkit.server.db.content_hash import content_sha256 as content_sha256
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store


def _log() -> Any:
    return get_logger("auditlogkit.server.db.integrity")  # not cached at import: `auditlog verify` configures logging first

# ----- verify -------------------------------------------------------------------------------------------
STATUSES: tuple[str, ...] = ("verified", "altered", "deleted", "unrecorded", "conflicting", "expired")
#: Statuses that make ``auditlog verify`` exit 1.
FINDINGS: tuple[str, ...] = ("altered", "deleted", "unrecorded", "conflicting")


class UnknownHashVersion(RuntimeError):
    """The store's digest view writes a content hash this code does not know (a newer auditlog migrated it)."""


def recorded_hash(store: Store) -> ContentHash:
    """The content-hash version the digests of ``store`` are recorded with: the one whose tag its digest view
    (migration 0040, ``<digests>_mv``) computes. Without the view (dropped: rows inserted since show as
    ``unrecorded``): :data:`CONTENT_VERSION`."""
    rows = store.client().query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {view:String}",
        parameters={"db": store.database, "view": f"{DIGESTS_TABLE}_mv"}).result_rows
    if not rows:
        return CONTENT_HASHES[CONTENT_VERSION]
    version = version_in(str(rows[0][0]))
    if version is None:
        raise UnknownHashVersion(f"{store.database}.{DIGESTS_TABLE}_mv computes a content hash of none of the "
                                 f"versions {sorted(CONTENT_HASHES)} (tags {[h.tag for h in CONTENT_HASHES.values()]})")
    return CONTENT_HASHES[version]


@dataclass
class Report:
    counts: dict[str, int]
    samples: dict[str, list[tuple[str, str]]]  # status -> [(org_id, event_id)]
    cutoff: datetime | None

    @property
    def clean(self) -> bool:
        return not any(self.counts.get(s, 0) for s in FINDINGS)


def retention_cutoff(store: Store, margin_days: float, now: datetime | None = None) -> datetime | None:
    """Oldest ``occurred_at`` still checked: rows older than (retention - margin) may already be gone from one
    table and not yet from the other (TTL merges run at different times). None: no retention TTL."""
    from auditlogkit.server.db.migrations import ttl_days

    days = ttl_days(store)
    if days is None:
        return None
    return (now or datetime.now(UTC)) - timedelta(days=days) + timedelta(days=margin_days)


def verify(store: Store, *, org: str | None = None, margin_days: float = 2.0, sample: int = 20,
           now: datetime | None = None, recheck_seconds: float = 10.0) -> Report:
    """Compare every stored row of ``audit_events`` (optionally one org's) with the digests recorded at insert.

    Per (org_id, event_id): ``deleted`` = digests but no row; ``unrecorded`` = rows but no digest; ``altered``
    = a stored row whose content hash is none of the recorded ones; ``conflicting`` = the id arrived again with
    other content (kept aside in ``audit_event_conflicts``: the record is unchanged), or was recorded with
    different content (a replacement row inserted past the consumer); ``verified`` otherwise;
    ``expired`` = newer than nothing within the retention cutoff (not checked). Every physical row is checked,
    not only what FINAL shows, so a superseded copy cannot be edited unnoticed either. An insert in progress
    shows its row before the view has written its digest (or the reverse), and a busy or deprioritised inserter
    can keep that gap open for seconds: ``deleted`` and ``unrecorded`` ids are looked at again every
    :data:`_RECHECK_EVERY` seconds and count only if they are still there after ``recheck_seconds``.
    """
    cutoff = retention_cutoff(store, margin_days, now)
    params: dict[str, Any] = {"cutoff": cutoff or datetime(1970, 1, 1, tzinfo=UTC)}
    if org is not None:
        params["org"] = org
    hash_sql = recorded_hash(store).sql
    per_id = _per_id_sql(org, hash_sql)
    sql = f"SELECT status, count() AS n, groupArray({int(sample)})((org_id, toString(event_id))) AS ids, " \
          f"if(status IN ('deleted', 'unrecorded'), groupArray({_RECHECK_MAX})((org_id, toString(event_id))), []) " \
          f"FROM ({per_id}) GROUP BY status"
    counts = dict.fromkeys(STATUSES, 0)
    samples: dict[str, list[tuple[str, str]]] = {}
    transient: dict[tuple[str, str], str] = {}  # (org_id, event_id) -> deleted | unrecorded, same snapshot
    for status, n, ids, all_ids in store.client().query(sql, parameters=params).result_rows:
        counts[str(status)] = int(n)
        samples[str(status)] = [(str(o), str(e)) for o, e in ids]
        transient.update({(str(o), str(e)): str(status) for o, e in all_ids})
    if transient and recheck_seconds > 0 and counts["deleted"] + counts["unrecorded"] <= _RECHECK_MAX:
        _recheck(store, params, hash_sql, transient, counts, samples, recheck_seconds, sample)
    report = Report(counts, samples, cutoff)
    for status in FINDINGS:
        if counts[status]:
            _log().warning(f"integrity.{status}", events=counts[status], sample=[e for _, e in samples[status]][:sample])
    _log().info("integrity.verified", org=org, **counts)
    return report


def conflicts(store: Store, org: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` messages of ``org`` that reused a stored (org_id, event_id) with other content (kept
    aside in ``audit_event_conflicts``; the record is unchanged): content, content hash, publisher, position."""
    res = store.client().query(
        f"SELECT toString(event_id), occurred_at, received_at, lower(hex(content_sha256)), content, publisher_via, "
        f"publisher_id, kafka_topic, kafka_partition, kafka_offset FROM {CONFLICTS_TABLE} FINAL "
        "WHERE org_id = {org:String} ORDER BY received_at DESC, kafka_partition, kafka_offset LIMIT {n:UInt32}",
        parameters={"org": org, "n": int(limit)})
    out = []
    for eid, occurred, received, h, content, via, pid, topic, part, off in res.result_rows:
        try:
            body: Any = json.loads(content)
        except ValueError:
            body = None
        out.append({"event_id": eid, "occurred_at": occurred, "received_at": received, "content_sha256": h,
                    "content": body, "publisher": {"via": via, "id": pid},
                    "kafka": {"topic": topic, "partition": int(part), "offset": int(off)}})
    return out


_RECHECK_MAX = 10_000  # more deleted/unrecorded ids than this are reported as found, without a second look
_RECHECK_EVERY = 0.5  # seconds between two looks at the ids still deleted/unrecorded


def _per_id_sql(org: str | None, hash_sql: str, only_ids: bool = False) -> str:
    """One row per (org_id, event_id) with its status (parameters ``cutoff``, ``org``, and ``ids``); a stored
    row's hash is ``hash_sql`` (:func:`recorded_hash`)."""
    conds = [c for c in (
        "org_id = {org:String}" if org is not None else "",
        "event_id IN {ids:Array(UUID)}" if only_ids else "",
    ) if c]
    where = f"WHERE {' AND '.join(conds)}" if conds else ""
    return f"""
        SELECT org_id, event_id,
               multiIf(latest < {{cutoff:DateTime64(3, 'UTC')}}, 'expired',
                       empty(stored), 'deleted',
                       empty(recorded), 'unrecorded',
                       NOT hasAll(recorded, stored), 'altered',
                       length(arrayDistinct(arrayConcat(recorded, aside))) > 1, 'conflicting',
                       'verified') AS status
        FROM (
            SELECT org_id, event_id, max(occurred_at) AS latest,
                   groupUniqArrayIf(h, src = 0) AS recorded, groupUniqArrayIf(h, src = 1) AS stored,
                   groupUniqArrayIf(h, src = 2) AS aside
            FROM (
                SELECT org_id, event_id, occurred_at, content_sha256 AS h, 0 AS src FROM {DIGESTS_TABLE} {where}
                UNION ALL
                SELECT org_id, event_id, occurred_at, {hash_sql} AS h, 1 AS src FROM {EVENTS_TABLE} {where}
                UNION ALL
                SELECT org_id, event_id, occurred_at, content_sha256 AS h, 2 AS src FROM {CONFLICTS_TABLE} {where}
            )
            GROUP BY org_id, event_id
        )"""


def _recheck(store: Store, params: dict[str, Any], hash_sql: str, found: dict[tuple[str, str], str],
             counts: dict[str, int], samples: dict[str, list[tuple[str, str]]], budget: float, sample: int) -> None:
    """Look again at every id ``found`` deleted or unrecorded until each has changed or ``budget`` seconds have
    passed; move those that changed to their new status."""
    c = store.client()
    sql = f"SELECT org_id, toString(event_id), status FROM ({_per_id_sql(params.get('org'), hash_sql, only_ids=True)})"
    pending = dict(found)
    deadline = time.monotonic() + budget
    looks = 0
    while pending and time.monotonic() < deadline:
        time.sleep(min(_RECHECK_EVERY, max(0.0, deadline - time.monotonic())))
        looks += 1
        again = {(str(o), str(e)): str(st) for o, e, st in c.query(
            sql, parameters={**params, "ids": [e for _, e in pending]}).result_rows}
        for key, first in list(pending.items()):
            now_status = again.get(key, first)
            if now_status == first:
                continue
            del pending[key]
            counts[first] -= 1
            counts[now_status] += 1
            samples[first] = [x for x in samples.get(first, []) if x != key]
            if len(samples.setdefault(now_status, [])) < sample:
                samples[now_status].append(key)
    _log().info("integrity.rechecked", ids=len(found), changed=len(found) - len(pending), looks=looks)


# ----- checkpoints --------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    created_at: str
    database: str
    org: str | None
    offsets: dict[str, dict[str, int]]  # topic -> partition -> highest offset covered
    chunks: list[dict[str, Any]]  # {topic, partition, day, count, root}
    count: int = 0
    root: str = ""
    version: int = 1
    cutoff_day: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


def _root(chunks: Sequence[dict[str, Any]]) -> str:
    lines = sorted(f"{c['topic']}\t{c['partition']}\t{c['day']}\t{c['count']}\t{c['root']}\n" for c in chunks)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _chunks(store: Store, org: str | None, bounds: dict[str, dict[str, int]] | None,
            cutoff: datetime | None) -> list[dict[str, Any]]:
    """Per (topic, partition, day of occurred_at): count and SHA-256 over the distinct leaves
    ``<offset>:<content_sha256 hex>\\n`` sorted by (offset, hash), computed in ClickHouse. ``bounds``: only
    offsets up to the covered one per partition (a partition not in ``bounds`` is left out)."""
    conds = ["toDate(occurred_at) >= {cutoff_day:Date}"]
    params: dict[str, Any] = {"cutoff_day": (cutoff.date() if cutoff else date(1970, 1, 1))}
    if org is not None:
        conds.append("org_id = {org:String}")
        params["org"] = org
    if bounds is not None:
        covered = [(f"{t}#{p}", int(o)) for t, parts in bounds.items() for p, o in parts.items()]
        params["keys"] = [k for k, _ in covered]
        params["maxes"] = [o for _, o in covered]
        conds.append("kafka_offset <= arrayElement({maxes:Array(UInt64)}, "
                     "indexOf({keys:Array(String)}, concat(kafka_topic, '#', toString(kafka_partition))))")
        conds.append("has({keys:Array(String)}, concat(kafka_topic, '#', toString(kafka_partition)))")
    sql = f"""
    SELECT kafka_topic, kafka_partition, toString(d) AS day, length(leaves) AS n,
           lower(hex(SHA256(arrayStringConcat(arrayMap(x -> concat(toString(x.1), ':', lower(hex(x.2)), '\\n'),
                                                        arraySort(leaves)))))) AS root,
           max_offset
    FROM (
        SELECT kafka_topic, kafka_partition, toDate(occurred_at) AS d, groupUniqArray((kafka_offset, content_sha256)) AS leaves, max(kafka_offset) AS max_offset
        FROM {DIGESTS_TABLE}
        WHERE {' AND '.join(conds)}
        GROUP BY kafka_topic, kafka_partition, d
    )
    ORDER BY kafka_topic, kafka_partition, day
    """
    rows = store.client().query(sql, parameters=params).result_rows
    return [{"topic": str(t), "partition": int(p), "day": str(d), "count": int(n), "root": str(r),
             "max_offset": int(m)} for t, p, d, n, r, m in rows]


def make_checkpoint(store: Store, *, org: str | None = None, margin_days: float = 2.0,
                    now: datetime | None = None) -> Checkpoint:
    """A checkpoint of the digests stored now (within the retention cutoff)."""
    now = now or datetime.now(UTC)
    cutoff = retention_cutoff(store, margin_days, now)
    chunks = _chunks(store, org, None, cutoff)
    offsets: dict[str, dict[str, int]] = {}
    for c in chunks:
        part = offsets.setdefault(c["topic"], {})
        part[str(c["partition"])] = max(part.get(str(c["partition"]), 0), c.pop("max_offset"))
    cp = Checkpoint(created_at=now.isoformat().replace("+00:00", "Z"), database=store.database, org=org,
                    offsets=offsets, chunks=chunks, count=sum(c["count"] for c in chunks), root=_root(chunks),
                    cutoff_day=cutoff.date().isoformat() if cutoff else None)
    _log().info("integrity.checkpoint", root=cp.root, digests=cp.count, chunks=len(chunks), org=org)
    return cp


@dataclass
class Comparison:
    changed: list[dict[str, Any]]  # {topic, partition, day, then: {count, root} | None, now: ... | None}
    compared: int
    expired: int
    root_then: str
    root_now: str

    @property
    def clean(self) -> bool:
        return not self.changed


def check_against(store: Store, checkpoint: dict[str, Any], *, margin_days: float = 2.0,
                  now: datetime | None = None) -> Comparison:
    """Recompute the checkpoint's chunks over the digests up to its offsets; chunks whose day has left the
    retention window (minus the margin) since are skipped as expired."""
    cutoff = retention_cutoff(store, margin_days, now)
    cutoff_day = cutoff.date().isoformat() if cutoff else "1970-01-01"
    org = checkpoint.get("org")
    bounds = {t: {str(p): int(o) for p, o in parts.items()} for t, parts in checkpoint["offsets"].items()}
    then = {(c["topic"], int(c["partition"]), c["day"]): c for c in checkpoint["chunks"] if c["day"] >= cutoff_day}
    expired = len(checkpoint["chunks"]) - len(then)
    now_chunks = {(c["topic"], c["partition"], c["day"]): c for c in _chunks(store, org, bounds, cutoff)}
    changed = []
    for key in sorted(set(then) | set(now_chunks)):
        a, b = then.get(key), now_chunks.get(key)
        if a and b and a["root"] == b["root"] and a["count"] == b["count"]:
            continue
        changed.append({"topic": key[0], "partition": key[1], "day": key[2],
                        "then": {"count": a["count"], "root": a["root"]} if a else None,
                        "now": {"count": b["count"], "root": b["root"]} if b else None})
    cmp = Comparison(changed, len(then), expired, _root(list(then.values())), _root(list(now_chunks.values())))
    if changed:
        _log().warning("integrity.digests_changed", chunks=len(changed), first=changed[:5],
                    checkpoint=checkpoint.get("root"))
    else:
        _log().info("integrity.checkpoint_matches", chunks=len(then), expired=expired, checkpoint=checkpoint.get("root"))
    return cmp


# ----- command line -------------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check audit_events against the digests recorded at insert (tamper evidence)",
        description="Compare every stored event with the content hash recorded when it was inserted; optionally "
        "write a checkpoint of the digests (keep it outside ClickHouse) or check the digests against an older "
        "checkpoint. Exit 0: clean; 1: something was altered, deleted, unrecorded, conflicting or the digests "
        "changed since the checkpoint.",
    )
    p.add_argument("--org", default=None, help="only this org_id")
    p.add_argument("--checkpoint-out", default=None, metavar="FILE", help="write a checkpoint (JSON) to FILE")
    p.add_argument("--against", default=None, metavar="FILE", help="check the digests against this checkpoint")
    p.add_argument("--margin-days", type=float, default=2.0,
                   help="skip events within this many days of the retention limit [2]")
    p.add_argument("--show", type=int, default=20, help="event ids listed per finding [20]")
    p.add_argument("--data", default=None, help="data directory of the embedded store [AUDITLOG_DATA_DIR]")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from auditlogkit.server.logs import configure

    settings = Settings().with_overrides(data=args.data)
    configure(settings.log_level)
    store = Store.from_settings(settings)
    try:
        if not store.client().query(f"EXISTS TABLE {DIGESTS_TABLE}").result_rows[0][0]:
            print(f"auditlog verify: {store.database}.{DIGESTS_TABLE} does not exist: run `auditlog migrate`",
                  file=sys.stderr)
            return 2
        rc = 0
        try:
            report = verify(store, org=args.org, margin_days=args.margin_days, sample=args.show,
                            recheck_seconds=settings.integrity_recheck_seconds)
        except UnknownHashVersion as unknown:
            print(f"auditlog verify: {unknown}: use the auditlog version that migrated this store", file=sys.stderr)
            return 2
        c = report.counts
        scope = f"org {args.org}" if args.org else "all orgs"
        print(f"verify ({scope}): verified {c['verified']}, altered {c['altered']}, deleted {c['deleted']}, "
              f"unrecorded {c['unrecorded']}, conflicting {c['conflicting']}; "
              f"skipped {c['expired']} older than {report.cutoff.isoformat() if report.cutoff else '-'}")
        for status in FINDINGS:
            for o, e in report.samples.get(status, [])[: args.show]:
                print(f"  {status}: {o} {e}")
        if not report.clean:
            rc = 1
        if args.against:
            cp = json.loads(Path(args.against).read_text(encoding="utf-8"))
            cmp = check_against(store, cp, margin_days=args.margin_days)
            if cmp.clean:
                print(f"digests match checkpoint {cp.get('root', '')[:16]}… of {cp.get('created_at')}: "
                      f"{cmp.compared} chunks ({cmp.expired} expired since)")
            else:
                print(f"DIGESTS CHANGED since checkpoint {cp.get('root', '')[:16]}… of {cp.get('created_at')}: "
                      f"{len(cmp.changed)} of {cmp.compared} chunks differ")
                for ch in cmp.changed[: args.show]:
                    print(f"  changed: {ch['topic']} partition {ch['partition']} day {ch['day']}: "
                          f"{ch['then']} -> {ch['now']}")
                rc = 1
        if args.checkpoint_out:
            cp_new = make_checkpoint(store, org=args.org, margin_days=args.margin_days)
            Path(args.checkpoint_out).write_text(cp_new.to_json() + "\n", encoding="utf-8")
            print(f"checkpoint {cp_new.root} ({cp_new.count} digests) written to {args.checkpoint_out}: "
                  "store it outside ClickHouse")
        return rc
    finally:
        store.close()
