"""The page's Live toggle (API.md "Live tail") in Debian's chromium against ``auditlog up --demo``, under the app's
Content-Security-Policy: events published to Kafka after the page loaded appear at the top of the table within
3 s (highlighted, once, expandable like any row), only those matching the active filter chips; the status next to
the toggle says "live" / "paused"; a hidden tab closes the stream and resumes it with Last-Event-ID (nothing
missed); a page deeper than the first pauses it; switching Live off aborts the stream's fetch and asks for no
other, and events published afterwards do not appear. With answers of the stream replaced (``page.route``): a
503 is retried after its Retry-After, a stream the server ends is resumed with Last-Event-ID (a Last-Event-ID the
server refuses: from now), a 403 stops Live and says why.

Every test also fails if the page requested a host other than the app's own or threw (``new_page`` fixture)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from auditlogkit.producer import AuditProducerSync
from tests.browser.conftest import screenshot
from tests.browser.helpers import sign_in, table_rows, wait_idle, wait_until
from tests.browser.test_page_csp import CspWatch
from tests.factories import make_event
from tests.updemo import UpDemo

pytestmark = pytest.mark.browser

TOPIC = "audit.events"  # the topic `auditlog up` creates and consumes (settings.topic)
TARGET_S = 3.0  # from the broker's ack to the row on screen (consumer flush + tail poll + drawing)
STREAM = "/v1/events/stream"
STATUS = "document.getElementById('live-status')"


class StreamWatch:
    """The page's requests to the live tail: URL, headers, and how each ended (failure text or "finished")."""

    def __init__(self, page: Any) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.times: list[float] = []  # time.monotonic() of each request
        self.ended: list[tuple[str, str]] = []
        page.on("request", self._on_request)
        page.on("requestfailed", lambda r: self._on_end(r, r.failure or "failed"))
        page.on("requestfinished", lambda r: self._on_end(r, "finished"))

    @staticmethod
    def _is_stream(url: str) -> bool:
        return urlsplit(url).path == STREAM

    def _on_request(self, r: Any) -> None:
        if self._is_stream(r.url):
            self.requests.append((r.url, dict(r.headers)))
            self.times.append(time.monotonic())

    def _on_end(self, r: Any, how: str) -> None:
        if self._is_stream(r.url):
            self.ended.append((r.url, how))

    def params(self, i: int = -1) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.requests[i][0]).query)


@pytest.fixture
def producer(up: UpDemo) -> Iterator[AuditProducerSync]:
    with AuditProducerSync(up.bootstrap, TOPIC) as p:
        yield p


def publish(producer: AuditProducerSync, marker: str, **over: Any) -> tuple[str, float]:
    """Publish one event of org acme (visible to the owner) that happened now; its id and the time of the ack."""
    ev = make_event(
        event_id=str(uuid.uuid4()), occurred_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        target={"type": "vm", "id": f"vm-{marker}", "name": marker}, description=f"Live tail test {marker}", **over,
    )
    producer.send_and_wait(ev)
    return ev["event_id"], time.monotonic()


def row_ids(page: Any) -> list[str]:
    return [r["id"] for r in table_rows(page)]


def wait_rows(page: Any, ids: list[str], since: float, timeout: float = 20.0) -> float:
    """Seconds from `since` until every id is a row of the table (fails after `timeout`)."""
    deadline = since + timeout
    while True:
        shown = set(page.evaluate("[...document.querySelectorAll('tr.event-row')].map(tr => tr.dataset.id)"))
        if set(ids) <= shown:
            return time.monotonic() - since
        assert time.monotonic() < deadline, f"{sorted(set(ids) - shown)} not shown within {timeout} s"
        page.wait_for_timeout(50)


def status(page: Any) -> tuple[str, str]:
    """(data-state, visible text) of the status next to the toggle."""
    state, text = page.evaluate(f"[{STATUS}.dataset.state, {STATUS}.hidden ? '' : {STATUS}.innerText.trim()]")
    return state, text


def wait_status(page: Any, state: str, timeout: float = 10_000) -> None:
    wait_until(page, f"{STATUS}.dataset.state === '{state}' && !{STATUS}.hidden", timeout)


def toggle_live(page: Any) -> None:
    page.locator("label.toggle", has=page.locator("#live-toggle")).click()  # a styled label around the checkbox


