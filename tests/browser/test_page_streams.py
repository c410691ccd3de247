"""The page's Streams section against ``auditlog up --demo`` (its own, with ``AUDITLOG_STREAMS_ALLOW_HOSTS=127.0.0.1``):
an org owner creates a webhook stream to a local receiver, sees it listed, tests it, pauses and resumes it,
deletes it; a workspace admin is not offered the section."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from auditlogkit.server.broker import free_port
from tests.browser.conftest import TIMEZONE, screenshot
from tests.browser.helpers import sign_in, wait_until
from tests.integration.streams_helpers import Receiver
from tests.updemo import UpDemo, start_up_demo, stop_up_demo

pytestmark = pytest.mark.browser
SECRET = "whsec-page-0123456789-LAST"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[UpDemo]:
    """This module's own ``auditlog up --demo``, allowed to send to 127.0.0.1."""
    demo = start_up_demo(tmp_path_factory.mktemp("up-streams"), free_port(), free_port(),
                         env={"AUDITLOG_STREAMS_ALLOW_HOSTS": "127.0.0.1"})
    try:
        yield demo
    finally:
        stop_up_demo(demo)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _row_text(page: Any, name: str, cell: str) -> str:
    return str(page.evaluate("""([name, cell]) => {
      for (const tr of document.querySelectorAll('#streams-list tbody tr'))
        if (tr.querySelector('.stream-name').textContent === name) return tr.querySelector(cell).textContent;
      return '';
    }""", [name, cell]))


def _row_state(page: Any, name: str) -> str:
    return _row_text(page, name, ".stream-state")


def test_an_owner_creates_tests_pauses_resumes_and_deletes_a_webhook_stream(
        up: UpDemo, new_page: Any, api: Any, receiver: Receiver) -> None:
    page = new_page(enforce_csp=True)
    page.on("dialog", lambda d: d.accept())  # the delete confirmation
    sign_in(page, up.owner_token)
    assert page.locator("#streams-btn").is_visible()
    page.click("#streams-btn")
    page.wait_for_selector("#streams", state="visible")
    wait_until(page, "document.querySelector('#streams-list').textContent.includes('No streams yet')")

    name = "SIEM <img src=x onerror=alert(1)>"  # shown as text, never as markup
    page.fill("#stream-name", name)
    page.select_option("#stream-type", "webhook")
    page.fill("#stream-f-url", receiver.url + "/hook")
    page.fill("#stream-f-secret", SECRET)
    page.click("#stream-create")
    wait_until(page, "document.querySelectorAll('#streams-list tbody tr').length === 1")
    assert page.locator("#streams-list img").count() == 0
    assert _row_state(page, name) == "active"
    assert _row_text(page, name, ".stream-filters") == "all events"
    assert "delivers all events stored from now on" in page.locator("#streams-status").inner_text()
    assert SECRET not in page.locator("#streams").inner_text()
    [made] = api(up.owner_token).get("/v1/streams").json()["data"]
    assert made["name"] == name and made["destination"]["secret"] == "••••LAST"
    assert made["filters"] == {}
    screenshot(page, "streams-created")

    page.click("#streams-list button[data-act=test]")
    wait_until(page, "document.querySelector('#streams-status').textContent.includes('Test event delivered')")
    assert any(e.get("action") == "audit_log.stream_test" for e in receiver.events(made["id"]))

    page.click("#streams-list button[data-act=pause]")
    wait_until(page, "document.querySelector('#streams-list .stream-state')?.textContent === 'paused'")
    assert api(up.owner_token).get(f"/v1/streams/{made['id']}").json()["state"] == "paused"
    page.click("#streams-list button[data-act=resume]")
    wait_until(page, "document.querySelector('#streams-list .stream-state')?.textContent !== 'paused'")
    assert api(up.owner_token).get(f"/v1/streams/{made['id']}").json()["state"] in ("active", "failing")

    page.click("#streams-list button[data-act=delete]")
    wait_until(page, "document.querySelector('#streams-list').textContent.includes('No streams yet')")
    assert api(up.owner_token).get("/v1/streams").json()["data"] == []

    # each change is on record in the audit log itself
    wanted = {"audit_log.stream_create", "audit_log.stream_test", "audit_log.stream_update", "audit_log.stream_delete"}
    deadline = time.monotonic() + 30
    while True:
        r = api(up.owner_token).get("/v1/events", params={"category": "audit_log", "limit": 200})
        assert r.status_code == 200, r.text
        seen = {e["action"] for e in r.json()["data"] if e["target"]["id"] == made["id"]}
        if seen >= wanted:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.5)


