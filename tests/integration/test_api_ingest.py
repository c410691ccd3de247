"""``POST /v1/ingest`` over HTTP (httpx against the real app), on the real broker and the real consumer and store:
a 10k-event NDJSON batch with invalid lines and lines of a foreign org, stored exactly once also after a retry;
a stopped broker; who may write (and that writers cannot read); the size, count and type limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.broker import EmbeddedBroker, ensure_topics
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, highwaters
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, token

NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}
SOURCE = "ingest-test"


def service_token(settings: Settings, write_orgs: list[str], *, sub: str = "svc-billing",
                  permissions: tuple[str, ...] = ("audit:write",), ttl: int = 3600) -> str:
    assert settings.jwt_secret
    return mint_token(settings.jwt_secret, sub=sub, role="service", write_orgs=write_orgs, permissions=permissions,
                      ttl_seconds=ttl)


def event(**over: Any) -> dict[str, Any]:
    """A compact valid event (about 470 bytes: 10k of them fit the 5 MiB cap)."""
    over["actor"] = {"user_agent": None, **over.get("actor", {})}
    return make_event(**{"detail": None, "description": None, "source": SOURCE, "request_id": None, **over})


def line(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode()


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body["error"]) == {"code", "message", "field"} and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body)


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=120) as c:
        yield c


async def stored_ids(c: httpx.AsyncClient, headers: dict[str, str]) -> Counter[str]:
    """Every event id of ``scope=service`` the reader sees through GET /v1/events, following the cursor (the
    readers' own audit_log events are scope organization)."""
    ids: Counter[str] = Counter()
    params: dict[str, Any] = {"scope": "service", "limit": 1000}
    while True:
        r = await c.get("/v1/events", params=params, headers=headers)
        assert r.status_code == 200, r.text[:300]
        page = r.json()
        ids.update(e["event_id"] for e in page["data"])
        if not page["next_cursor"]:
            return ids
        params["cursor"] = page["next_cursor"]


def batch_of_10k() -> tuple[bytes, dict[str, set[str]], dict[int, tuple[str | None, str]]]:
    """10,000 lines (and a few blank ones): 1 % invalid (bad e-mail, unknown action, not JSON), 1 % for globex
    (outside write_orgs), the rest for acme and initech. Returns the body, the valid ids per org and the expected
    rejections by index (field, a piece of the reason)."""
    lines: list[bytes] = []
    valid: dict[str, set[str]] = {"acme": set(), "initech": set()}
    expected: dict[int, tuple[str | None, str]] = {}
    for i in range(10_000):
        ev = event(org_id="acme" if i % 2 else "initech", target={"id": f"vm-{i}", "name": f"vm-{i}"})
        if i % 100 == 13:
            kind = (i // 100) % 3
            if kind == 0:
                ev["actor"]["email"] = f"user{i}-at-acme.example"
                expected[i] = ("actor.email", "not a valid e-mail address")
            elif kind == 1:
                ev["action"] = "vm.teleport"
                expected[i] = ("action", "vm.teleport")
            else:
                lines.append(b'{"event_id": "' + str(i).encode() + b'", oops')
                expected[i] = (None, "not valid JSON")
                continue
        elif i % 100 == 57:
            ev["org_id"] = "globex"
            expected[i] = ("org_id", "org_id 'globex' is not one of acme, initech")
        else:
            valid[ev["org_id"]].add(ev["event_id"])
        lines.append(line(ev))
        if i % 1000 == 999:
            lines.append(b"")  # blank lines are ignored and not counted
    return b"\n".join(lines) + b"\n", valid, expected


async def test_a_10k_batch_is_stored_once_with_exactly_its_invalid_lines_rejected_also_after_a_retry(
        settings: Settings, store: Store, broker: EmbeddedBroker) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_ingest_rate_per_second": 0})
    body, valid, expected = batch_of_10k()
    assert len(body) < s.api_ingest_max_bytes
    n_valid = sum(map(len, valid.values()))
    assert n_valid == 9_800 and len(expected) == 200
    svc = auth(service_token(s, ["acme", "initech"]))
    async with AuditProducer(broker.bootstrap, s.topic) as producer, client(create_app(s, store, producer=producer)) as c:
        r = await c.post("/v1/ingest", content=body, headers={**svc, **NDJSON})
        assert r.status_code == 202, r.text[:500]
        answer = r.json()
        assert answer["accepted"] == n_valid
        assert [x["index"] for x in answer["rejected"]] == sorted(expected)
        for x in answer["rejected"]:
            field, reason = expected[x["index"]]
            assert x["field"] == field and reason in x["reason"], x

        async with BackgroundWorker(ConsumerWorker(s, store)) as w:
            await w.until(lambda st: st["stored"] >= n_valid, timeout_s=60)
            readers = {org: auth(token(s, org=org, sub=f"u-{org}", email=f"owner@{org}.example")) for org in valid}
            for org, h in readers.items():
                seen = await stored_ids(c, h)
                assert set(seen) == valid[org] and set(seen.values()) == {1}, org
            assert count_events(store, where=f"WHERE source = '{SOURCE}'") == n_valid

            r = await c.post("/v1/ingest", content=body, headers={**svc, **NDJSON})  # the client retries it all
            assert r.status_code == 202 and r.json() == answer
            in_topic = sum((await highwaters(broker.bootstrap, s.topic)).values())
            await w.until(lambda st: st["stored"] + st["retries_dropped"] + st["skipped_stored"] + st["dead_lettered"]
                          >= in_topic,
                          timeout_s=60)
            assert w.worker.status()["dead_lettered"] == 0
            for org, h in readers.items():
                seen = await stored_ids(c, h)
                assert set(seen) == valid[org] and set(seen.values()) == {1}, org
        assert count_events(store, where=f"WHERE source = '{SOURCE}'") == n_valid
        assert count_events(store, where="WHERE org_id = 'globex'") == 0


async def test_a_stopped_broker_is_503_with_retry_after_and_nothing_accepted(
        settings: Settings, store: Store, tmp_path: Path) -> None:
    own = EmbeddedBroker(log_file=tmp_path / "tansu.log").start()
    topic = f"audit.ingest.{uuid.uuid4().hex[:8]}"
    try:
        await ensure_topics(own.bootstrap, [topic], 2)
        s = settings.model_copy(update={"api_ingest_ack_timeout_seconds": 1.5, "api_ingest_rate_per_second": 0,
                                        "topic": topic})
        producer = AuditProducer(own.bootstrap, topic, request_timeout_ms=3000)
        await producer.start()
        svc = auth(service_token(s, ["*"]))
        batch = b"\n".join(line(event()) for _ in range(5))
        async with client(create_app(s, store, producer=producer)) as c:
            r = await c.post("/v1/ingest", content=batch, headers={**svc, **NDJSON})
            assert r.status_code == 202 and r.json() == {"accepted": 5, "rejected": []}
            own.stop()
            for body, headers in ((batch, NDJSON), (line(event()), JSON)):
                r = await c.post("/v1/ingest", content=body, headers={**svc, **headers})
                err = assert_error(r, 503, "broker_unavailable")
                assert "accepted" not in err and int(r.headers["Retry-After"]) > 0
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), 10)
        async with client(create_app(s, store)) as c:  # no producer attached (still connecting): 503 as well
            r = await c.post("/v1/ingest", content=line(event()), headers={**svc, **JSON})
            assert_error(r, 503, "broker_unavailable")
            assert r.headers["Retry-After"]
    finally:
        own.stop()