def set_tab_hidden(page: Any, hidden: bool) -> None:
    """What the browser does when the tab goes to the background / comes back (headless has no such tab)."""
    page.evaluate("""hidden => {
      Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => hidden ? 'hidden' : 'visible'});
      Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
      document.dispatchEvent(new Event('visibilitychange'));
    }""", hidden)


def eventually(page: Any, check: Any, what: str, timeout: float = 5.0) -> None:
    """Poll a Python-side condition (the page's events are delivered while waiting)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(50)


def aborted(streams: StreamWatch, url: str) -> bool:
    return any(u == url and "ABORTED" in how.upper() for u, how in streams.ended)


def assert_on_top(page: Any, new: list[str], old: list[str]) -> None:
    """The new events are above every row that was there before they were published."""
    ids = row_ids(page)
    below = [ids.index(i) for i in old if i in ids]
    assert below and all(ids.index(i) < min(below) for i in new), (new, ids[:10])


def assert_unique(page: Any) -> None:
    ids = row_ids(page)
    assert len(ids) == len(set(ids)), "an event is shown twice"



def live_page(up: UpDemo, new_page: Any) -> tuple[Any, CspWatch, StreamWatch]:
    """A page under the app's CSP, signed in as the org owner, with Live on and live; its CSP and stream watchers."""
    page = new_page(enforce_csp=True)
    watch = CspWatch(page)
    streams = StreamWatch(page)
    sign_in(page, up.owner_token)
    toggle_live(page)
    wait_status(page, "live")
    return page, watch, streams

def test_live_shows_new_events_at_the_top_within_3_seconds(up: UpDemo, new_page: Any,
                                                            producer: AuditProducerSync) -> None:
    page = new_page(enforce_csp=True)
    watch = CspWatch(page)
    streams = StreamWatch(page)
    sign_in(page, up.owner_token)
    assert status(page) == ("off", ""), "no status while Live is off"
    assert streams.requests == [], "no stream before Live is switched on"

    toggle_live(page)
    assert page.is_checked("#live-toggle")
    wait_status(page, "live")
    wait_idle(page)  # switching Live on also brings the table up to date once
    assert status(page) == ("live", "live")
    assert page.evaluate("localStorage.getItem('auditlog.live')") == "1"
    assert page.is_disabled("#auto-refresh"), "auto-refresh's timer is off while Live is on"
    assert page.get_attribute("#live-status", "aria-live") == "polite"
    assert len(streams.requests) == 1
    url, headers = streams.requests[0]
    assert headers.get("authorization") == f"Bearer {up.owner_token}"
    assert "last-event-id" not in headers
    # a rolling period (the default 7 days) has no bound: an `end` would cut off the events to come
    assert streams.params() == {}, url

    before = row_ids(page)
    assert before
    first_id, t_first = publish(producer, f"live-a-{uuid.uuid4().hex[:8]}")
    second_id, t_second = publish(producer, f"live-b-{uuid.uuid4().hex[:8]}")
    took = wait_rows(page, [first_id, second_id], t_first)
    assert took <= TARGET_S + (t_second - t_first), f"shown {took:.2f} s after the ack (target {TARGET_S} s)"
    ids = row_ids(page)
    old = [ids.index(i) for i in before if i in ids]
    assert ids.index(second_id) < ids.index(first_id) < min(old), "new events go on top, newest first"
    assert "is-new" in (page.get_attribute(f'tr.event-row[data-id="{second_id}"]', "class") or ""), "highlighted"
    assert streams.ended == [] and len(streams.requests) == 1, "one stream, still open (the table was not reloaded)"
    assert status(page) == ("live", "live")
    screenshot(page, "live")

    # a row added by Live expands to its detail like any other
    page.click(f'tr.event-row[data-id="{first_id}"]')
    detail = page.locator(f'tr.detail-row[data-detail-for="{first_id}"]')
    detail.wait_for(state="visible")
    assert first_id in detail.locator("pre.json").inner_text()

    # Refresh while live: the list and the stream bring the same events; each is shown once
    page.click("#refresh")
    wait_idle(page)
    before = row_ids(page)
    third_id, t_third = publish(producer, f"live-c-{uuid.uuid4().hex[:8]}")
    wait_rows(page, [third_id], t_third)
    assert_on_top(page, [third_id], before)
    assert_unique(page)
    assert page.locator(f'tr.detail-row[data-detail-for="{first_id}"]').count() == 1, "the open row stays open"
    watch.assert_none("while live")


