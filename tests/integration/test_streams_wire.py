"""The destinations' wire formats against real servers: Splunk HEC and Datadog requests as a real local HTTP
receiver sees them (Datadog split at 1,000 entries), and the s3 destination writing to the project's own
S3-compatible server (``python -m auditlogkit.server.s3disk``) and to moto's (from PyPI): one gzip NDJSON object per batch
under the org's and day's prefix, written once; a missing bucket failing until it exists; the owner's test send."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from auditlogkit.query_api.streams.deliverer import send_test
from auditlogkit.query_api.streams.destinations import s3
from auditlogkit.query_api.streams.destinations.base import Context
from auditlogkit.server.broker import free_port
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.streams_helpers import (
    Receiver,
    deliverer_for,
    put_events,
    repo_for,
    running,
    settings_for,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)
KEY_ID, KEY_SECRET = "AKIDSTREAMS1234", "s3-secret-key-0123456789abcdef"


async def test_splunk_hec_requests(store: Store, tmp_path: Path) -> None:
    rx = Receiver(lambda r, n: (200, {"Content-Type": "application/json"}, b'{"text":"Success","code":0}'))
    try:
        s = settings_for(store, tmp_path)
        repo = repo_for(store, s)
        repo.create("acme", "hec", {"type": "splunk_hec", "url": rx.url + "/", "token": "hec-token-1111-2222",
                                    "index": "audit", "sourcetype": "auditlog:json"})
        events = [make_event() for _ in range(3)]
        put_events(store, events)
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: len(rx.requests) >= 1, what="the request")
    finally:
        rx.close()
    req = rx.requests[0]
    assert req.path == "/services/collector/event" and req.headers["authorization"] == "Splunk hec-token-1111-2222"
    entries = [json.loads(line) for line in req.body.split(b"\n")]
    assert [e["event"]["event_id"] for e in entries] == [e["event_id"] for e in events]
    first = entries[0]
    assert (first["source"], first["sourcetype"], first["index"]) == ("auditlog", "auditlog:json", "audit")
    assert abs(first["time"] - time.time()) < 3600 and first["event"]["org_id"] == "acme"


async def test_datadog_requests_are_split_at_a_thousand_entries(store: Store, tmp_path: Path) -> None:
    rx = Receiver(lambda r, n: (202, {}, b"{}"))
    try:
        s = settings_for(store, tmp_path, streams_batch_max_events=2_000)
        repo = repo_for(store, s)
        repo.create("acme", "dd", {"type": "datadog", "url": rx.url, "api_key": "dd-key-3333-4444-5555",
                                   "service": "billing"})
        events = [make_event(workspace_id=None) for _ in range(1_200)]
        put_events(store, events)
        async with running(deliverer_for(store, s, "A")):
            await wait_for(lambda: sum(len(json.loads(r.body)) for r in rx.requests) >= 1_200, what="all entries")
    finally:
        rx.close()
    assert [len(json.loads(r.body)) for r in rx.requests] == [1000, 200]
    assert {r.path for r in rx.requests} == {"/api/v2/logs"}
    assert {r.headers["dd-api-key"] for r in rx.requests} == {"dd-key-3333-4444-5555"}
    entries = [e for r in rx.requests for e in json.loads(r.body)]
    assert [json.loads(e["message"])["event_id"] for e in entries] == [e["event_id"] for e in events]
    assert entries[0]["service"] == "billing" and entries[0]["ddsource"] == "auditlog"
    assert entries[0]["ddtags"] == "org_id:acme,category:vm,action:vm.delete,status:SUCCESS"


@pytest.fixture
def s3disk(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "auditlogkit.server.s3disk", "--root", str(tmp_path / "s3"), "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "s3disk did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def moto_s3() -> Iterator[str]:
    """moto's S3 server (from PyPI) on 127.0.0.1, in this process's threads."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Server:
    kind: str
    endpoint: str
    bucket: str


def create_bucket(endpoint: str, bucket: str) -> None:
    r = httpx.put(f"{endpoint}/{bucket}", timeout=10)  # (moto takes unsigned requests)
    assert r.status_code == 200, r.text


@pytest.fixture(params=["s3disk", "moto"])
def s3server(request: pytest.FixtureRequest) -> S3Server:
    """An S3-compatible server with an empty bucket of its own: the project's s3disk, or moto's."""
    kind = str(request.param)
    endpoint = request.getfixturevalue("s3disk" if kind == "s3disk" else "moto_s3")
    bucket = f"audit-{uuid.uuid4().hex[:12]}"  # (moto's buckets live as long as this process)
    if kind == "moto":
        create_bucket(endpoint, bucket)
    return S3Server(kind, endpoint, bucket)


