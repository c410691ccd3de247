"""Small helpers shared by the browser tests (reading the table, signing in, waiting for loads)."""

from __future__ import annotations

import time
from typing import Any

import httpx

COLUMNS = ["Timestamp", "User", "Scope", "Category", "Action", "Target", "Status", "Description", "IP address",
           "User agent"]

_IDLE = """() => {
  const main = document.getElementById('main');
  return main.getAttribute('aria-busy') === 'false' && !document.querySelector('tr.skeleton');
}"""

_ROWS = """rows => rows.map(tr => {
  const out = {id: tr.dataset.id};
  for (const td of tr.querySelectorAll('td[data-label]')) out[td.dataset.label] = td.innerText.trim();
  return out;
})"""


def wait_until(page: Any, js: str, timeout: float = 20_000) -> None:
    """Poll ``page.evaluate(js)`` until it is truthy (``timeout`` in ms). Unlike ``page.wait_for_function`` it
    needs no ``eval`` in the page, so it also works under the app's Content-Security-Policy."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true within {timeout:.0f} ms: {js}")
        page.wait_for_timeout(50)


def wait_idle(page: Any, timeout: float = 20_000) -> None:
    """Wait until the page finished loading its current query (rows or an empty/error state shown)."""
    wait_until(page, _IDLE, timeout)


def sign_in(page: Any, token: str, path: str = "/") -> None:
    page.goto(path)
    page.wait_for_selector("#token-input", state="visible")
    page.fill("#token-input", token)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin", state="hidden")
    wait_idle(page)


def table_rows(page: Any) -> list[dict[str, str]]:
    """Each summary row as {column label: visible text, "id": event_id}."""
    return page.eval_on_selector_all("tr.event-row", _ROWS)  # type: ignore[no-any-return]


def api_all(client: httpx.Client, params: dict[str, Any], limit: int = 1000) -> list[dict[str, Any]]:
    """Every event of a filtered view from GET /v1/events, following the cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/events", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["data"])
        cursor = body["next_cursor"]
        if not cursor:
            return out
