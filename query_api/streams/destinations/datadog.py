"""``datadog``: the batch to Datadog's log intake, in requests of at most 1,000 entries and 5 MB.

Contract: ``POST {url}/api/v2/logs`` with ``DD-API-KEY: <api_key>`` and a JSON array of ``{"ddsource":
"auditlog", "service": <service, default "auditlog">, "ddtags": "org_id:…,category:…,action:…,status:…",
"message": "<the event as JSON text>"}``, in the batch's order. A batch is split (:func:`parts`) so that no request
has more than :data:`MAX_ENTRIES` entries or :data:`MAX_BYTES` bytes; the parts Datadog accepted are not sent
again on a retry of the batch. A 2xx reply (Datadog answers 202) for every part means delivered.
"""

from __future__ import annotations

import json
from typing import Any

from auditlogkit.query_api.streams.destinations.base import Context, Field, Outcome, delivered
from auditlogkit.query_api.streams.destinations.http import post

TYPE = "datadog"
FIELDS = (Field("url", url=True), Field("api_key", secret=True, max_chars=512), Field("service", required=False))
PATH = "/api/v2/logs"
MAX_ENTRIES = 1_000
MAX_BYTES = 5 * 1024 * 1024
_TAG_KEYS = ("org_id", "category", "action", "status")


def _tag(value: Any) -> str:
    return str(value).replace(",", "_")


def entry(event: dict[str, Any], service: str) -> bytes:
    """One log entry as JSON bytes."""
    tags = ",".join(f"{k}:{_tag(event.get(k, ''))}" for k in _TAG_KEYS)
    message = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return json.dumps({"ddsource": "auditlog", "service": service, "ddtags": tags, "message": message},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parts(batch: list[dict[str, Any]], service: str, max_entries: int = MAX_ENTRIES,
          max_bytes: int = MAX_BYTES) -> list[bytes]:
    """The request bodies of ``batch`` (JSON arrays within both limits, in order)."""
    bodies: list[bytes] = []
    current: list[bytes] = []
    size = 2
    for event in batch:
        e = entry(event, service)
        if current and (len(current) >= max_entries or size + len(e) + 1 > max_bytes):
            bodies.append(b"[" + b",".join(current) + b"]")
            current, size = [], 2
        current.append(e)
        size += len(e) + 1
    if current:
        bodies.append(b"[" + b",".join(current) + b"]")
    return bodies


async def send(batch: list[dict[str, Any]], ctx: Context) -> Outcome:
    url = ctx.fields["url"].rstrip("/") + PATH
    headers = {"Content-Type": "application/json", "DD-API-KEY": ctx.secrets["api_key"]}
    done: set[int] = ctx.state.setdefault("done", set())
    last: Outcome = delivered()
    for i, body in enumerate(parts(batch, ctx.fields.get("service") or "auditlog")):
        if i in done:
            continue
        last = await post(ctx, url, body, headers)
        if not last.delivered:
            return last
        done.add(i)
    return last
