"""The browser tests' own harness: parsing the output of ``auditlog up --demo`` and the foreign-request check
(these run without chromium, except the last one, which proves the recorder sees a page's requests)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests import updemo
from tests.browser.conftest import RequestLog
from tests.updemo import parse_up_output

SAMPLE = """auditlog: starting (data /tmp/x) ...
auditlog is up (1.1 s)
  Page      http://127.0.0.1:8770/
  API docs  http://127.0.0.1:8770/docs
  Broker    127.0.0.1:19092   topics: audit.events, audit.events.dlq (6 partitions)
Demo events: 3491 stored
OWNER_TOKEN=aaa.bbb.ccc
ADMIN_TOKEN=ddd.eee.fff
READY (Ctrl-C to stop)
""".splitlines(keepends=True)


def test_parse_up_output_reads_url_broker_and_tokens() -> None:
    up = parse_up_output(SAMPLE)
    assert up is not None
    assert (up.url, up.origin, up.bootstrap) == ("http://127.0.0.1:8770/", "http://127.0.0.1:8770", "127.0.0.1:19092")
    assert (up.owner_token, up.admin_token) == ("aaa.bbb.ccc", "ddd.eee.fff")


def test_parse_up_output_waits_for_ready_and_every_value() -> None:
    assert parse_up_output(SAMPLE[:-1]) is None  # no READY yet
    assert parse_up_output([line for line in SAMPLE if not line.startswith("ADMIN_TOKEN")]) is None


def test_start_up_demo_times_out_on_a_silent_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    silent = tmp_path / "auditlog"
    silent.write_text("#!/bin/sh\necho starting\nexec sleep 60\n")
    silent.chmod(0o755)
    monkeypatch.setattr(updemo, "AUDITLOG", str(silent))
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"not ready after 1s:\nstarting"):
        updemo.start_up_demo(tmp_path, 1, 2, timeout=1.0)
    assert time.monotonic() - t0 < 10, "the timeout held although the process printed nothing more"


def test_request_log_flags_every_other_host() -> None:
    log = RequestLog("http://127.0.0.1:8770")
    for url in ("http://127.0.0.1:8770/", "http://127.0.0.1:8770/static/js/main.js", "blob:http://127.0.0.1:8770/1-2",
                "data:image/svg+xml,<svg/>", "https://cdn.example.com/lib.js", "http://localhost:8770/",
                "http://127.0.0.1:8771/v1/events", "blob:https://evil.example/1"):
        log.record(url)
    assert log.foreign() == ["https://cdn.example.com/lib.js", "http://localhost:8770/",
                             "http://127.0.0.1:8771/v1/events", "blob:https://evil.example/1"]


@pytest.mark.browser
def test_request_recorder_sees_a_page_reaching_for_another_host(browser: Any) -> None:
    ctx = browser.new_context()
    seen: list[str] = []
    ctx.on("request", lambda r: seen.append(r.url))
    page = ctx.new_page()
    page.set_content('<img src="http://127.0.0.2:9/pixel.png">')
    page.wait_for_timeout(300)
    ctx.close()
    log = RequestLog("http://127.0.0.1:8770")
    for url in seen:
        log.record(url)
    assert "http://127.0.0.2:9/pixel.png" in log.foreign()
