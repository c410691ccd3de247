"""``splunk_hec``: the batch to a Splunk HTTP Event Collector.

Contract: ``POST {url}/services/collector/event`` with ``Authorization: Splunk <token>`` and the events as
concatenated JSON objects ``{"time": <occurred_at, epoch seconds with milliseconds>, "source": "auditlog",
"sourcetype": <sourcetype, default "auditlog:event">, "index": <index, when set>, "event": <event>}``, in the
batch's order. A 2xx reply means delivered (HEC answers ``{"text": "Success", "code": 0}``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from auditlogkit.query_api.streams.destinations.base import Context, Field, Outcome
from auditlogkit.query_api.streams.destinations.http import post

TYPE = "splunk_hec"
FIELDS = (Field("url", url=True), Field("token", secret=True, max_chars=512), Field("index", required=False),
          Field("sourcetype", required=False))
PATH = "/services/collector/event"


def epoch(ts: str) -> float:
    """RFC 3339 text as epoch seconds with milliseconds."""
    return round(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp(), 3)


def body(batch: list[dict[str, Any]], fields: dict[str, str]) -> bytes:
    out: list[bytes] = []
    for event in batch:
        entry: dict[str, Any] = {"time": epoch(event["occurred_at"]), "source": "auditlog",
                                 "sourcetype": fields.get("sourcetype") or "auditlog:event"}
        if fields.get("index"):
            entry["index"] = fields["index"]
        entry["event"] = event
        out.append(json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    return b"\n".join(out)


async def send(batch: list[dict[str, Any]], ctx: Context) -> Outcome:
    url = ctx.fields["url"].rstrip("/") + PATH
    headers = {"Content-Type": "application/json", "Authorization": f"Splunk {ctx.secrets['token']}",
               "X-Splunk-Request-Channel": ctx.stream_id}
    return await post(ctx, url, body(batch, dict(ctx.fields)), headers)
