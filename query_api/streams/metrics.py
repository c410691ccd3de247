"""Prometheus metrics of the log streams' delivery (default ``REGISTRY``: ``/metrics`` of the API in ``auditlog
up``, the deliverer's own in ``auditlog stream``), labelled by stream id; defined once per process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERED = Counter("auditlog_stream_delivered_events", "Events delivered to a stream's destination.", ["stream"])
LAG = Gauge("auditlog_stream_lag_seconds", "Age of the oldest stored event a stream has not delivered (0: caught "
            "up), as of its last read.", ["stream"])
FAILURES = Counter("auditlog_stream_failures", "Failed sends of a batch to a stream's destination (each attempt).",
                   ["stream"])
