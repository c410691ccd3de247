"""Event data is text, never markup: an event whose every free-text field carries HTML/script is shown literally
in the row, the chips, the top lists, the autocomplete and the expanded detail (facts, changes table, JSON), and
nothing of it runs. Producers are outside the page's trust boundary (EVENT.md only bounds lengths)."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from auditlogkit.producer import AuditProducerSync
from tests.browser.helpers import sign_in, table_rows, wait_idle
from tests.updemo import UpDemo

pytestmark = pytest.mark.browser

# Each payload sets window.__xss if it is ever parsed as HTML (an <img> that fails to load runs onerror).
IMG = "<img src=x onerror=window.__xss=1>"
EMAIL = "x<img/src=x/onerror=window.__xss=1>@acme.example"  # valid e-mail syntax (no spaces)

_INJECTED = """() => ({
  xss: window.__xss === 1,
  elements: document.querySelectorAll('#main img, #main script, #main iframe, [onerror], [onclick]').length,
})"""


def test_event_fields_render_as_text_not_html(up: UpDemo, new_page: Any, api: Any) -> None:
    marker = f"xss-{uuid.uuid4().hex[:8]}"
    name = f"{marker}{IMG}"
    description = f"Deleted {marker} <script>window.__xss=1</script>{IMG}"
    with AuditProducerSync(up.bootstrap, "audit.events") as producer:
        producer.send_and_wait({
            "org_id": "acme", "workspace_id": "ml-research", "scope": "service", "category": "vm",
            "action": "vm.delete", "status": "FAILED",
            "occurred_at": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
            "actor": {"id": f"u-{IMG}", "email": EMAIL, "type": "user", "ip": "203.0.113.66",
                      "user_agent": f"{IMG}/1.0 {IMG}"},
            "target": {"type": f"vm{IMG}", "id": f"vm-{IMG}", "name": name},
            "description": description,
            "source": IMG, "request_id": IMG,
            "detail": {"before": {IMG: IMG, "state": "running"}, "after": {IMG: "<b>bold</b>", "state": "gone"}},
        })
    client = api(up.owner_token)
    deadline = time.monotonic() + 30
    while not client.get("/v1/events", params={"q": marker}).json()["data"]:
        assert time.monotonic() < deadline, "the consumer did not store the event within 30 s"
        time.sleep(0.3)

    page = new_page()
    sign_in(page, up.owner_token, f"/?q={marker}")
    [row] = table_rows(page)
    assert row["Description"] == description
    assert row["Target"].splitlines()[0] == name
    assert row["User"].splitlines()[0] == EMAIL
    # the top lists come from their own /v1/stats call, which may answer after the table: wait for it
    page.wait_for_function("(email) => document.querySelector('#top-users').innerText.includes(email)", arg=EMAIL,
                           timeout=15_000)  # shown as text: as markup the e-mail would not read back as typed

    page.locator("tr.event-row").first.click()
    pre = page.locator("tr.detail-row pre.json")
    pre.wait_for(state="visible")
    assert json.loads(pre.inner_text()) == client.get(f"/v1/events/{row['id']}").json()
    changes = page.locator("tr.detail-row .changes-table").inner_text()
    assert IMG in changes and "<b>bold</b>" in changes
    facts = page.locator("tr.detail-row .detail-facts dl").inner_text()
    assert facts.count(IMG) >= 5  # user id, user agent, target (type, name, id), source, request id

    # the target's Filter button puts the raw value in a chip and the URL
    page.locator("tr.detail-row dd", has_text=name).get_by_role("button", name="Filter").click()
    wait_idle(page)
    assert any(f"vm-{IMG}" in c for c in page.locator("#chips li").all_inner_texts())

    # the autocomplete highlights the typed prefix inside the suggestion, as text
    page.locator("#f-email").press_sequentially("x<img", delay=30)
    option = page.locator("#f-email-list [role=option]", has_text=EMAIL)
    option.wait_for(state="visible")
    assert option.inner_text() == EMAIL

    page.wait_for_timeout(300)  # a failed <img> load would have fired onerror by now
    assert page.evaluate(_INJECTED) == {"xss": False, "elements": 0}
