"""Input that crashes nothing (EVENT.md: ``detail`` is plain JSON): a NaN or a 100,000-deep message on the topic is
dead-lettered with its reason, one deep line of an NDJSON batch is rejected by itself, and fuzzed hostile bodies on
``POST /v1/ingest`` never get a 5xx: every 4xx carries the JSON error body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from auditlogkit.consumers.kafka.dlq import H_FIELD, H_REASON, header
from auditlogkit.consumers.worker import ConsumerWorker
from auditlogkit.producer import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from tests.consumer_helpers import BackgroundWorker, count_events, publish, read_topic
from tests.factories import make_event
from tests.integration.test_api_helpers import auth
from tests.integration.test_api_ingest import JSON, NDJSON, assert_error, client, event, line, service_token

DEEP = "nested deeper than 32 levels"
NOT_FINITE = "NaN, Infinity"


def deep_text(depth: int, opener: str = "[") -> str:
    return "[" * depth + "1" + "]" * depth if opener == "[" else '{"k":' * depth + "1" + "}" * depth


def spliced(ev: dict[str, Any], field: str, text: str) -> bytes:
    """``ev`` as one JSON line whose ``field`` is the raw JSON ``text`` (NaN, deep nesting: what json.dumps won't
    write)."""
    ev = {k: v for k, v in ev.items() if k != field}
    return (json.dumps(ev, separators=(",", ":"))[:-1] + f',"{field}":{text}}}').encode()


async def test_nan_and_deep_messages_on_the_topic_are_dead_lettered_with_the_reason(
        settings: Settings, store: Store) -> None:
    hostile = {
        spliced(make_event(), "detail", '{"ratio":NaN}'): ("detail", NOT_FINITE),
        spliced(make_event(), "detail", '{"x":[Infinity]}'): ("detail", NOT_FINITE),
        spliced(make_event(), "detail", deep_text(5_000, "{")): ("detail", DEEP),
        spliced(make_event(), "detail", '{"a":' + deep_text(33) + "}"): ("detail", DEEP),
        spliced(make_event(), "source", deep_text(100_000)): ("source", DEEP),
        deep_text(100_000).encode(): ("message", DEEP),
    }
    valid = [json.dumps(make_event()).encode() for _ in range(20)]
    await publish(settings.kafka_bootstrap, settings.topic, [*valid[:10], *hostile, *valid[10:]])
    worker = ConsumerWorker(settings.model_copy(update={"dlq_limit_ratio": 1.0}), store)
    async with BackgroundWorker(worker) as bw:
        await bw.until(lambda s: s["stored"] + s["dead_lettered"] >= len(valid) + len(hostile), 60)
        assert worker.status()["error"] is None
    assert count_events(store) == len(valid)
    dlq = await read_topic(settings.kafka_bootstrap, settings.dlq_topic)
    assert len(dlq) == len(hostile)
    for r in dlq:
        assert r.value in hostile  # the original bytes, untouched
        field, reason = hostile[r.value]
        assert header(r.headers, H_FIELD) == field
        assert (header(r.headers, H_REASON) or "").startswith(reason), header(r.headers, H_REASON)


async def test_one_deep_or_nan_line_is_rejected_by_itself_and_the_others_accepted(
        settings: Settings, store: Store) -> None:
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_ingest_rate_per_second": 0})
    svc = auth(service_token(s, ["acme"]))
    lines = [line(event()), spliced(event(), "detail", deep_text(5_000, "{")), line(event()),
             spliced(event(), "detail", deep_text(100_000)), spliced(event(), "detail", '{"ratio":NaN}'),
             deep_text(100_000).encode(), line(event())]
    async with AuditProducer(s.kafka_bootstrap, s.topic) as producer, \
            client(create_app(s, store, producer=producer)) as c:
        r = await c.post("/v1/ingest", content=b"\n".join(lines), headers={**svc, **NDJSON})
        assert r.status_code == 202, r.text[:500]
        assert r.json()["accepted"] == 3
        rejected = r.json()["rejected"]
        assert [(x["index"], x["field"]) for x in rejected] == [(1, "detail"), (3, "detail"), (4, "detail"),
                                                               (5, None)]
        assert [x["reason"] for x in rejected if x["reason"] == DEEP] == [DEEP] * 3
        assert rejected[2]["reason"].startswith(NOT_FINITE)

        r = await c.post("/v1/ingest", content=lines[1], headers={**svc, **JSON})  # one event: 422, error body
        body = assert_error(r, 422, "invalid_event")
        assert body["error"]["field"] == "detail"
        assert body["rejected"] == [{"index": 0, "field": "detail", "reason": DEEP}]
        body = assert_error(await c.post("/v1/ingest", content=lines[5], headers={**svc, **JSON}), 422)
        assert body["rejected"] == [{"index": 0, "field": None, "reason": DEEP}]


# -- fuzz -------------------------------------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=16))
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=10)  # st.floats() brings NaN and Infinity, which json.dumps writes as such
_FIELDS = ["schema_version", "event_id", "occurred_at", "org_id", "workspace_id", "scope", "category", "action",
           "status", "actor", "target", "description", "detail", "source", "request_id"]
_TOKENS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 400 + ".5", "1" + "0" * 5000,
           '"\\u0000"', '"\\ud800"', '"\\u0000' + "[" * 50 + '"', "null", "[]", "{}", "tru", '"', "0x10", "01"]
_FORGED = ["*", "", " acme", "acme\x00", "аcme", "ACME", "../acme", "acme' OR '1'='1", "a" * 300, "%00",
           "00000000-0000-0000-0000-000000000000", "0b6f4a5e8a544b8e9a4c1f0e2d3c4b5a", "urn:uuid:0b6f4a5e-8a54-4b8e"
           "-9a4c-1f0e2d3c4b5a", "{0b6f4a5e-8a54-4b8e-9a4c-1f0e2d3c4b5a}", "0B6F4A5E-8A54-4B8E-9A4C-1F0E2D3C4B5A"]
_CONTENT_TYPES = [JSON["Content-Type"], NDJSON["Content-Type"], "application/ndjson", "application/json; charset=utf-8",
                  "application/x-ndjson; charset=latin-1", "APPLICATION/X-NDJSON", "application/json;charset",
                  "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "", "*/*"]


@st.composite
def hostile_line(draw: Any) -> bytes:
    ev = event(org_id="acme")
    kind = draw(st.sampled_from(["valid", "json", "deep", "token", "huge", "junk", "forged", "extra"]))
    if kind == "valid":
        return line(ev)
    if kind == "json":
        return json.dumps(draw(_json)).encode()
    if kind == "junk":
        return draw(st.binary(max_size=48))
    if kind == "deep":
        depth = draw(st.sampled_from([32, 33, 34, 199, 200, 201, 255, 256, 999, 1_000, 5_000, 100_000]))
        text = deep_text(depth, draw(st.sampled_from("[{")))
        if draw(st.booleans()):
            text = text[: len(text) // 2]  # cut short, as a truncated message is
        where = draw(st.sampled_from(["detail", "source", "actor", "colour", "whole"]))
        return text.encode() if where == "whole" else spliced(ev, where, text if where != "detail" else
                                                               '{"a":' + text + "}")
    if kind == "token":
        token = draw(st.sampled_from(_TOKENS))
        where = draw(st.sampled_from([*_FIELDS, "detail.x"]))
        return spliced(ev, "detail", f'{{"x":[1,{token}]}}') if where == "detail.x" else spliced(ev, where, token)
    if kind == "huge":
        size = draw(st.sampled_from([2_001, 64 * 1024 + 1, 1024 * 1024 - 700, 1024 * 1024 + 1]))
        where = draw(st.sampled_from(["description", "detail", "source", "colour"]))
        ev[where] = {"pad": "x" * size} if where == "detail" else "é" * (size // 2)
        return line(ev)
    if kind == "forged":
        ev[draw(st.sampled_from(["event_id", "org_id", "workspace_id", "request_id"]))] = draw(st.sampled_from(_FORGED))
        return line(ev)
    ev[draw(st.sampled_from(["publisher", "received_at", "kafka_offset", "__proto__"]))] = draw(_json)
    return line(ev)


@st.composite
def hostile_request(draw: Any) -> tuple[bytes, str | None]:
    ctype = draw(st.sampled_from([NDJSON["Content-Type"]] * 3 + [JSON["Content-Type"], "odd"]))  # mostly read
    if ctype == "odd":
        ctype = draw(st.one_of(st.sampled_from(_CONTENT_TYPES), st.none(),
                               st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)))
    lines = draw(st.lists(hostile_line(), max_size=5))
    sep = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n \n"]))
    return sep.join(lines), ctype


def check_answer(r: httpx.Response) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    if r.status_code == 202:
        assert set(body) == {"accepted", "rejected"} and body["accepted"] >= 1, body
    else:
        assert 400 <= r.status_code < 500 and set(body) <= {"error", "rejected"}, body
        assert set(body["error"]) == {"code", "message", "field"} and body["error"]["message"], body
    for x in body.get("rejected", []):
        assert set(x) == {"index", "field", "reason"} and isinstance(x["reason"], str) and x["reason"], x


def test_fuzzed_hostile_bodies_never_get_a_server_error(settings: Settings, store: Store) -> None:
    """Random JSON values, deep nesting (whole or cut short), NaN and out-of-range numbers, huge strings, junk lines,
    forged-looking ids and unknown fields, odd content types: never a 5xx, and every 4xx is the JSON error body. The
    token may write for acme, so the valid lines among them are published and acknowledged (202)."""
    s = settings.model_copy(update={"api_rate_per_second": 0, "api_ingest_rate_per_second": 0})
    headers = auth(service_token(s, ["acme"]))
    loop = asyncio.new_event_loop()

    async def open_() -> tuple[AuditProducer, httpx.AsyncClient]:
        producer = AuditProducer(s.kafka_bootstrap, s.topic)
        await producer.start()
        return producer, httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(s, store, producer=producer)),
                                           base_url="http://t", timeout=60)

    producer, c = loop.run_until_complete(open_())
    statuses: set[int] = set()
    try:
        @hsettings(max_examples=400, deadline=None, derandomize=True, database=None,
                   suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        @given(hostile_request())
        def run(request: tuple[bytes, str | None]) -> None:
            body, ctype = request
            h = headers if ctype is None else {**headers, "Content-Type": ctype}
            r = loop.run_until_complete(c.post("/v1/ingest", content=body, headers=h))
            statuses.add(r.status_code)
            check_answer(r)

        run()
    finally:
        loop.run_until_complete(c.aclose())
        loop.run_until_complete(producer.stop())
        loop.close()
    assert {202, 415, 422} <= statuses, statuses  # the examples reached every outcome that matters
