"""Sign-in, roles and permissions on the audit-log page, error states, and layout at 1280 px and on a narrow
window. Runs against ``auditlog up --demo``; tokens beyond the two printed ones are minted with the
data directory's generated secret."""

from __future__ import annotations

import re
from typing import Any

import pytest

from auditlogkit.query_api.security.auth import mint_token
from auditlogkit.server.app.demo import DEMO_ADMIN_WORKSPACES, demo_events
from tests.browser.conftest import screenshot
from tests.browser.helpers import api_all, sign_in, table_rows, wait_idle
from tests.updemo import UpDemo

pytestmark = pytest.mark.browser

ADMIN_WORKSPACES = {"ml-research", "inference-prod"}


def _token(up: UpDemo, **kw: Any) -> str:
    assert up.data_dir is not None
    secret = (up.data_dir / "jwt-secret").read_text().strip()
    base = {"sub": "u-ac-kim", "email": "kim@acme.example", "org_id": "acme", "role": "org_owner"}
    return mint_token(secret, **{**base, **kw})


def test_workspace_admin_sees_only_its_workspaces(up: UpDemo, new_page: Any, api: Any) -> None:
    # the owner does see events of a workspace the admin may not see: the check below can fail
    owner_ws = {e["workspace_id"] for e in api_all(api(up.owner_token), {"scope": "service"})}
    assert "data-platform" in owner_ws

    page = new_page()
    bodies: list[Any] = []
    page.on("response", lambda r: bodies.append(r) if "/v1/events?" in r.url else None)
    sign_in(page, up.admin_token, "/?range=30d")
    page.click("#load-more")
    page.wait_for_function("document.querySelectorAll('tr.event-row').length > 50")
    wait_idle(page)
    received = [ev for r in bodies if r.ok for ev in r.json()["data"]]
    assert len(received) > 50
    assert {ev["workspace_id"] for ev in received} <= ADMIN_WORKSPACES, [(r.url, ev["action"], ev["org_id"], ev["occurred_at"]) for r in bodies if r.ok for ev in r.json()["data"] if ev["workspace_id"] not in ADMIN_WORKSPACES][:3]
    shown = {r["id"] for r in table_rows(page)}
    assert shown == {ev["event_id"] for ev in received}
    # ... and the same ids as the API gives the admin directly
    assert shown <= {e["event_id"] for e in api_all(api(up.admin_token), {"start": received[-1]["occurred_at"]})} | shown
    # the page offers only what the role can see
    assert "Workspace Admin" in page.locator("#who-role").inner_text()
    options = page.eval_on_selector_all("#f-workspace option", "os => os.map(o => o.value)")
    assert options == ["", "ml-research", "inference-prod"]
    assert page.locator("#f-workspace-text").is_hidden()
    assert "ml-research" in page.locator("#scope-note").inner_text()
    page.select_option("#f-workspace", "inference-prod")
    wait_idle(page)
    assert any("Workspace:" in c for c in page.locator("#chips li").all_inner_texts())

    # naming another workspace in the URL: the API answers 403, the page explains it
    page.goto("/?workspace_id=data-platform")
    page.wait_for_selector(".error-state")
    text = page.locator("#state").inner_text()
    assert "Permission required" in text and "data-platform" in text
    assert table_rows(page) == []
    screenshot(page, "error")


def _scope_options(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector_all("#f-scope option", "os => os.filter(o => o.value).map(o => [o.value, o.label])"))


def test_scope_select_offers_only_scopes_the_role_can_see(up: UpDemo, new_page: Any, api: Any) -> None:
    catalog = [s["code"] for s in api(up.owner_token).get("/v1/catalog").json()["scopes"]]
    org, workspaces = DEMO_ADMIN_WORKSPACES
    demo = demo_events()
    # derived from the demo data: organization-level scopes carry no workspace, so the admin never sees them
    admin_scopes = {e["scope"] for e in demo if e["org_id"] == org and e["workspace_id"] in workspaces}
    hidden = {e["scope"] for e in demo if e["org_id"] == org} - admin_scopes
    assert {"service", "workspace"} <= admin_scopes and {"organization", "billing", "authentication"} <= hidden

    page = new_page()
    sign_in(page, up.admin_token)
    offered = _scope_options(page)
    assert set(offered) == admin_scopes, offered
    assert list(offered) == [c for c in catalog if c in admin_scopes]  # catalog order and labels kept
    assert offered["service"] == "Service"
    # with no scope chosen, the Action select lists only the actions of those scopes
    actions = set(page.eval_on_selector_all("#f-action option", "os => os.map(o => o.value).filter(v => v)"))
    cat = api(up.owner_token).get("/v1/catalog").json()["scopes"]
    codes = {sc["code"]: {a["code"] for c in sc["categories"] for a in c["actions"]} for sc in cat}
    assert actions == set().union(*(codes[sc] for sc in admin_scopes)), actions

    # a shared link naming a scope without events for the admin: still shown, and said to be empty
    page = new_page()
    sign_in(page, up.admin_token, "/?scope=billing")
    offered = _scope_options(page)
    assert set(offered) == admin_scopes | {"billing"}
    assert "no events in your workspaces" in offered["billing"]
    assert page.locator("#f-scope").input_value() == "billing"

    # the org owner is offered every catalog scope
    page = new_page()
    sign_in(page, up.owner_token)
    assert list(_scope_options(page)) == catalog


