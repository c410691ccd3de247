"""The streams' repository: configuration, delivery status and leases in the store (the HTTP API calls this).

Contract of :class:`StreamStore` (synchronous: call it from a thread, e.g. the API's query runner; every method
uses ``store.client()`` of its thread):
- :meth:`~StreamStore.create`, :meth:`~StreamStore.update` and :meth:`~StreamStore.delete` check what the owner gave
  (:mod:`auditlogkit.query_api.streams.config`, URLs included) and write a new version of the stream's row (version: the time
  in ns, above the current one); a destination's secrets are sealed with the streams key
  (:class:`~auditlogkit.query_api.streams.keys.SecretBox`) and stored nowhere else. A stream created with ``start`` "now"
  starts where the stored log ends at that moment; one with a past ``start`` from the beginning, reading only
  what was stored from ``start`` on. Its delivery row is written before its stream row, so a deliverer never sees
  a stream without a position;
- :meth:`~StreamStore.get` and :meth:`~StreamStore.list` see one org's streams only (a stream id of another org is
  None, like an unknown one); :meth:`~StreamStore.list_all` is the deliverer's (every org);
- :meth:`~StreamStore.save_position` and :meth:`~StreamStore.record_error` are the deliverer's (the holder of the
  stream's lease): a new version of the stream's delivery row;
- :attr:`StreamStore.leases` are the lease operations (:class:`~auditlogkit.query_api.streams.leases.Leases`);
- :meth:`~StreamStore.lag_seconds` is a stream's ``lag_seconds``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.streams import reader
from auditlogkit.query_api.streams.config import (
    DestinationConfig,
    check_destination,
    check_filters,
    check_name,
    check_start,
    check_state,
)
from auditlogkit.query_api.streams.keys import SecretBox, StreamsKeyError
from auditlogkit.query_api.streams.leases import Leases
from auditlogkit.query_api.streams.model import Delivery, Stream
from auditlogkit.query_api.streams.shared_read import SharedRead
from auditlogkit.query_api.streams.ssrf import AllowList, Resolver, system_resolver
from auditlogkit.schemas.catalog import Catalog
from auditlogkit.schemas.tables import STREAM_POSITIONS_TABLE as POSITIONS_TABLE
from auditlogkit.schemas.tables import STREAMS_TABLE
from auditlogkit.server.logs import get_logger
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store

log = get_logger("auditlogkit.query_api.streams.store")
_STREAM_COLUMNS = ("stream_id", "org_id", "name", "destination_type", "destination", "secrets", "filters", "state",
                   "start_at", "created_at", "updated_at", "deleted", "version")
_DELIVERY_COLUMNS = ("stream_id", "position", "delivered", "last_delivered_at", "failing", "last_error", "version")
ERROR_CHARS = 500
Rows = list[dict[str, Any]]  # (aliases: the method ``list`` shadows the builtin inside the class)
Streams = list[Stream]
Ids = list[str]


def _utc(v: datetime | None) -> datetime | None:
    return None if v is None else (v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC))


def _stream_id(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(text))
    except ValueError:
        return None


class StreamStore:
    """The repository (module contract)."""

    def __init__(self, store: Store, box: SecretBox, catalog: Catalog, *, topic: str, retention_days: int = 400,
                 allow: AllowList | None = None, resolver: Resolver = system_resolver, lease_seconds: float = 15.0,
                 detail_max: int = 8192) -> None:
        self.store = store
        self.box = box
        self.catalog = catalog
        self.topic = topic
        self.retention_days = retention_days
        self.allow = allow or AllowList()
        self.resolver = resolver
        self.detail_max = detail_max
        self.leases = Leases(store, lease_seconds)
        self.stored_end = reader.StoredEnd(store, topic)
        """Where the stored log ends, one reading shared by this process's stream workers."""
        self.shared_read = SharedRead(store, topic, catalog, reader.scoped, detail_max=detail_max)
        """The caught-up streams' new rows, one read for all of this process's stream workers."""
        self._unreadable: set[tuple[str, int]] = set()

    @classmethod
    def from_settings(cls, store: Store, settings: Settings, catalog: Catalog, key: bytes,
                      resolver: Resolver = system_resolver) -> StreamStore:
        return cls(store, SecretBox(key), catalog, topic=settings.topic, retention_days=settings.retention_days,
                   allow=AllowList.parse(settings.streams_allow_hosts), resolver=resolver,
                   lease_seconds=settings.streams_lease_seconds, detail_max=settings.api_list_detail_max_bytes)

    # ----- the owner's operations ----------------------------------------------------------------------------
    def create(self, org_id: str, name: str, destination: Mapping[str, Any], filters: Mapping[str, Any] | None = None,
               start: str | datetime | None = "now", stream_id: str | None = None) -> Stream:
        """A new stream of ``org_id`` (module contract); :class:`~auditlogkit.query_api.streams.config.StreamConfigError`.
        ``stream_id``: its id chosen beforehand (the API records the change before making it), else a new one."""
        now = datetime.now(UTC)
        dest = check_destination(destination, self.allow, self.resolver)
        stream = Stream(str(uuid.UUID(stream_id) if stream_id else uuid.uuid4()), org_id, check_name(name), dest, check_filters(filters, self.catalog),
                        "active", check_start(start, self.retention_days, now), now, now, time.time_ns())
        position = reader.stored_position(self.store, self.topic) if stream.start_at is None else {}
        delivery = Delivery(position=position)
        self._write_delivery(stream.id, delivery)
        self._write(stream)
        log.info("stream.created", stream=stream.id, org_id=org_id, destination=dest.type,
                 start=stream.start_at.isoformat() if stream.start_at else "now")
        return stream.with_delivery(delivery)

    def update(self, org_id: str, stream_id: str, *, name: str | None = None, state: str | None = None,
               filters: Mapping[str, Any] | None = None, destination: Mapping[str, Any] | None = None) -> Stream | None:
        """The stream with the given changes (None: no such stream of ``org_id``). ``destination``: fields and
        credentials of the same type (a secret left out keeps its value), or a whole new destination."""
        cur = self.get(org_id, stream_id)
        if cur is None:
            return None
        if cur.secrets_error and destination is None:
            raise StreamsKeyError(f"the stream's secrets do not open with this key ({cur.secrets_error}): give its "
                                  "credentials again")
        changed = Stream(
            cur.id, cur.org_id, check_name(name) if name is not None else cur.name,
            check_destination(destination, self.allow, self.resolver, current=cur.destination)
            if destination is not None else cur.destination,
            check_filters(filters, self.catalog) if filters is not None else cur.filters,
            check_state(state) if state is not None else cur.state, cur.start_at, cur.created_at,
            datetime.now(UTC), max(time.time_ns(), cur.version + 1), cur.delivery)
        self._write(changed)
        log.info("stream.updated", stream=cur.id, org_id=org_id,
                 fields=[k for k, v in (("name", name), ("state", state), ("filters", filters),
                                        ("destination", destination)) if v is not None])
        return changed

    def delete(self, org_id: str, stream_id: str) -> bool:
        """Delete the stream (False: no such stream of ``org_id``); its deliverer stops within a lease period."""
        cur = self._read(org_id, stream_id)
        if not cur:
            return False
        row = dict(cur[0])
        row.update(deleted=1, updated_at=datetime.now(UTC), version=max(time.time_ns(), int(row["version"]) + 1))
        self.store.client().insert(STREAMS_TABLE, [[row[c] for c in _STREAM_COLUMNS]], column_names=list(_STREAM_COLUMNS))
        log.info("stream.deleted", stream=str(row["stream_id"]), org_id=org_id)
        return True

    def get(self, org_id: str, stream_id: str) -> Stream | None:
        rows = self._read(org_id, stream_id)
        return self._with_deliveries(rows)[0] if rows else None

    def list(self, org_id: str) -> Streams:
        """The org's streams, oldest first."""
        return self._with_deliveries(self._read(org_id))

    def list_all(self) -> Streams:
        """Every org's streams (the deliverer's), oldest first."""
        return self._with_deliveries(self._read(None))

    def lag_seconds(self, stream: Stream) -> float:
        return reader.lag_seconds(self.store, self.topic, stream, self.catalog)

    # ----- the deliverer's -----------------------------------------------------------------------------------
    def delivery(self, stream_id: str) -> Delivery | None:
        """The stream's latest delivery row."""
        return self._deliveries([stream_id]).get(stream_id)

    def save_position(self, stream_id: str, current: Delivery, position: Position, events: int,
                      version: int) -> Delivery:
        """After a delivered batch of ``events``: the new position, counted, not failing."""
        new = Delivery(dict(position), current.delivered + events,
                       datetime.now(UTC) if events else current.last_delivered_at,
                       False, current.last_error, version)
        self._write_delivery(stream_id, new)
        return new

    def record_error(self, stream_id: str, current: Delivery, message: str, http_status: int | None,
                     version: int) -> Delivery:
        """After a failed send: failing, with ``last_error``."""
        error = {"at": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "message": message[:ERROR_CHARS],
                 "http_status": http_status}
        new = Delivery(dict(current.position), current.delivered, current.last_delivered_at, True, error, version)
        self._write_delivery(stream_id, new)
        return new

    # ----- rows ----------------------------------------------------------------------------------------------
    def _write(self, s: Stream) -> None:
        sealed = self.box.seal(s.destination.secrets, s.id, s.org_id)
        row = [uuid.UUID(s.id), s.org_id, s.name, s.destination.type, json.dumps(s.destination.fields, sort_keys=True),
               sealed, json.dumps(s.filters, sort_keys=True), s.state, s.start_at, s.created_at, s.updated_at, 0,
               s.version]
        self.store.client().insert(STREAMS_TABLE, [row], column_names=list(_STREAM_COLUMNS))

    def _write_delivery(self, stream_id: str, d: Delivery) -> None:
        row = [uuid.UUID(stream_id), {int(p): int(o) for p, o in d.position.items()}, d.delivered,
               d.last_delivered_at, int(d.failing), json.dumps(d.last_error) if d.last_error else None, d.version]
        self.store.client().insert(POSITIONS_TABLE, [row], column_names=list(_DELIVERY_COLUMNS))

    def _read(self, org_id: str | None, stream_id: str | None = None) -> Rows:
        conds: Ids = ["deleted = 0"]
        params: dict[str, Any] = {}
        if org_id is not None:
            conds.append("org_id = {org:String}")
            params["org"] = org_id
        if stream_id is not None:
            sid = _stream_id(stream_id)
            if sid is None:
                return []
            conds.append("stream_id = {sid:UUID}")
            params["sid"] = sid
        sql = (f"SELECT {', '.join(_STREAM_COLUMNS)} FROM {STREAMS_TABLE} FINAL WHERE {' AND '.join(conds)} "
               "ORDER BY created_at, stream_id")
        return list(self.store.client().query(sql, parameters=params).named_results())

    def _stream(self, r: Mapping[str, Any]) -> Stream:
        sid, org = str(r["stream_id"]), str(r["org_id"])
        error = None
        try:
            secrets = self.box.open(str(r["secrets"]), sid, org)
        except StreamsKeyError as exc:
            secrets, error = {}, str(exc)
            if (sid, int(r["version"])) not in self._unreadable:  # once per version, not at every read
                self._unreadable.add((sid, int(r["version"])))
                log.warning("stream.secrets_unreadable", stream=sid, org_id=org, error=error)
        dest = DestinationConfig(str(r["destination_type"]), dict(json.loads(r["destination"])), secrets)
        return Stream(sid, org, str(r["name"]), dest, dict(json.loads(r["filters"])), str(r["state"]),
                      _utc(r["start_at"]), _utc(r["created_at"]) or datetime.now(UTC),
                      _utc(r["updated_at"]) or datetime.now(UTC), int(r["version"]), secrets_error=error)

    def _deliveries(self, stream_ids: Ids) -> dict[str, Delivery]:
        if not stream_ids:
            return {}
        sql = (f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM {POSITIONS_TABLE} FINAL "
               "WHERE stream_id IN {ids:Array(UUID)}")
        out: dict[str, Delivery] = {}
        for r in self.store.client().query(sql, parameters={"ids": [uuid.UUID(s) for s in stream_ids]}).named_results():
            out[str(r["stream_id"])] = Delivery(
                {int(p): int(o) for p, o in dict(r["position"]).items()}, int(r["delivered"]),
                _utc(r["last_delivered_at"]), bool(r["failing"]),
                json.loads(r["last_error"]) if r["last_error"] else None, int(r["version"]))
        return out

    def _with_deliveries(self, rows: Rows) -> Streams:
        streams = [self._stream(r) for r in rows]
        deliveries = self._deliveries([s.id for s in streams])
        return [s.with_delivery(deliveries[s.id]) if s.id in deliveries else s for s in streams]