def bucket_objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    import obstore
    from obstore.store import S3Store

    st = S3Store(bucket, endpoint=endpoint, region="us-east-1", virtual_hosted_style_request=False,
                 access_key_id=KEY_ID, secret_access_key=KEY_SECRET, client_options={"allow_http": True})
    return {m["path"]: bytes(obstore.get(st, m["path"]).bytes()) for chunk in obstore.list(st) for m in chunk}


def s3_destination(endpoint: str, bucket: str) -> dict[str, str]:
    return {"type": "s3", "bucket": bucket, "prefix": "streams/acme", "region": "us-east-1",
            "access_key_id": KEY_ID, "secret_access_key": KEY_SECRET, "endpoint": endpoint}


async def test_s3_writes_one_gzip_object_per_batch_once(store: Store, tmp_path: Path, s3server: S3Server) -> None:
    s = settings_for(store, tmp_path, streams_batch_max_events=4)
    repo = repo_for(store, s)
    stream = repo.create("acme", "s3", s3_destination(s3server.endpoint, s3server.bucket))
    placed = put_events(store, [make_event() for _ in range(6)], partition=3)
    async with running(deliverer_for(store, s, "A")):
        await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.delivery is not None
                       and x.delivery.delivered == 6, what="both batches")
    objects = bucket_objects(s3server.endpoint, s3server.bucket)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    (p, o0, _), (_, o3, _), (_, o4, _), (_, o5, _) = placed[0], placed[3], placed[4], placed[5]
    keys = [f"streams/acme/org_id=acme/date={day}/{p}.{o0}-{p}.{o3}.ndjson.gz",
            f"streams/acme/org_id=acme/date={day}/{p}.{o4}-{p}.{o5}.ndjson.gz"]
    assert sorted(objects) == sorted(keys)
    lines = [json.loads(x) for key in keys for x in gzip.decompress(objects[key]).splitlines()]
    assert [e["event_id"] for e in lines] == [eid for _, _, eid in placed]
    # a retried batch whose object is already there counts as delivered, and the object is not rewritten
    fields = {k: v for k, v in s3_destination(s3server.endpoint, s3server.bucket).items()
              if k in ("bucket", "prefix", "region", "endpoint")}
    again = Context(stream.id, "acme", "b", fields, {"access_key_id": KEY_ID, "secret_access_key": KEY_SECRET},
                    allow=repo.allow, first=(p, o0), last=(p, o3),
                    received_at=datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC))
    outcome = await s3.send([{"event_id": "other"}], again)
    assert outcome.delivered and "already written" in outcome.message
    assert bucket_objects(s3server.endpoint, s3server.bucket) == objects


async def test_s3_a_missing_bucket_fails_until_it_exists(store: Store, tmp_path: Path, moto_s3: str) -> None:
    """(moto: s3disk has every bucket)"""
    bucket = f"audit-{uuid.uuid4().hex[:12]}"
    s = settings_for(store, tmp_path, streams_backoff_max_seconds=0.5)
    repo = repo_for(store, s)
    stream = repo.create("acme", "s3", s3_destination(moto_s3, bucket))
    placed = put_events(store, [make_event() for _ in range(3)], partition=4)
    async with running(deliverer_for(store, s, "A")):
        await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "failing",
                       what="failing")
        failing = repo.get("acme", stream.id)
        assert failing is not None and failing.delivery is not None and failing.delivery.last_error is not None
        assert failing.delivery.last_error["http_status"] == 404 and failing.delivery.delivered == 0
        assert KEY_SECRET not in repr(failing.public())
        create_bucket(moto_s3, bucket)
        await wait_for(lambda: (x := repo.get("acme", stream.id)) is not None and x.status == "active",
                       what="active")
    (key, body), = bucket_objects(moto_s3, bucket).items()
    assert key.endswith(f"/{placed[0][0]}.{placed[0][1]}-{placed[-1][0]}.{placed[-1][1]}.ndjson.gz")
    assert [json.loads(x)["event_id"] for x in gzip.decompress(body).splitlines()] == [eid for *_, eid in placed]


async def test_the_owners_test_send_reaches_the_destination(store: Store, tmp_path: Path) -> None:
    rx = Receiver(lambda r, n: (200, {}, b"ok"))
    try:
        s = settings_for(store, tmp_path)
        repo = repo_for(store, s)
        stream = repo.create("acme", "wh", {"type": "webhook", "url": rx.url, "secret": "whsec-0123456789-abcdef"})
        outcome = await send_test(repo, stream.id, "acme")
        assert await send_test(repo, stream.id, "globex") is None
    finally:
        rx.close()
    assert outcome is not None and outcome.delivered and outcome.http_status == 200
    (event,) = rx.requests[0].lines()
    assert event["org_id"] == "acme" and event["action"] == "audit_log.stream_test"
