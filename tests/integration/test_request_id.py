"""One request id per API request: taken from a sane ``X-Request-ID`` (else made), sent back, bound to every log
line written meanwhile (the access line and stdlib records too) and carried into the self-audit event of the read."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from auditlogkit import AuditProducer
from auditlogkit.query_api.core.app import create_app
from auditlogkit.server import logs
from auditlogkit.server.settings import Settings
from auditlogkit.server.store import Store
from auditlogkit.testing import FakeTransport
from tests.factories import make_event
from tests.integration.test_api_helpers import auth, store_events, token


@pytest.fixture(autouse=True)
def _root_logger_as_before() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


def _unconfigure() -> None:
    """structlog back to its defaults: a logger first used by a later test of this process is not cached with this
    test's configuration (a level of "warning" here dropped the info lines of a later test that read its log)."""
    structlog.reset_defaults()


@pytest.mark.parametrize(("given", "kept"), [("trace-7f3a.1:2", True), ("a b\nc", False), ("x" * 129, False)])
async def test_the_request_id_reaches_the_response_the_logs_and_the_self_audit_event(
        settings: Settings, store: Store, given: str, kept: bool) -> None:
    ev = make_event()
    store_events(store, [ev])
    fake = FakeTransport()
    recorder = AuditProducer(transport=fake)
    await recorder.start()
    buf = io.StringIO()
    logs.configure("info", json=True, file=buf)
    try:
        app = create_app(settings.model_copy(update={"api_rate_per_second": 0}), store, audit_producer=recorder)
        h = auth(token(settings, sub="u-trace")) | {"X-Request-ID": given.replace("\n", " ")}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            r = await c.get(f"/v1/events/{ev['event_id']}", headers=h)
            other = await c.get("/healthz")
    finally:
        _unconfigure()
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert (rid == given) if kept else (len(rid) == 32 and rid != given.replace("\n", " "))
    assert other.headers["x-request-id"] not in (rid, "")
    [read] = [e for e in fake.events if e.action == "audit_log.read"]
    assert read.request_id == rid and read.actor.id == "u-trace"
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    access = [x for x in lines if x["event"] == "api.request" and x.get("path", "").startswith("/v1/events/")]
    assert [x["request_id"] for x in access] == [rid] and access[0]["logger"] == "auditlogkit.query_api.core.observability"
    assert all(x.get("request_id") != rid for x in lines if x.get("path") == "/healthz")


def test_stdlib_records_come_out_in_the_same_format_with_logger_names() -> None:
    buf = io.StringIO()
    logs.configure("info", json=True, file=buf)
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1")
        logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
        logging.getLogger("aiokafka.conn").warning("Connection lost")
        logs.get_logger("auditlogkit.consumers.worker").info("batch.flushed", rows=3)
        structlog.contextvars.clear_contextvars()
    finally:
        _unconfigure()
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(x["logger"], x["event"], x["request_id"]) for x in lines] == [
        ("uvicorn.error", "Started server process [42]", "r-1"), ("aiokafka.conn", "Connection lost", "r-1"),
        ("auditlogkit.consumers.worker", "batch.flushed", "r-1")]
    assert all(x["level"] and x["timestamp"].endswith("Z") for x in lines)

    console = io.StringIO()
    logs.configure("info", file=console, fmt="console")
    try:
        logging.getLogger("uvicorn.error").warning("Started")
    finally:
        _unconfigure()
    text = console.getvalue()
    assert "Started" in text and "uvicorn.error" in text and not text.lstrip().startswith("{")


def test_lines_go_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A library thread that logs after a test runner closed its capture of stderr must not hit the closed stream
    (it printed '--- Logging error ---' tracebacks at the end of the suite)."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.configure("info", json=True)
    try:
        logging.getLogger("kafka.cluster").warning("before")
        monkeypatch.setattr("sys.stderr", second)
        first.close()
        logging.getLogger("kafka.cluster").warning("after")
    finally:
        _unconfigure()
    assert json.loads(second.getvalue())["event"] == "after"
