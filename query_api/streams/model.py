"""A stream as the repository returns it: its configuration and where its delivery stands.

Contract:
- :class:`Stream` is one stream (its destination's secrets opened, never in a repr); :attr:`Stream.status` is what
  the API shows as ``state``: ``paused`` when its owner paused it, else ``failing`` while its delivery fails, else
  ``active``; :meth:`Stream.public` is its JSON for the API (secrets masked, ``"••••"`` + last 4) without
  ``lag_seconds``, which takes a read of the events (:func:`auditlogkit.query_api.streams.reader.lag_seconds`);
- :class:`Delivery` is the stream's row of ``audit_stream_positions``: the position (per Kafka partition the last
  offset passed, as :mod:`auditlogkit.query_api.read.tail_position`), events delivered, the last delivery, ``failing`` and the
  last error ``{"at", "message", "http_status"}``; ``version`` orders its rows (a later lease term wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from auditlogkit.query_api.read.tail_position import Position
from auditlogkit.query_api.streams.config import DestinationConfig
from auditlogkit.query_api.streams.keys import mask
from auditlogkit.schemas.event import format_ts


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a stream's delivery stands (module contract)."""

    position: Position = field(default_factory=dict)
    delivered: int = 0
    last_delivered_at: datetime | None = None
    failing: bool = False
    last_error: dict[str, Any] | None = None
    version: int = 0

    def error_json(self) -> dict[str, Any] | None:
        return dict(self.last_error) if self.last_error else None


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream (module contract)."""

    id: str
    org_id: str
    name: str
    destination: DestinationConfig
    filters: dict[str, Any]
    state: str
    """The owner's choice: ``active`` or ``paused``."""
    start_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int
    delivery: Delivery | None = None
    """None until its first row is read (a stream being created)."""
    secrets_error: str | None = None
    """Why the destination's secrets did not open with this process's key (then :attr:`destination` has none)."""

    @property
    def status(self) -> str:
        if self.state == "paused":
            return "paused"
        return "failing" if self.delivery is not None and self.delivery.failing else "active"

    def with_delivery(self, delivery: Delivery) -> Stream:
        return replace(self, delivery=delivery)

    def public(self) -> dict[str, Any]:
        """The stream as the API shows it (module contract)."""
        d = self.delivery or Delivery()
        dest: dict[str, Any] = {"type": self.destination.type, **self.destination.fields}
        dest.update({k: mask(v) for k, v in self.destination.secrets.items()})
        return {"id": self.id, "name": self.name, "destination": dest, "filters": dict(self.filters),
                "state": self.status, "delivered": d.delivered, "last_delivered_at": _ts(d.last_delivered_at),
                "last_error": d.error_json(), "start": _ts(self.start_at or self.created_at),
                "created_at": _ts(self.created_at), "updated_at": _ts(self.updated_at)}


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: the stream, its term, the holder, and the local (monotonic) time until which the holder may
    be sending (the store's expiry minus a margin)."""

    stream_id: str
    term: int
    holder: str
    deadline: float