def test_live_applies_the_filter_chips(up: UpDemo, new_page: Any, producer: AuditProducerSync) -> None:
    page, watch, streams = live_page(up, new_page)
    page.select_option("#f-status", "FAILED")
    wait_idle(page)
    assert any("Status:" in c and "FAILED" in c for c in page.locator("#chips li").all_inner_texts())
    # the change of filters closed the stream of the old ones and opened one with the chip's filter
    wait_status(page, "live")
    assert len(streams.requests) == 2, streams.requests
    assert streams.params() == {"status": ["FAILED"]}
    eventually(page, lambda: aborted(streams, streams.requests[0][0]), f"the old stream was not aborted: {streams.ended}")

    before = row_ids(page)
    ok_id, _ = publish(producer, f"live-ok-{uuid.uuid4().hex[:8]}", status="SUCCESS")
    failed_id, t_failed = publish(producer, f"live-failed-{uuid.uuid4().hex[:8]}", status="FAILED")
    took = wait_rows(page, [failed_id], t_failed)
    assert took <= TARGET_S, f"shown {took:.2f} s after the ack (target {TARGET_S} s)"
    assert_on_top(page, [failed_id], before)
    page.wait_for_timeout(1500)  # the SUCCESS event was stored first: it would be here by now
    assert ok_id not in row_ids(page), "an event the chips exclude is not shown"
    assert {r["Status"] for r in table_rows(page)} == {"FAILED"}
    watch.assert_none("while live with a filter")


def test_live_pauses_and_resumes_without_a_gap(up: UpDemo, new_page: Any, producer: AuditProducerSync) -> None:
    page, watch, streams = live_page(up, new_page)
    wait_idle(page)
    seen_id, t_seen = publish(producer, f"live-seen-{uuid.uuid4().hex[:8]}")
    wait_rows(page, [seen_id], t_seen)

    # the tab goes to the background: the stream is closed; events stored meanwhile come on return
    set_tab_hidden(page, True)
    wait_status(page, "paused")
    assert status(page)[1].startswith("paused")
    n = len(streams.requests)
    eventually(page, lambda: aborted(streams, streams.requests[-1][0]), f"the stream was not closed: {streams.ended}")
    missed_id, _ = publish(producer, f"live-missed-{uuid.uuid4().hex[:8]}")
    page.wait_for_timeout(2500)
    assert missed_id not in row_ids(page) and len(streams.requests) == n, "nothing is read while hidden"
    set_tab_hidden(page, False)
    wait_rows(page, [missed_id], time.monotonic(), timeout=10)
    wait_status(page, "live")
    assert len(streams.requests) == n + 1
    assert streams.requests[-1][1].get("last-event-id"), "resumed after the last event received"
    assert row_ids(page).index(missed_id) < row_ids(page).index(seen_id)
    assert_unique(page)

    # a page deeper than the first pauses Live; Refresh brings back the newest events and the stream
    page.click("#load-more")
    wait_until(page, "document.querySelectorAll('tr.event-row').length > 60")
    wait_status(page, "paused")
    page.click("#refresh")
    wait_idle(page)
    wait_status(page, "live")
    after_id, t_after = publish(producer, f"live-after-{uuid.uuid4().hex[:8]}")
    wait_rows(page, [after_id], t_after)
    assert_unique(page)
    watch.assert_none("pausing and resuming")


def test_switching_live_off_stops_the_stream(up: UpDemo, new_page: Any, producer: AuditProducerSync) -> None:
    page, watch, streams = live_page(up, new_page)
    # remembered: a reload opens the stream again by itself
    page.reload()
    wait_idle(page)
    assert page.is_checked("#live-toggle")
    wait_status(page, "live")
    on_id, t_on = publish(producer, f"live-on-{uuid.uuid4().hex[:8]}")
    wait_rows(page, [on_id], t_on)

    n = len(streams.requests)
    toggle_live(page)
    assert not page.is_checked("#live-toggle")
    wait_until(page, f"{STATUS}.hidden")
    assert page.evaluate("localStorage.getItem('auditlog.live')") == "0"
    assert page.is_enabled("#auto-refresh")
    eventually(page, lambda: aborted(streams, streams.requests[-1][0]), f"the stream's fetch was not aborted: {streams.ended}")

    off_id, _ = publish(producer, f"live-off-{uuid.uuid4().hex[:8]}")
    page.wait_for_timeout(4000)  # well past the time it would take to show
    assert off_id not in row_ids(page), "no event arrives after Live is off"
    assert len(streams.requests) == n, "no request to the stream after Live is off"
    watch.assert_none("switching Live off")