def test_401_brings_back_the_sign_in_prompt(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    page.goto("/")
    assert page.locator("#signin").is_visible()
    screenshot(page, "signin")
    page.fill("#token-input", "not a token")
    page.click("#signin-form button[type=submit]")
    assert "does not look like a JWT" in page.locator("#signin-reason").inner_text()
    # a well-formed token with a wrong signature: the API's 401 brings the prompt back with the reason
    forged = mint_token("x" * 40, sub="u-ac-kim", email="kim@acme.example", org_id="acme", role="org_owner")
    page.fill("#token-input", forged)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin", state="visible")
    assert "did not accept your token" in page.locator("#signin-reason").inner_text()
    assert page.evaluate("sessionStorage.getItem('auditlog.token')") is None
    # a good token is kept in sessionStorage: a reload stays signed in
    page.fill("#token-input", f"Bearer {up.owner_token} ")
    page.press("#token-input", "Enter")  # Enter in the token field signs in
    wait_idle(page)
    page.reload()
    wait_idle(page)
    assert page.locator("#signin").is_hidden() and len(table_rows(page)) == 50
    # an expired token is refused before any call
    page.evaluate("t => sessionStorage.setItem('auditlog.token', t)", _token(up, ttl_seconds=-60))
    page.reload()
    page.wait_for_selector("#signin", state="visible")
    assert "expired" in page.locator("#signin-reason").inner_text()
    page.fill("#token-input", up.owner_token)
    page.click("#signin-form button[type=submit]")
    wait_idle(page)
    page.click("#sign-out")
    assert page.locator("#signin").is_visible() and "signed out" in page.locator("#signin-reason").inner_text()


def test_403_explains_the_missing_permission_and_export_is_hidden(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, _token(up, permissions=["audit:read"]))
    assert len(table_rows(page)) == 50
    assert page.locator("#export-btn").is_hidden(), "no Export without audit:export"

    page2 = new_page()
    sign_in(page2, _token(up, permissions=[]))
    page2.wait_for_selector(".error-state")
    text = page2.locator("#state").inner_text()
    assert "Permission required" in text and "audit:read" in text
    assert page2.locator("#export-btn").is_hidden()


def test_readable_at_1280_and_on_a_narrow_window(up: UpDemo, new_page: Any) -> None:
    page = new_page(1280, 860)
    sign_in(page, up.owner_token)
    wrap = page.evaluate("(() => { const w = document.querySelector('.table-wrap'); return [w.scrollWidth, w.clientWidth]; })()")
    assert wrap[0] <= wrap[1] + 1, f"all ten columns fit at 1280 px without sideways scrolling: {wrap}"

    narrow = new_page(420, 860)
    sign_in(narrow, up.owner_token)
    width = narrow.evaluate("document.documentElement.scrollWidth")
    assert width <= 420, f"nothing overflows a 420 px window (scrollWidth {width})"
    first = narrow.locator("tr.event-row").first
    assert first.is_visible()
    labels = first.evaluate("tr => [...tr.querySelectorAll('td[data-label]')].map(td => getComputedStyle(td, '::before').content)")
    assert '"Timestamp"' in labels, "narrow rows label each value"
    first.click()
    narrow.locator("tr.detail-row pre.json").wait_for(state="visible")
    assert narrow.evaluate("document.documentElement.scrollWidth") <= 420
    screenshot(narrow, "narrow")


def test_keyboard_reaches_filters_and_rows(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    for sel in ("#f-q", "#f-start", "#f-end", "#f-scope", "#f-category", "#f-action", "#f-status", "#f-email"):
        label = page.locator(f"label[for={sel[1:]}]")
        assert label.count() == 1, f"{sel} has a label"
    page.focus("#f-status")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-email"
    rows = page.locator("tr.event-row")
    rows.first.focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.id") == rows.nth(1).get_attribute("data-id")
    page.keyboard.press(" ")
    assert rows.nth(1).get_attribute("aria-expanded") == "true"
    assert re.search(r"Showing 50 of [\d,]+ events", page.locator("#results-meta").inner_text())


def test_invalid_filter_in_a_link_shows_the_api_message(up: UpDemo, new_page: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token, "/?scope=bogus")
    page.wait_for_selector(".error-state")
    text = page.locator("#state").inner_text()
    assert "This filter is not valid" in text and "bogus" in text and "organization" in text  # names valid ones
    page.get_by_role("button", name="Reset filters").click()
    wait_idle(page)
    assert "scope=" not in page.url and len(table_rows(page)) == 50


def _log_warnings(up: UpDemo, last: int = 20) -> str:
    """The last warnings and errors of the app's log (shown when a test fails on what the server did)."""
    assert up.data_dir is not None
    lines = (up.data_dir / "auditlog.log").read_text(errors="replace").splitlines()
    return "\n".join([ln for ln in lines if '"warning"' in ln or '"error"' in ln][-last:])


def test_owner_verifies_integrity_from_the_page_and_admin_is_not_offered_it(up: UpDemo, new_page: Any,
                                                                           api: Any) -> None:
    page = new_page()
    sign_in(page, up.owner_token)
    assert page.locator("#integrity-note").is_hidden()
    owner = api(up.owner_token)
    before = owner.get("/v1/integrity").json()["counts"]["verified"]
    page.click("#verify")
    page.locator("#integrity-note.is-clean, #integrity-note.is-tampered, #integrity-note.is-failed").wait_for(timeout=30_000)
    note = page.locator("#integrity-note")
    assert "is-clean" in (note.get_attribute("class") or ""), f"{note.inner_text()}\n{_log_warnings(up)}"
    after = owner.get("/v1/integrity").json()["counts"]["verified"]  # reads are self-audited: the count may grow
    text = note.inner_text()
    m = re.match(r"Integrity verified .*: all ([\d,]+) events match", text)
    assert m, text
    assert 0 < before <= int(m.group(1).replace(",", "")) <= after
    screenshot(page, "integrity-verified")

    page = new_page()
    sign_in(page, up.admin_token)
    assert page.locator("#verify").is_hidden()
    assert api(up.admin_token).get("/v1/integrity").status_code == 403
