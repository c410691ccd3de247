"""Every query of docs/analysts.md, read from the markdown (so doc and test cannot drift), run against the
real chDB engine on generated events (with a decoy org and a re-sent duplicate), and checked for the right
answer. Also: the documented column table matches the real table, column for column."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.store import Store
from tests.factories import make_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
NOW = datetime.now(UTC).replace(microsecond=0)
SPRAY_IP = "185.220.101.47"


def doc_queries() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = dict(re.findall(r"<!-- query: (\w+) -->\s*```sql\n(.*?)```", text, flags=re.S))
    assert len(found) == text.count("```sql"), "every ```sql block in docs/analysts.md needs a <!-- query: name -->"
    return found


def ago(**kw: float) -> datetime:
    return NOW - timedelta(**kw)


def ev(org: str, scope: str, category: str, action: str, when: datetime, who: str, **kw: Any) -> dict[str, Any]:
    actor = {"id": f"u-{who}", "email": f"{who}@{org}.example", "ip": kw.pop("ip", "203.0.113.9"),
             "user_agent": kw.pop("ua", "Mozilla/5.0")}
    return make_event(org_id=org, scope=scope, category=category, action=action,
                      occurred_at=when.isoformat().replace("+00:00", "Z"), actor=actor,
                      status=kw.pop("status", "SUCCESS"), description=None, **kw)


def seed_events() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(events, the one event re-sent by a producer retry)."""
    E: list[dict[str, Any]] = []
    for org in ("acme", "globex"):  # globex is the decoy: same stories, must never show up for acme
        # accidental VM deletion
        deletion = ev(org, "service", "vm", "vm.delete", ago(days=2), "park", workspace_id="ml-research",
                      target={"type": "vm", "id": "vm-1", "name": "train-a100-4"},
                      detail={"before": {"state": "running", "flavor": "a100.8x"}, "after": None})
        E += [deletion,
              ev(org, "service", "vm", "vm.delete", ago(days=1), "kim", target={"type": "vm", "id": "vm-2", "name": "dev-box"}),
              ev(org, "service", "vm", "vm.delete", ago(days=40), "kim", target={"type": "vm", "id": "vm-3", "name": "train-old"})]
        # large instances: window [6 days ago, 4 days ago)
        for i in range(3):
            E.append(ev(org, "service", "vm", "vm.create", ago(days=5, minutes=-7 * i), "choi",
                        target={"type": "vm", "id": f"vm-b{i}", "name": f"burst-h100-{i}"},
                        detail={"before": None, "after": {"state": "running", "flavor": "h100.8x"}}))
        E += [ev(org, "service", "vm", "vm.create", ago(days=5, hours=1), "lee", target={"type": "vm", "id": "vm-l", "name": "lee-a100"},
                 detail={"after": {"flavor": "a100.4x"}}),
              ev(org, "service", "vm", "vm.create", ago(days=5, hours=2), "park", target={"type": "vm", "id": "vm-p", "name": "small"},
                 detail={"after": {"flavor": "a100.1x"}}),
              ev(org, "service", "vm", "vm.create", ago(days=5, hours=3), "kim", status="FAILED",
                 target={"type": "vm", "id": "vm-k", "name": "denied"}, detail={"after": {"flavor": "h100.8x"}}),
              ev(org, "service", "vm", "vm.create", ago(days=8), "choi", target={"type": "vm", "id": "vm-o", "name": "outside"},
                 detail={"after": {"flavor": "h100.8x"}})]
        # password spraying from one IP against three accounts + one OTP failure from elsewhere
        for i in range(15):
            who = ("kim", "lee", "park")[i % 3]
            E.append(ev(org, "authentication", "sign_in", "sign_in.password_failure", ago(hours=20, seconds=-20 * i), who,
                        status="FAILED", ip=SPRAY_IP, workspace_id=None, ua="python-requests/2.31.0"))
        E.append(ev(org, "authentication", "sign_in", "sign_in.otp_failure", ago(hours=3), "kim", status="FAILED",
                    ip="10.0.0.1", workspace_id=None))
        E.append(ev(org, "authentication", "sign_in", "sign_in.password_failure", ago(days=3), "kim", status="FAILED",
                    ip=SPRAY_IP, workspace_id=None))  # outside the 1-day window
        # access tokens
        tok = {"type": "access_token", "id": None}
        E += [ev(org, "organization", "access_token", "access_token.create", ago(days=9), "lee", workspace_id=None,
                 target={**tok, "name": "tok-a"}),
              ev(org, "organization", "access_token", "access_token.read", ago(days=8, hours=12), "lee", workspace_id=None,
                 target={**tok, "name": "tok-a"}),
              ev(org, "organization", "access_token", "access_token.read", ago(days=8, hours=6), "lee", workspace_id=None,
                 target={**tok, "name": "tok-a"}),
              ev(org, "organization", "access_token", "access_token.delete", ago(days=8), "kim", workspace_id=None,
                 target={**tok, "name": "tok-a"}),
              ev(org, "organization", "access_token", "access_token.create", ago(days=3), "lee", workspace_id=None,
                 target={**tok, "name": "tok-b"})]
        # policy attachments
        pol = {"type": "policy", "id": None}
        E += [ev(org, "organization", "policy", "policy.attach", ago(days=5), "kim", workspace_id=None,
                 target={**pol, "name": "GpuOperator"}, detail={"before": None, "after": {"principal": f"lee@{org}.example"}}),
              ev(org, "organization", "policy", "policy.attach", ago(days=3), "kim", workspace_id=None,
                 target={**pol, "name": "BillingViewer"}, detail={"before": None, "after": {"principal": f"park@{org}.example"}}),
              ev(org, "organization", "policy", "policy.detach", ago(days=2), "kim", workspace_id=None,
                 target={**pol, "name": "GpuOperator"}, detail={"before": {"principal": f"lee@{org}.example"}, "after": None})]
        # quota changes
        q = {"type": "quota", "id": None, "name": "h100"}
        E += [ev(org, "workspace", "gpu_quota", "gpu_quota.change", ago(days=4), "kim", workspace_id="ml-research",
                 target=q, detail={"before": {"h100": 8}, "after": {"h100": 16}}),
              ev(org, "workspace", "gpu_quota", "gpu_quota.request", ago(days=1), "lee", workspace_id="ml-research",
                 status="FAILED", target=q, detail={"before": {"h100": 16}, "after": {"h100": 32}})]
    return E, E[0]


