"""The audit-log page in a real browser (Debian's chromium) against ``auditlog up --demo``: table and columns,
filters (scope -> category, e-mail autocomplete, keyword), URL state, row detail, refresh, export, paging.

Every test also fails if the page requested a host other than the app's own
(``new_page`` fixture)."""

from __future__ import annotations

import csv
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from auditlogkit.producer import AuditProducerSync
from tests.browser.conftest import TIMEZONE, screenshot
from tests.browser.helpers import COLUMNS, api_all, sign_in, table_rows, wait_idle
from tests.updemo import UpDemo

pytestmark = pytest.mark.browser

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def test_page_loads_with_token_and_shows_the_columns(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    headers = [t.strip() for t in page.eval_on_selector_all("#events-table thead th", "ths => ths.map(t => t.innerText)")]
    assert [re.sub(r"\s*\(.*\)$", "", h) for h in headers[1:]] == COLUMNS
    rows = table_rows(page)
    assert len(rows) == 50, "the first page holds 50 events"
    first = rows[0]
    assert TS.match(first["Timestamp"]), first
    assert {r["Status"] for r in rows} <= {"SUCCESS", "FAILED"}
    assert page.locator(".badge-success").first.is_visible()
    assert page.locator("#whoami").inner_text().startswith("K")  # avatar initial, then the e-mail
    assert "kim@acme.example" in page.locator("#who-email").inner_text()
    # the rows are the API's first page, newest first, with catalog labels and the user id beneath the e-mail
    api_first = api(up.owner_token).get("/v1/events", params={"limit": 5}).json()["data"]
    by_id = {r["id"]: r for r in rows}
    ev = next(e for e in api_first if e["event_id"] in by_id)
    row = by_id[ev["event_id"]]
    assert row["Scope"] == ev["scope_label"] and row["Category"] == ev["category_label"]
    assert row["Action"] == ev["action_label"]
    assert ev["actor"]["email"] in row["User"] and ev["actor"]["id"] in row["User"]
    occurred = datetime.fromisoformat(ev["occurred_at"].replace("Z", "+00:00"))
    assert row["Timestamp"] == occurred.strftime("%Y-%m-%d %H:%M:%S")
    # the user agent is shortened, the full string is on hover
    ua_cell = page.locator(f'tr[data-id="{ev["event_id"]}"] .ua')
    if ev["actor"]["user_agent"]:
        assert ua_cell.get_attribute("title") == ev["actor"]["user_agent"]
        assert len(ua_cell.inner_text()) <= len(ev["actor"]["user_agent"])
    screenshot(page, "default")

    # UTC -> local time (the browser runs in Asia/Seoul, UTC+9), remembered across reloads
    page.click("#tz-switch button[data-tz=local]")
    local = occurred.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%d %H:%M:%S")
    assert page.locator(f'tr[data-id="{ev["event_id"]}"] time').inner_text() == local
    assert "UTC+09:00" in page.locator("#th-tz").inner_text()
    page.reload()
    wait_idle(page)
    assert page.locator("#tz-switch button[data-tz=local]").get_attribute("aria-pressed") == "true"
    assert page.locator(f'tr[data-id="{ev["event_id"]}"] time').inner_text() == local


def test_filter_by_scope_then_category_lives_in_the_url(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    assert page.locator("#f-category").is_disabled(), "Category is disabled until a scope is chosen"
    catalog = api(up.owner_token).get("/v1/catalog").json()
    service = next(s for s in catalog["scopes"] if s["code"] == "service")

    page.select_option("#f-scope", "service")
    wait_idle(page)
    assert page.locator("#f-category").is_enabled()
    offered = page.eval_on_selector_all("#f-category option", "os => os.map(o => o.value).filter(Boolean)")
    assert offered == [c["code"] for c in service["categories"]], "only the chosen scope's categories"
    assert {r["Scope"] for r in table_rows(page)} == {"Service"}

    page.select_option("#f-category", "vm")
    wait_idle(page)
    rows = table_rows(page)
    assert rows and {(r["Scope"], r["Category"]) for r in rows} == {("Service", "VM")}
    assert "scope=service" in page.url and "category=vm" in page.url
    vm = next(c for c in service["categories"] if c["code"] == "vm")
    actions = page.eval_on_selector_all("#f-action option", "os => os.map(o => o.value).filter(Boolean)")
    assert actions == [a["code"] for a in vm["actions"]], "the Action select follows scope and category"
    chips = page.locator("#chips li").all_inner_texts()
    assert any("Scope:" in c and "Service" in c for c in chips) and any("Category:" in c and "VM" in c for c in chips)
    screenshot(page, "filtered")

    # shareable: a reload (or the same URL in a new tab) shows the same view
    page.reload()
    wait_idle(page)
    assert page.locator("#f-scope").input_value() == "service"
    assert page.locator("#f-category").input_value() == "vm"
    assert {r["Category"] for r in table_rows(page)} == {"VM"}

    # clearing the category select removes its chip; the scope chip's x clears scope and category
    page.select_option("#f-category", "")
    wait_idle(page)
    assert not any("Category:" in c for c in page.locator("#chips li").all_inner_texts())
    assert "category=" not in page.url
    page.get_by_role("button", name=re.compile(r"Remove filter Scope")).click()
    wait_idle(page)
    assert page.locator("#f-category").is_disabled()
    assert page.locator("#chips-row").is_hidden()
    assert "scope=" not in page.url
    # the newest rows may all be this org's own reads of the audit log (organization / audit_log): not only Service
    assert {r["Scope"] for r in table_rows(page)} - {"Service"}


def test_email_autocomplete_after_two_letters(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    page.locator("#f-email").press_sequentially("ki", delay=40)
    option = page.locator("#f-email-list [role=option]", has_text="kim@acme.example")
    option.wait_for(state="visible")
    assert all(o.startswith("ki") for o in page.locator("#f-email-list [role=option]").all_inner_texts())
    option.click()
    page.wait_for_url(re.compile(r"actor_email=kim%40acme\.example"))
    wait_idle(page)
    rows = table_rows(page)
    assert rows and {r["User"].splitlines()[0] for r in rows} == {"kim@acme.example"}
    assert any("kim@acme.example" in c for c in page.locator("#chips li").all_inner_texts())
    # one letter suggests nothing (the API needs 2)
    page.fill("#f-email", "")
    page.locator("#f-email").press_sequentially("k", delay=40)
    page.wait_for_timeout(400)
    assert page.locator("#f-email-list").is_hidden()


def test_keyword_search_and_empty_state(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    page.fill("#f-q", "train-a100-4")
    page.wait_for_url(re.compile(r"q=train-a100-4"))
    wait_idle(page)
    rows = table_rows(page)
    assert rows
    for r in rows:
        assert "train-a100-4" in (r["Target"] + r["Description"]).lower(), r
    expected = api_all(api(up.owner_token), {"q": "train-a100-4"})
    assert len(rows) == min(50, len(expected))

    page.fill("#f-q", f"no-such-thing-{uuid.uuid4().hex[:6]}")
    page.wait_for_selector(".empty h3")
    wait_idle(page)
    assert "No events match" in page.locator("#state").inner_text()
    assert table_rows(page) == []
    screenshot(page, "empty")
    page.get_by_role("button", name="Clear all filters").click()
    wait_idle(page)
    assert len(table_rows(page)) == 50 and page.locator("#f-q").input_value() == ""


def test_expand_row_shows_json_detail_with_before_after(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token, "/?scope=service&category=vm&action=vm.delete&q=train-a100-4")
    first = page.locator("tr.event-row").first
    first.focus()
    page.keyboard.press("Enter")  # keyboard: Enter expands the focused row
    assert first.get_attribute("aria-expanded") == "true"
    pre = page.locator("tr.detail-row pre.json")
    pre.wait_for(state="visible")
    shown = json.loads(pre.inner_text())
    event_id = first.get_attribute("data-id")
    assert shown == api(up.owner_token).get(f"/v1/events/{event_id}").json()
    assert shown["detail"]["before"] is not None and shown["detail"]["after"] is None
    assert page.locator("tr.detail-row .jl.hl-before").count() > 1, "the before block is highlighted"
    assert page.locator("tr.detail-row .changes-table").is_visible()
    page.get_by_role("button", name="Copy JSON").click()
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == shown
    first.scroll_into_view_if_needed()
    first.evaluate("tr => tr.scrollIntoView({block: 'start'})")
    screenshot(page, "expanded")
    first.press("Enter")  # Enter again collapses
    assert page.locator("tr.detail-row").count() == 0 and first.get_attribute("aria-expanded") == "false"


def test_refresh_shows_an_event_published_through_kafka(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    marker = f"browser-refresh-{uuid.uuid4().hex[:8]}"
    with AuditProducerSync(up.bootstrap, "audit.events") as producer:
        producer.send_and_wait({
            "org_id": "acme", "workspace_id": "ml-research", "scope": "service", "category": "vm",
            "action": "vm.create", "status": "SUCCESS",
            "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
            "actor": {"id": "u-ac-kim", "email": "kim@acme.example", "type": "user", "ip": "203.0.113.9",
                      "user_agent": "browser-test"},
            "target": {"type": "vm", "id": f"vm-{marker}", "name": marker},
            "description": f"Created VM {marker}",
        })
    client = api(up.owner_token)
    deadline = time.monotonic() + 30
    while not client.get("/v1/events", params={"q": marker}).json()["data"]:
        assert time.monotonic() < deadline, "the consumer did not store the event within 30 s"
        time.sleep(0.3)
    assert page.locator("tr.event-row", has_text=marker).count() == 0, "not shown before Refresh"
    page.click("#refresh")
    row = page.locator("tr.event-row", has_text=marker)
    row.wait_for(state="visible")
    assert "is-new" in (row.get_attribute("class") or ""), "rows new since the last load are highlighted"


def _count_csv(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return len(rows) - 1  # header


def _count_ndjson(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def test_export_downloads_exactly_the_filtered_view(up: UpDemo, new_page: Any, api: Any) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=10)
    params = {"start": start.isoformat().replace("+00:00", "Z"), "end": end.isoformat().replace("+00:00", "Z"),
              "scope": "authentication", "status": "FAILED"}
    page = new_page()
    sign_in(page, up.owner_token, "/?" + "&".join(f"{k}={v}" for k, v in params.items()))
    expected = api_all(api(up.owner_token), params)
    assert len(expected) > 0
    shown = table_rows(page)
    assert [r["id"] for r in shown] == [e["event_id"] for e in expected[:50]]
    for fmt, counter in (("csv", _count_csv), ("ndjson", _count_ndjson)):
        page.click("#export-btn")
        with page.expect_download() as info:
            page.click(f"#export-menu [data-format={fmt}]")
        download = info.value
        assert download.suggested_filename.endswith(f".{fmt}")
        path = Path(download.path())
        assert counter(path) == len(expected), f"{fmt} export row count differs from the API's"
        if fmt == "ndjson":
            ids = [json.loads(line)["event_id"] for line in path.read_text().splitlines() if line.strip()]
            assert sorted(ids) == sorted(e["event_id"] for e in expected)


def test_load_more_pages_over_the_cursor(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token, "/?range=30d")
    assert len(table_rows(page)) == 50
    page.click("#load-more")
    page.wait_for_function("document.querySelectorAll('tr.event-row').length === 100")
    ids = [r["id"] for r in table_rows(page)]
    assert len(set(ids)) == 100, "no duplicates across pages"


def test_load_more_before_the_histogram_arrives_keeps_the_histogram(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    held: list[Any] = []  # the /v1/stats requests, answered only after "Load more"
    page.route(re.compile(r"/v1/stats\?"), lambda route: held.append(route))
    sign_in(page, up.owner_token, "/?range=30d")
    page.click("#load-more")
    page.wait_for_function("document.querySelectorAll('tr.event-row').length === 100")
    assert len(held) == 2
    for route in held:
        route.continue_()
    page.locator("#histogram .hist-bar").first.wait_for(state="attached")
    assert re.match(r"^Showing 100 of [\d,]+ events", page.inner_text("#results-meta"))
    assert page.locator("#top-ips li button.top-item").count() > 0


def test_top_ip_list_leads_to_a_password_spraying_source(up: UpDemo, new_page: Any, api: Any) -> None:
    """Product use case: monitor suspicious sign-in attempts, look for repeated failures from one IP."""
    page = new_page()
    sign_in(page, up.owner_token, "/?scope=authentication&category=sign_in&status=FAILED")
    top = page.locator("#top-ips .top-item").first
    top.wait_for(state="visible")
    ip = top.locator(".top-key").inner_text()
    stats = api(up.owner_token).get("/v1/stats", params={
        "scope": "authentication", "category": "sign_in", "status": "FAILED", "interval": "day",
        "group_by": "ip", "top": 1}).json()
    assert ip == stats["top"][0]["key"]
    screenshot(page, "investigate")
    top.click()
    page.wait_for_url(re.compile(r"ip=" + re.escape(ip)))
    wait_idle(page)
    rows = table_rows(page)
    assert rows and {r["IP address"] for r in rows} == {ip}
    assert any(f"IP address: {ip}" in c.replace("\n", " ") for c in page.locator("#chips li").all_inner_texts())


def test_period_quick_ranges_and_pickers(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    page.click("#quick-ranges button[data-range='24h']")
    wait_idle(page)
    assert "range=24h" in page.url
    since = datetime.now(UTC) - timedelta(hours=24, minutes=1)
    stamps = [datetime.strptime(r["Timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for r in table_rows(page)]
    assert stamps and min(stamps) >= since
    assert any("Last 24 hours" in c for c in page.locator("#chips li").all_inner_texts())

    # custom start/end with the pickers (UTC mode): the URL carries both, rows stay inside
    day = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%d")
    page.fill("#f-start", f"{day}T00:00")
    wait_idle(page)
    page.fill("#f-end", f"{day}T12:00")
    wait_idle(page)
    assert "start=" in page.url and "end=" in page.url and "range=" not in page.url
    stamps = [r["Timestamp"] for r in table_rows(page)]
    assert stamps and all(f"{day} 00:00:00" <= s <= f"{day} 12:00:00" for s in stamps)
    page.get_by_role("button", name=re.compile(r"Remove filter Period")).click()
    wait_idle(page)
    assert "start=" not in page.url
    assert page.locator("#quick-ranges button[data-range='7d']").get_attribute("aria-pressed") == "true"


def test_auto_refresh_every_10_seconds(up: UpDemo, new_page: Any, api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    page.click("label.toggle")  # the switch is a styled label around a visually hidden checkbox
    assert page.is_checked("#auto-refresh")
    marker = f"browser-auto-{uuid.uuid4().hex[:8]}"
    with AuditProducerSync(up.bootstrap, "audit.events") as producer:
        producer.send_and_wait({
            "org_id": "acme", "workspace_id": "ml-research", "scope": "service", "category": "notebook",
            "action": "notebook.start", "status": "FAILED", "actor": {"id": "u-ac-kim", "type": "user"},
            "target": {"type": "notebook", "id": f"nb-{marker}", "name": marker},
        })
    page.locator("tr.event-row", has_text=marker).wait_for(state="visible", timeout=30_000)
    assert page.evaluate("localStorage.getItem('auditlog.autorefresh')") == "1"


def test_several_actions_password_or_otp_failure(up: UpDemo, new_page: Any, api: Any) -> None:
    """Product use case: filter by Password failure OR OTP failure (the API's repeatable `action`)."""
    end = datetime.now(UTC).replace(microsecond=0)
    window = {"start": (end - timedelta(days=30)).isoformat().replace("+00:00", "Z"),
              "end": end.isoformat().replace("+00:00", "Z")}
    page = new_page()
    sign_in(page, up.owner_token, f"/?scope=authentication&category=sign_in&start={window['start']}&end={window['end']}")
    page.select_option("#f-action", "sign_in.password_failure")
    wait_idle(page)
    page.click("#action-or")
    page.select_option("#f-action", "sign_in.otp_failure")
    wait_idle(page)
    assert "action=sign_in.password_failure" in page.url and "action=sign_in.otp_failure" in page.url
    assert "2 actions selected" in page.locator("#f-action option:checked").inner_text()
    rows = table_rows(page)
    assert {r["Action"] for r in rows} == {"Password Failure", "OTP Failure"}
    params = {"scope": "authentication", "category": "sign_in",
              "action": ["sign_in.password_failure", "sign_in.otp_failure"], **window}
    assert [r["id"] for r in rows] == [e["event_id"] for e in api_all(api(up.owner_token), params)][:50]
    page.get_by_role("button", name="Remove filter Action: OTP Failure").click()
    wait_idle(page)
    assert page.locator("#f-action").input_value() == "sign_in.password_failure"
    assert {r["Action"] for r in table_rows(page)} == {"Password Failure"}
