"""The page and /docs under the Content-Security-Policy the app sends (API.md "Limits and security"), in Debian's
chromium against ``auditlog up --demo``: a full session (sign in, keyword, scope/category, status, chips, expand,
paging, export) and a load of /docs raise no CSP violation, the responses carry the security headers, the catalog
is read only after sign-in and with the token, and /docs shows the endpoints without touching another host."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import RequestLog
from tests.browser.helpers import sign_in, table_rows, wait_idle, wait_until
from tests.updemo import UpDemo

pytestmark = pytest.mark.browser

CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
DOCS_CSP = f"{CSP}; img-src 'self' data:"
FIXED = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "x-frame-options": "DENY"}

# Recorded in every document before its own scripts run.
_RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample, source: e.sourceFile});
});
"""


class CspWatch:
    """CSP violations of one page: its ``securitypolicyviolation`` events and Chromium's console reports."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[str] = []
        page.add_init_script(_RECORD_VIOLATIONS)
        page.on("console", self._on_console)

    def _on_console(self, msg: Any) -> None:
        if "Content Security Policy" in msg.text:
            self.console.append(msg.text)

    def events(self) -> list[dict[str, Any]]:
        return list(self.page.evaluate("window.__csp || []"))

    def assert_none(self, when: str) -> None:
        assert self.events() == [], f"CSP violations {when}: {self.events()}"
        assert self.console == [], f"CSP console reports {when}: {self.console}"


class Seen:
    """Requests (with their Authorization header) and the response headers of one page, by path."""

    def __init__(self, page: Any) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.responses: dict[str, dict[str, str]] = {}
        page.on("request", lambda r: self.requests.append((r.url, r.headers.get("authorization"))))
        page.on("response", self._on_response)

    def _on_response(self, resp: Any) -> None:
        self.responses.setdefault(urlsplit(resp.url).path, resp.headers)

    def paths(self, prefix: str) -> list[str]:
        return [urlsplit(u).path for u, _ in self.requests if urlsplit(u).path.startswith(prefix)]


def assert_secured(headers: dict[str, str], what: str, csp: str = CSP) -> None:
    assert headers.get("content-security-policy") == csp, (what, headers)
    for name, value in FIXED.items():
        assert headers.get(name) == value, (what, name, headers)


def test_a_full_session_raises_no_csp_violation(up: UpDemo, new_page: Any, tmp_path: Path) -> None:
    page = new_page(enforce_csp=True)
    watch = CspWatch(page)
    seen = Seen(page)

    page.goto("/")
    page.wait_for_selector("#token-input", state="visible")
    page.wait_for_timeout(300)
    assert seen.paths("/v1/") == [], "nothing (the catalog included) is asked of the API before sign-in"
    sign_in(page, up.owner_token)
    catalog_calls = [auth for url, auth in seen.requests if urlsplit(url).path == "/v1/catalog"]
    assert catalog_calls == [f"Bearer {up.owner_token}"], "the catalog is read once, after sign-in, with the token"
    watch.assert_none("after sign-in")

    # the headers the browser received for the page, a module script and an API answer
    assert_secured(seen.responses["/"], "/")
    assert_secured(seen.responses["/static/js/main.js"], "main.js")
    assert_secured(seen.responses["/v1/events"], "/v1/events")
    assert "application/json" in seen.responses["/v1/events"]["content-type"]

    # styles set through CSSOM still apply: histogram bars and top-user bars have their sizes
    page.locator("#histogram .hist-stack").first.wait_for(state="attached")
    assert page.evaluate("Math.max(...[...document.querySelectorAll('#histogram .hist-stack')]"
                         ".map(s => s.getBoundingClientRect().height))") > 10
    assert page.evaluate("[...document.querySelectorAll('#top-users .top-bar')].some(b => b.style.width !== '')")

    # keyword, scope -> category, status, then remove a chip
    page.fill("#f-q", "vm")
    page.wait_for_url(re.compile(r"q=vm"))
    wait_idle(page)
    page.select_option("#f-scope", "service")
    wait_idle(page)
    page.select_option("#f-category", "vm")
    wait_idle(page)
    page.select_option("#f-status", "SUCCESS")
    wait_idle(page)
    assert table_rows(page) and {r["Status"] for r in table_rows(page)} == {"SUCCESS"}
    page.get_by_role("button", name=re.compile(r"Remove filter Status")).click()
    wait_idle(page)
    assert "status=" not in page.url
    watch.assert_none("while filtering")

    # expand a row: the JSON view indents nested lines (the --d custom property, set through CSSOM)
    first = page.locator("tr.event-row").first
    first.click()
    page.locator("tr.detail-row pre.json").wait_for(state="visible")
    indents = page.eval_on_selector_all("tr.detail-row .jl", "ls => ls.map(l => parseFloat(getComputedStyle(l).paddingLeft))")
    assert len(set(indents)) > 1, "nested JSON lines are indented"
    watch.assert_none("after expanding a row")

    # paging over the cursor
    page.click("#clear-all")
    wait_idle(page)
    page.goto("/?range=30d")
    wait_idle(page)
    assert len(table_rows(page)) == 50
    page.click("#load-more")
    wait_until(page, "document.querySelectorAll('tr.event-row').length === 100")
    watch.assert_none("after paging")

    # export: the blob download
    page.click("#export-btn")
    with page.expect_download() as info:
        page.click("#export-menu [data-format=csv]")
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    assert target.read_text(encoding="utf-8").count("\n") > 100
    page.wait_for_timeout(300)
    watch.assert_none("after the export")

    # the watch is live: an inline style attribute is reported
    page.evaluate("document.body.setAttribute('style', 'outline: 1px solid red')")
    wait_until(page, "window.__csp.length > 0", 5_000)
    assert watch.events()[0]["directive"].startswith("style-src")


def test_docs_are_self_hosted_and_show_the_endpoints(up: UpDemo, new_page: Any, requests_seen: RequestLog) -> None:
    page = new_page(enforce_csp=True)
    watch = CspWatch(page)
    seen = Seen(page)
    resp = page.goto("/docs")
    assert resp is not None and resp.status == 200
    assert_secured(resp.headers, "/docs", DOCS_CSP)
    page.locator(".opblock-summary-path", has_text="/v1/events").first.wait_for(state="visible")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    for endpoint in ("/v1/events", "/v1/events/export", "/v1/events/{event_id}", "/v1/catalog", "/healthz"):
        assert any(p.strip().replace("\u200b", "") == endpoint for p in paths), (endpoint, paths)
    assert page.locator(".info .title").inner_text().startswith("auditlog read API")
    # open one operation: its parameters and responses are shown
    page.locator(".opblock-summary-path", has_text=re.compile(r"^/v1/events$")).first.click()
    page.locator(".parameters-container .parameter__name", has_text="scope").first.wait_for(state="visible")
    assert page.locator(".responses-wrapper .response-col_status", has_text="401").count() > 0
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs/docs.js",
            "/openapi.json"} <= {urlsplit(u).path for u, _ in seen.requests}
    assert_secured(seen.responses["/docs/assets/swagger-ui-bundle.js"], "swagger-ui-bundle.js", DOCS_CSP)
    assert_secured(seen.responses["/openapi.json"], "/openapi.json")
    assert not requests_seen.foreign(), requests_seen.foreign()
    watch.assert_none("on /docs")