@pytest.fixture
def seeded(store: Store) -> Store:
    events, resent = seed_events()
    cat = get_catalog()
    rows = [event_row(parse_event(e, cat), NOW, "audit.events", 0, i) for i, e in enumerate(events)]
    c = store.client()
    c.insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS))
    # a producer retry: the same event again, in a later batch
    c.insert(EVENTS_TABLE, [event_row(parse_event(resent, cat), NOW, "audit.events", 1, 0)], column_names=list(EVENT_COLUMNS))
    return store


def run(store: Store, name: str, **params: Any) -> list[dict[str, Any]]:
    res = store.client().query(doc_queries()[name], parameters={"org": "acme", **params})
    return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]


def utc(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


CHECKS: dict[str, Any] = {}


def check(fn: Any) -> Any:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


@check
def check_vm_deletions(s: Store) -> None:
    rows = run(s, "vm_deletions", since=ago(days=30), vm_pattern="train%")
    assert [(r["vm"], r["actor_email"], r["flavor_before"], r["state_before"]) for r in rows] == [
        ("train-a100-4", "park@acme.example", "a100.8x", "running")]  # once despite the re-sent copy
    assert len(run(s, "vm_deletions", since=ago(days=30), vm_pattern="%")) == 2


@check
def check_large_instances(s: Store) -> None:
    rows = run(s, "large_instances", **{"from": ago(days=6), "to": ago(days=4), "min_gpus": 4})
    assert [(r["actor_email"], r["vms"], sorted(r["flavors"])) for r in rows] == [
        ("choi@acme.example", 3, ["h100.8x"]), ("lee@acme.example", 1, ["a100.4x"])]


@check
def check_failures_per_email(s: Store) -> None:
    rows = run(s, "failures_per_email", since=ago(days=1), threshold=5)
    assert [(r["actor_email"], r["failures"], r["otp_failures"], r["ips"]) for r in rows] == [
        ("kim@acme.example", 6, 1, 2), ("lee@acme.example", 5, 0, 1), ("park@acme.example", 5, 0, 1)]
    assert run(s, "failures_per_email", since=ago(days=1), threshold=7) == []


@check
def check_failures_per_ip(s: Store) -> None:
    rows = run(s, "failures_per_ip", since=ago(days=1), threshold=10)
    assert [(r["actor_ip"], r["failures"], r["accounts"], r["user_agents"]) for r in rows] == [
        (SPRAY_IP, 15, 3, ["python-requests/2.31.0"])]


@check
def check_token_lifecycle(s: Store) -> None:
    rows = run(s, "token_lifecycle", since=ago(days=30))
    assert [(r["token"], r["created_by"], r["reads"], r["deleted_by"]) for r in rows] == [
        ("tok-a", "lee@acme.example", 2, "kim@acme.example"), ("tok-b", "lee@acme.example", 0, None)]
    assert utc(rows[0]["created_at"]) == ago(days=9) and utc(rows[0]["deleted_at"]) == ago(days=8)
    assert rows[1]["deleted_at"] is None


@check
def check_policy_attachment_history(s: Store) -> None:
    rows = run(s, "policy_attachment_history", since=ago(days=30))
    assert [(r["action_label"], r["policy"], r["principal"], r["changed_by"]) for r in rows] == [
        ("Attach Policy", "GpuOperator", "lee@acme.example", "kim@acme.example"),
        ("Attach Policy", "BillingViewer", "park@acme.example", "kim@acme.example"),
        ("Detach Policy", "GpuOperator", "lee@acme.example", "kim@acme.example")]


@check
def check_policy_attached_now(s: Store) -> None:
    rows = run(s, "policy_attached_now")
    assert [(r["policy"], r["principal"]) for r in rows] == [("BillingViewer", "park@acme.example")]


@check
def check_quota_changes(s: Store) -> None:
    rows = run(s, "quota_changes", since=ago(days=30))
    assert [(r["action_label"], r["gpu"], r["quota_before"], r["quota_after"], r["status"]) for r in rows] == [
        ("Change Quota", "h100", 8, 16, "SUCCESS"), ("Request Quota", "h100", 16, 32, "FAILED")]


@check
def check_daily_counts(s: Store) -> None:
    rows = run(s, "daily_counts", days=30)
    got = {(r["day"], r["category"]): (r["total"], r["failed"]) for r in rows}
    # The view counts stored rows (the re-sent deletion twice); compare with the stored rows of acme.
    want = {
        (d, c): (n, f)
        for d, c, n, f in s.client().query(
            "SELECT toDate(occurred_at) AS d, category, count(), countIf(status = 'FAILED') FROM audit_events "
            "WHERE org_id = 'acme' AND toDate(occurred_at) >= today() - 30 GROUP BY d, category").result_rows
    }
    assert got == want and got
    vm_day = (ago(days=2).date(), "vm")
    exact = s.client().query("SELECT count() FROM audit_events_flat WHERE org_id = 'acme' AND category = 'vm' "
                             "AND toDate(occurred_at) = {d:Date}", parameters={"d": vm_day[0]}).result_rows[0][0]
    assert got[vm_day][0] == exact + 1  # the documented difference: one re-sent duplicate


def test_every_doc_query_has_a_check() -> None:
    assert set(doc_queries()) == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_doc_query(seeded: Store, name: str) -> None:
    CHECKS[name](seeded)


def test_documented_columns_match_the_table(store: Store) -> None:
    """The column table of docs/analysts.md lists every column of audit_events, in order, with its type."""
    section = DOC.read_text(encoding="utf-8").split("| column | type | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \| ([A-Za-z0-9]+)", section, flags=re.M)
    real = store.client().query(
        "SELECT name, extract(type, '^[A-Za-z0-9]+') FROM system.columns "
        "WHERE database = currentDatabase() AND table = {t:String} ORDER BY position",
        parameters={"t": EVENTS_TABLE}).result_rows
    assert documented == [tuple(r) for r in real]


def test_flat_view_has_every_column_and_the_labels(store: Store) -> None:
    cols = [r[0] for r in store.client().query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'audit_events_flat' "
        "ORDER BY position").result_rows]
    assert set(EVENT_COLUMNS) <= set(cols)
    assert {"scope_label", "category_label", "action_label"} <= set(cols)