def _error(status: int, code: str, message: str, **headers: str) -> dict[str, Any]:
    return {"status": status, "content_type": "application/json", "headers": headers,
            "body": json.dumps({"error": {"code": code, "message": message, "field": None}})}


def test_live_retries_after_503_and_resumes_a_dropped_stream(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page(enforce_csp=True)
    watch = CspWatch(page)
    streams = StreamWatch(page)
    # an event as the list gives it, under a new id: what the stream would send
    fake = {**api(up.owner_token).get("/v1/events", params={"limit": 1}).json()["data"][0],
            "event_id": str(uuid.uuid4()), "description": "sent by a stream that then ended"}
    calls: list[str] = []

    def answer(route: Any) -> None:
        calls.append(route.request.url)
        if len(calls) == 1:  # busy: come back in a second
            route.fulfill(**_error(503, "audit_unavailable", "try again", **{"Retry-After": "1"}))
        elif len(calls) == 2:  # one event (CRLF line ends, data over two lines), then the server ends the stream
            text = json.dumps(fake)
            cut = text.index(", ") + 1  # JSON split over two data lines, joined with "\n" (whitespace) again
            data = (text[:cut], text[cut:])
            body = f"retry: 400\r\n: live\r\n\r\nid: fake-1\r\nevent: audit\r\ndata: {data[0]}\r\ndata: {data[1]}\r\n\r\n"
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:  # the real stream: it refuses the made-up Last-Event-ID (400 invalid_position), then serves one from now
            route.continue_()

    page.route(f"**{STREAM}*", answer)
    sign_in(page, up.owner_token)
    toggle_live(page)
    wait_rows(page, [fake["event_id"]], time.monotonic(), timeout=10)
    assert streams.times[1] - streams.times[0] >= 0.9, "the 503's Retry-After (1 s) was honoured"
    wait_status(page, "live")
    eventually(page, lambda: len(streams.requests) >= 4, f"no resumption: {streams.requests}")
    assert streams.requests[2][1].get("last-event-id") == "fake-1", "resumed after the last event received"
    assert "last-event-id" not in streams.requests[3][1], "a refused Last-Event-ID: from now"
    page.wait_for_timeout(1000)
    assert len(streams.requests) == 4 and status(page) == ("live", "live")
    assert_unique(page)
    watch.assert_none("reconnecting")


def test_live_stops_on_403_and_says_why(up: UpDemo, new_page: Any) -> None:
    page = new_page(enforce_csp=True)
    streams = StreamWatch(page)
    page.route(f"**{STREAM}*", lambda route: route.fulfill(
        **_error(403, "forbidden", "the token lacks the audit:read permission")))
    sign_in(page, up.owner_token)
    toggle_live(page)
    wait_status(page, "stopped")
    assert "permission required (audit:read)" in status(page)[1]
    assert page.locator(".toast-error", has_text="Live stopped").count() == 1
    page.wait_for_timeout(2000)
    assert len(streams.requests) == 1, "no retry after a 403"


def test_live_keeps_the_table_bounded(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    base = api(up.owner_token).get("/v1/events", params={"limit": 1}).json()["data"][0]
    fakes = [{**base, "event_id": str(uuid.uuid4()), "description": f"burst {i}"} for i in range(600)]
    body = "retry: 400\n: live\n\n" + "".join(
        f"id: burst-{i}\nevent: audit\ndata: {json.dumps(ev)}\n\n" for i, ev in enumerate(fakes))
    calls: list[str] = []

    def answer(route: Any) -> None:
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(status=200, content_type="text/event-stream", body=body)
        else:
            route.continue_()

    page.route(f"**{STREAM}*", answer)
    sign_in(page, up.owner_token)
    assert page.is_visible("#load-more")
    toggle_live(page)
    wait_rows(page, [fakes[-1]["event_id"]], time.monotonic(), timeout=10)
    ids = row_ids(page)
    assert len(ids) == 500, "the page size and what Live added, up to 500 rows"
    assert ids[:3] == [fakes[-1]["event_id"], fakes[-2]["event_id"], fakes[-3]["event_id"]], "newest on top"
    assert page.is_hidden("#load-more"), "the oldest rows left the table, and their cursor with them"
    assert "Live keeps the newest 500 events" in page.inner_text("#foot-meta")