def test_a_workspace_admin_is_not_offered_streams(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.admin_token)
    assert page.locator("#streams-btn").is_hidden()
    assert page.locator("#streams").is_hidden()


def test_an_owner_creates_a_filtered_stream_with_a_backfill_start(
        up: UpDemo, new_page: Any, api: Any, receiver: Receiver) -> None:
    """Filters from the catalog's selects and the actions field, and a backfill start typed in the browser's own
    time zone (the page's Local mode): the API holds exactly those, and the list shows the filters."""
    page = new_page(enforce_csp=True)
    sign_in(page, up.owner_token)
    page.click("#streams-btn")
    page.wait_for_selector("#streams", state="visible")
    wait_until(page, "document.querySelector('#streams-list').textContent !== ''")
    page.click("#tz-switch button[data-tz=local]")
    wait_until(page, "document.querySelector('#stream-since-tz').textContent === 'Local, UTC+09:00'")

    name = "SIEM <b>failed vm deletes</b>"
    page.fill("#stream-name", name)
    page.select_option("#stream-type", "webhook")
    page.fill("#stream-f-url", receiver.url + "/filtered")
    page.fill("#stream-f-secret", SECRET)
    page.select_option("#stream-scope", "service")
    page.select_option("#stream-category", "vm")
    offered = page.eval_on_selector_all("#stream-action-list option", "os => os.map(o => o.value)")
    assert "vm.delete" in offered and all(a.startswith("vm.") for a in offered)
    page.fill("#stream-action", "vm.delete, vm.stop")
    page.select_option("#stream-status", "FAILED")
    page.fill("#stream-workspace", "ws-page-filters")
    assert page.locator("#stream-since").is_disabled()
    page.check("#stream-start-backfill")
    assert page.locator("#stream-since").is_enabled()
    local = (datetime.now(ZoneInfo(TIMEZONE)) - timedelta(hours=2)).replace(second=0, microsecond=0)
    page.fill("#stream-since", local.strftime("%Y-%m-%dT%H:%M"))
    page.click("#tz-switch button[data-tz=utc]")  # the switch shows the same instant in the other mode
    assert page.input_value("#stream-since") == local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    page.click("#tz-switch button[data-tz=local]")
    assert page.input_value("#stream-since") == local.strftime("%Y-%m-%dT%H:%M")
    page.click("#stream-create")
    wait_until(page, "document.querySelector('#streams-status').textContent.includes('created')")
    said = page.locator("#streams-status").inner_text()
    assert f"stored from {local:%Y-%m-%d %H:%M}:00 Local, UTC+09:00 on" in said, said

    client = api(up.owner_token)
    [made] = [x for x in client.get("/v1/streams").json()["data"] if x["name"] == name]
    shown = client.get(f"/v1/streams/{made['id']}").json()
    assert shown["filters"] == {"scope": "service", "category": "vm", "action": ["vm.delete", "vm.stop"],
                                "status": "FAILED", "workspace_id": "ws-page-filters"}
    assert shown["start"] == local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")
    wait_until(page, "document.querySelector('#streams-list .stream-filters') !== null")
    assert _row_text(page, name, ".stream-filters") == (
        "scope=service · category=vm · action=vm.delete,vm.stop · status=FAILED · workspace_id=ws-page-filters")
    assert page.locator("#streams-list b").count() == 0
    # the form is ready for the next stream: all events, from now on
    assert page.locator("#stream-start-now").is_checked() and page.locator("#stream-since").is_disabled()
    assert page.locator("#stream-category").is_disabled() and page.input_value("#stream-action") == ""
    screenshot(page, "streams-filtered-backfill")
    assert client.delete(f"/v1/streams/{made['id']}").status_code == 204
