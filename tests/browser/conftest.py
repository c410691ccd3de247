"""Fixtures of the browser tests: one ``auditlog up --demo`` per session (subprocess on loopback ports), Debian's
chromium driven by Playwright (never a downloaded browser), and pages that record every request they make so a
test fails if the page reaches for any host other than the app's own."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from auditlogkit.server.broker import free_port
from tests.updemo import UpDemo, start_up_demo, stop_up_demo

CHROMIUM = os.environ.get("AUDITLOG_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
TIMEZONE = "Asia/Seoul"  # a non-UTC browser zone, so the UTC/local switch shows a real difference


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium); "
                    "scripts/test does this")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[test]')")
    return CHROMIUM


@pytest.fixture(scope="package")
def up(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[UpDemo]:
    """``auditlog up --demo`` for the browser tests, stopped by PID when they are done."""
    data = tmp_path_factory.mktemp("up-demo")
    demo = start_up_demo(data, free_port(), free_port())
    try:
        yield demo
    finally:
        stop_up_demo(demo)


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    """Package scope on purpose: Playwright's sync API keeps an event loop running in the main thread while it
    is open, which breaks every later ``asyncio.run`` in the session (other packages' fixtures and tests)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class RequestLog:
    origin: str
    urls: list[str] = field(default_factory=list)

    def record(self, url: str) -> None:
        self.urls.append(url)

    def foreign(self) -> list[str]:
        """Requests that left the app's origin (blob:/data: URLs count as the page's own)."""
        out = []
        for url in self.urls:
            if url.startswith("data:"):
                continue
            inner = url[5:] if url.startswith("blob:") else url
            parts = urlsplit(inner)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                out.append(url)
        return out


@pytest.fixture
def requests_seen(up: UpDemo) -> RequestLog:
    return RequestLog(up.origin)


@pytest.fixture
def new_page(browser: Any, up: UpDemo, requests_seen: RequestLog) -> Iterator[Callable[..., Any]]:
    """Factory of fresh pages (own context: empty session/local storage). Every request of every page is
    recorded; at teardown the test fails if any went to a host other than the app's, or if the page threw an
    uncaught error. The app's Content-Security-Policy is enforced only with ``enforce_csp=True``: Playwright's
    ``wait_for_function`` evaluates its predicate with ``eval``, which that policy forbids (and the other tests
    show the page is safe by itself, without the policy's help); under it, wait with ``helpers.wait_until``."""
    contexts: list[Any] = []
    js_errors: list[str] = []

    def make(width: int = 1280, height: int = 860, *, enforce_csp: bool = False) -> Any:
        ctx = browser.new_context(
            viewport={"width": width, "height": height}, timezone_id=TIMEZONE, locale="en-US",
            accept_downloads=True, base_url=up.url, bypass_csp=not enforce_csp,
        )
        ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=up.origin)
        ctx.on("request", lambda r: requests_seen.record(r.url))
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda e: js_errors.append(str(e)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert requests_seen.urls, "no request was recorded: the request log is not wired"
    assert not requests_seen.foreign(), f"the page requested other hosts: {requests_seen.foreign()}"
    assert not js_errors, f"uncaught errors in the page: {js_errors}"


@pytest.fixture
def api(up: UpDemo) -> Callable[..., httpx.Client]:
    """httpx clients on the app with a given token."""
    clients: list[httpx.Client] = []

    def make(token: str) -> httpx.Client:
        c = httpx.Client(base_url=up.origin, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(c)
        return c

    yield make  # type: ignore[misc]
    for c in clients:
        c.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of the main states under tests/artifacts/screenshots/ (git-ignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
