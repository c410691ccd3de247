"""The destinations' pure parts: the registry finds every module, webhook signatures verify, Splunk and Datadog
bodies, Datadog's split at 1,000 entries / 5 MB, S3 keys, how a reply is read, backoff and batch ids."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime

import httpx

from auditlogkit.query_api.streams.destinations import datadog, destinations, s3, splunk_hec, webhook
from auditlogkit.query_api.streams.destinations.base import Context, Outcome
from auditlogkit.query_api.streams.destinations.http import outcome, retry_after
from auditlogkit.query_api.streams.worker import backoff, batch_id

EVENT = {"event_id": "e-1", "occurred_at": "2026-11-21T09:14:03.512Z", "org_id": "acme", "category": "vm",
         "action": "vm.delete", "status": "SUCCESS", "description": "Deleted VM ü"}


def ctx(**kw: object) -> Context:
    base: dict[str, object] = dict(stream_id="s-1", org_id="acme", batch_id="b-1", fields={"url": "https://x.example"},
                                   secrets={"secret": "top-secret-value-1234"})
    return Context(**{**base, **kw})  # type: ignore[arg-type]


def test_the_registry_finds_every_destination_module() -> None:
    assert set(destinations()) == {"webhook", "splunk_hec", "datadog", "s3"}
    assert [f.name for f in destinations()["webhook"].FIELDS if f.secret] == ["secret"]


def test_a_webhook_signature_verifies_and_binds_body_and_time() -> None:
    body = webhook.ndjson([EVENT, EVENT])
    assert body.count(b"\n") == 2 and "ü".encode() in body
    now = int(time.time())
    header = webhook.signature("k" * 20, body, now)
    assert header.startswith(f"t={now},v1=") and webhook.verify("k" * 20, body, header)
    assert not webhook.verify("k" * 20, body + b"x", header)
    assert not webhook.verify("j" * 20, body, header)
    assert not webhook.verify("k" * 20, body, header, now=now + 3600)


def test_splunk_entries_carry_time_source_and_the_event() -> None:
    lines = [json.loads(x) for x in splunk_hec.body([EVENT], {"index": "audit"}).split(b"\n")]
    assert lines == [{"time": 1795252443.512, "source": "auditlog", "sourcetype": "auditlog:event", "index": "audit",
                      "event": EVENT}]


def test_datadog_splits_by_entries_and_bytes_in_order() -> None:
    batch = [{**EVENT, "event_id": f"e-{i}"} for i in range(2_500)]
    parts = datadog.parts(batch, "auditlog")
    assert [len(json.loads(p)) for p in parts] == [1000, 1000, 500]
    first = json.loads(parts[0])[0]
    assert first["ddtags"] == "org_id:acme,category:vm,action:vm.delete,status:SUCCESS"
    assert json.loads(first["message"]) == batch[0] and first["ddsource"] == "auditlog"
    small = datadog.parts(batch[:10], "svc", max_bytes=900)
    assert all(len(p) <= 900 for p in small)
    assert [json.loads(e["message"])["event_id"] for p in small for e in json.loads(p)] == [f"e-{i}" for i in range(10)]


def test_s3_keys_name_org_day_and_positions_and_bodies_are_stable() -> None:
    c = ctx(fields={"bucket": "b", "prefix": "/logs/", "region": "eu-west-1"}, first=(2, 17), last=(5, 40),
            received_at=datetime(2026, 11, 21, 23, 59, tzinfo=UTC))
    assert s3.object_key(c) == "logs/org_id=acme/date=2026-11-21/2.17-5.40.ndjson.gz"
    assert s3.gz([EVENT]) == s3.gz([EVENT]) and gzip.decompress(s3.gz([EVENT])) == webhook.ndjson([EVENT])
    assert s3.endpoint({"bucket": "b", "region": "eu-west-1"}) == "https://b.s3.eu-west-1.amazonaws.com"


def test_replies_are_read_as_delivered_retryable_or_refused() -> None:
    def reply(status: int, **headers: str) -> Outcome:
        return outcome(httpx.Response(status, headers=headers, text="echo top-secret-value-1234"), ctx())

    assert reply(202).delivered
    r = reply(429, **{"Retry-After": "7"})
    assert (r.delivered, r.retryable, r.retry_after, r.http_status) == (False, True, 7.0, 429)
    assert reply(503).retryable and reply(408).retryable
    assert not reply(401).retryable and not reply(302).retryable
    assert "top-secret" not in reply(400).message and "••••1234" in reply(400).message
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0 and retry_after("soon") is None


def test_backoff_grows_with_jitter_honours_retry_after_and_waits_longest_on_refusals() -> None:
    retry = Outcome(False)
    assert all(0.5 <= backoff(0, retry, 300) <= 1.0 for _ in range(50))
    assert all(4.0 <= backoff(3, retry, 300) <= 8.0 for _ in range(50))
    assert backoff(30, retry, 60) <= 60
    assert backoff(0, Outcome(False, retry_after=12.0), 300) == 12.0
    assert backoff(0, Outcome(False, retryable=False), 60) >= 48


def test_a_batch_id_is_the_same_for_the_same_batch() -> None:
    assert batch_id("s", {0: 1}, {0: 9}) == batch_id("s", {0: 1}, {0: 9}) != batch_id("s", {0: 1}, {0: 10})