READS = ["/v1/events", "/v1/events/export", "/v1/stats", "/v1/catalog", "/v1/actors?prefix=ki",
         f"/v1/events/{uuid.uuid4()}", "/v1/integrity"]


async def test_who_may_write_and_that_writers_cannot_read(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0})
    ev = line(event(org_id="acme"))
    async with client(create_app(s, store)) as c:
        def post(headers: dict[str, str], body: bytes = ev) -> Any:
            return c.post("/v1/ingest", content=body, headers={**headers, **JSON})

        r = await post({})
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"] == "Bearer"
        for bad in (service_token(s, ["acme"], ttl=-120), service_token(s, ["acme"]) + "x", "not-a-jwt",
                    mint_token("another-secret-0123456789abcdef01", sub="svc", role="service", write_orgs=["acme"])):
            r = await post(auth(bad))
            assert_error(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
        reader = auth(token(s, permissions=("audit:read", "audit:export", "audit:write")))  # a read role never writes
        assert "read token" in assert_error(await post(reader), 403, "forbidden")["error"]["message"]
        lacking = auth(service_token(s, ["acme"], permissions=("audit:read",)))
        assert "audit:write" in assert_error(await post(lacking), 403, "forbidden")["error"]["message"]
        other_org = assert_error(await post(auth(service_token(s, ["initech"]))), 403, "forbidden")
        assert other_org["rejected"] == [{"index": 0, "field": "org_id", "reason": other_org["rejected"][0]["reason"]}]
        assert "'acme'" in other_org["rejected"][0]["reason"]
        # a token that may write for acme passes every check: this app has no broker connection
        assert_error(await post(auth(service_token(s, ["acme"]))), 503, "broker_unavailable")

        writer = auth(service_token(s, ["*"]))
        for path in READS:
            r = await c.get(path, headers=writer)
            err = assert_error(r, 403, "forbidden")
            assert "may write events, not read them" in err["error"]["message"], path


async def test_the_ingest_rate_limit_is_per_service(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_ingest_rate_per_second": 0.01, "api_ingest_rate_burst": 2})
    async with client(create_app(s, store)) as c:
        a, b = auth(service_token(s, ["acme"], sub="svc-a")), auth(service_token(s, ["acme"], sub="svc-b"))
        for _ in range(2):
            assert_error(await c.post("/v1/ingest", content=b"x", headers={**a, "Content-Type": "text/plain"}), 415)
        r = await c.post("/v1/ingest", content=b"x", headers={**a, "Content-Type": "text/plain"})
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert_error(await c.post("/v1/ingest", content=b"x", headers={**b, "Content-Type": "text/plain"}), 415)


async def test_requests_in_progress_are_bounded_per_service_and_in_total(settings: Settings, store: Store) -> None:
    """A body still arriving holds its place: one more from the same service, or one over the process's total,
    gets 429 at once (before its body is read); when a body completes, its place is free again."""
    s = settings.model_copy(update={"api_ingest_rate_per_second": 0, "api_ingest_per_caller": 1,
                                    "api_ingest_total": 2})
    a, b, c3 = (auth(service_token(s, ["acme"], sub=f"svc-{n}")) for n in "abc")
    gates = [asyncio.Event(), asyncio.Event()]

    def slow_body(gate: asyncio.Event) -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            yield b"not an event\n"
            await gate.wait()
            yield b"nor this\n"
        return gen()

    app = create_app(s, store)
    async with client(app) as c:
        held = [asyncio.create_task(c.post("/v1/ingest", content=slow_body(g), headers={**h, **NDJSON}))
                for g, h in zip(gates, (a, b), strict=True)]
        for _ in range(200):  # both bodies are being read
            if app.state.ingest_slots.running == 2:
                break
            await asyncio.sleep(0.01)
        r = await c.post("/v1/ingest", content=line(event()), headers={**a, **NDJSON})
        assert_error(r, 429, "too_many_ingest_requests")
        assert "you already run 1" in r.json()["error"]["message"] and int(r.headers["Retry-After"]) >= 1
        r = await c.post("/v1/ingest", content=line(event()), headers={**c3, **NDJSON})
        assert_error(r, 429, "too_many_ingest_requests")
        assert "the server runs its limit of 2" in r.json()["error"]["message"]
        gates[0].set()
        assert_error(await held[0], 422, "invalid_event")  # its body complete: answered (nothing valid)
        assert_error(await c.post("/v1/ingest", content=b"x\n", headers={**c3, **NDJSON}), 422, "invalid_event")
        gates[1].set()
        assert_error(await held[1], 422, "invalid_event")


async def test_limits_and_malformed_bodies(settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_ingest_rate_per_second": 0})
    svc = auth(service_token(s, ["acme"]))
    async with client(create_app(s, store)) as c:
        r = await c.post("/v1/ingest", content=b"{}\n" * 10_001, headers={**svc, **NDJSON})
        assert "more than 10,000 events" in assert_error(r, 413, "payload_too_large")["error"]["message"]
        assert_error(await c.post("/v1/ingest", content=b"{", headers={**svc, **JSON}), 400, "bad_request")
        for ctype in ("text/plain", "application/xml", "multipart/form-data; boundary=x"):
            r = await c.post("/v1/ingest", content=line(event()), headers={**svc, "Content-Type": ctype})
            assert_error(r, 415, "unsupported_media_type")
        r = await c.post("/v1/ingest", content=line(event(actor={"email": "kim-at-acme"})), headers={**svc, **JSON})
        bad = assert_error(r, 422, "invalid_event")
        assert bad["error"]["field"] == "actor.email"
        assert bad["rejected"] == [{"index": 0, "field": "actor.email", "reason": "not a valid e-mail address"}]
        no_id = {k: v for k, v in event().items() if k != "event_id"}
        r = await c.post("/v1/ingest", content=line(no_id), headers={**svc, **JSON})
        assert assert_error(r, 422)["rejected"][0]["reason"].startswith("required over HTTP")
        r = await c.post("/v1/ingest", content=line(no_id) + b"\nnope\n", headers={**svc, **NDJSON})
        assert [x["index"] for x in assert_error(r, 422, "invalid_event")["rejected"]] == [0, 1]

    small = s.model_copy(update={"api_ingest_max_bytes": 4096})
    async with client(create_app(small, store)) as c:
        big = b"\n".join(line(event()) for _ in range(10))
        assert len(big) > 4096
        r = await c.post("/v1/ingest", content=big, headers={**svc, **NDJSON})
        assert "4,096" in assert_error(r, 413, "payload_too_large")["error"]["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the cap holds while reading
            for _ in range(100):
                yield line(event()) + b"\n"

        r = await c.post("/v1/ingest", content=chunked(), headers={**svc, **NDJSON})
        assert_error(r, 413, "payload_too_large")


@pytest.mark.parametrize("body", [b"", b"\n \n\r\n"])
async def test_an_empty_body_is_422(settings: Settings, store: Store, body: bytes) -> None:
    s = settings.model_copy(update={"api_ingest_rate_per_second": 0})
    async with client(create_app(s, store)) as c:
        r = await c.post("/v1/ingest", content=body, headers={**auth(service_token(s, ["acme"])), **NDJSON})
        assert assert_error(r, 422, "invalid_event")["rejected"] == []


def ingest_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis check: a 4xx of ingest is JSON with the error object, and ``rejected`` beside it on 403/422."""
    if not 400 <= response.status_code < 500:
        return None
    body = json.loads(response.content)
    assert set(body) <= {"error", "rejected"} and set(body["error"]) == {"code", "message", "field"}, body
    assert isinstance(body.get("rejected", []), list), body
    return True


def test_schemathesis_over_ingest_with_a_service_token(settings: Settings, store: Store) -> None:
    """Generated bodies (valid and invalid requests) with a service token that may write for no org, so nothing is
    published: no 5xx, and every 4xx carries the error object."""
    s = settings.model_copy(update={"api_ingest_rate_per_second": 0})
    schema: Any = schemathesis.openapi.from_asgi("/openapi.json", create_app(s, store))
    op = next(r.ok() for r in schema.get_all_operations() if r.ok().path == "/v1/ingest")
    headers = auth(service_token(s, []))
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                   phases=[Phase.explicit, Phase.generate])
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error, ingest_error_body])

        run()


def test_auditlog_token_mints_what_the_api_accepts(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from auditlogkit.query_api.security.auth import TokenVerifier
    from auditlogkit.server.app.cli import main

    assert settings.jwt_secret
    monkeypatch.setenv("AUDITLOG_JWT_SECRET", settings.jwt_secret)
    verifier = TokenVerifier(settings)

    def mint(*argv: str) -> str:
        assert main(["token", *argv]) == 0
        return capsys.readouterr().out.strip()

    svc = verifier.verify_service(mint("--service", "--write-org", "acme", "--write-org", "initech", "--sub", "svc-b"))
    assert svc.sub == "svc-b" and svc.write_orgs == {"acme", "initech"} and svc.can("audit:write")
    assert verifier.verify_service(mint("--service", "--write-org", "*")).may_write("anyone")
    reader = verifier.verify(mint("--org", "acme", "--role", "workspace_admin", "--workspace", "w1", "--email",
                                  "kim@acme.example", "--permission", "audit:read"))
    assert (reader.org_id, reader.role, reader.workspaces, reader.permissions) == (
        "acme", "workspace_admin", ("w1",), frozenset({"audit:read"}))
    assert main(["token", "--service"]) == 2  # no --write-org
    assert main(["token", "--org", "acme", "--write-org", "acme"]) == 2
    monkeypatch.delenv("AUDITLOG_JWT_SECRET")
    assert main(["token", "--org", "acme", "--data", str(tmp_path / "none")]) == 2  # no secret anywhere
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "jwt-secret").write_text(settings.jwt_secret + "\n")  # what `auditlog up` generated
    assert verifier.verify(mint("--org", "acme", "--data", str(tmp_path / "up"))).org_id == "acme"
