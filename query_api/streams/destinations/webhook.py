"""``webhook``: the batch as NDJSON, POSTed to the owner's URL and signed with the stream's secret.

Contract: ``POST url`` with ``Content-Type: application/x-ndjson``, one event a line (as the list returns it, UTF-8
JSON); ``X-Auditlog-Stream: <stream id>``, ``X-Auditlog-Delivery: <batch id>`` (the same on every retry of the
batch) and ``X-Auditlog-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
(:func:`signature`; a receiver checks it with :func:`verify`). A 2xx reply means delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from auditlogkit.query_api.streams.destinations.base import Context, Field, Outcome
from auditlogkit.query_api.streams.destinations.http import post

TYPE = "webhook"
FIELDS = (Field("url", url=True), Field("secret", secret=True, max_chars=512))


def ndjson(batch: list[dict[str, Any]]) -> bytes:
    """One compact JSON object a line."""
    return b"".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n" for e in batch)


def signature(secret: str, body: bytes, t: int) -> str:
    """The ``X-Auditlog-Signature`` of ``body`` sent at ``t``."""
    mac = hmac.new(secret.encode("utf-8"), f"{t}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and its time is within ``tolerance_s`` of ``now``."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    t_text, mac = parts.get("t", ""), parts.get("v1", "")
    if not t_text.isdigit() or abs((now or time.time()) - int(t_text)) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, body, int(t_text)), f"t={t_text},v1={mac}")


async def send(batch: list[dict[str, Any]], ctx: Context) -> Outcome:
    body = ndjson(batch)
    headers = {"Content-Type": "application/x-ndjson", "X-Auditlog-Stream": ctx.stream_id,
               "X-Auditlog-Delivery": ctx.batch_id,
               "X-Auditlog-Signature": signature(ctx.secrets["secret"], body, int(time.time()))}
    return await post(ctx, ctx.fields["url"], body, headers)
