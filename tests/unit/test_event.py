"""The v1 contract (EVENT.md) as enforced by schemas.parse_event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from auditlogkit.schemas import EventError, parse_event
from auditlogkit.schemas.catalog import Catalog
from tests.factories import make_event


def enc(ev: dict) -> bytes:
    return json.dumps(ev).encode()


def test_example_event_is_valid_and_normalised() -> None:
    ev = parse_event(enc(make_event(occurred_at="2026-11-21T10:14:03.512345+01:00")))
    assert ev.occurred_at == datetime(2026, 11, 21, 9, 14, 3, 512000, tzinfo=UTC)
    assert ev.to_json_bytes().count(b'"2026-11-21T09:14:03.512Z"') == 1


def test_missing_schema_version_means_1_and_description_is_rendered() -> None:
    raw = make_event(target={"name": "train-a100-4"})
    del raw["schema_version"], raw["description"]
    ev = parse_event(enc(raw))
    assert ev.schema_version == 1
    assert ev.description == "Delete VM train-a100-4"


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"schema_version": 2}, "schema_version", "unsupported schema_version 2"),
        ({"schema_version": "1"}, "schema_version", ""),
        ({"event_id": "not-a-uuid"}, "event_id", "UUID"),
        ({"occurred_at": "2026-11-21T09:14:03"}, "occurred_at", "timezone"),
        ({"org_id": ""}, "org_id", "at least 1"),
        ({"org_id": "x" * 129}, "org_id", "at most 128"),
        ({"scope": "bill"}, "scope", "valid: organization"),
        ({"category": "storage"}, "action", "unknown action 'vm.delete' for service/storage"),
        ({"scope": "workspace", "category": "member", "action": "member.delete"}, "action", "member.remove"),
        ({"status": "OK"}, "status", "SUCCESS"),
        ({"status": 1}, "status", ""),
        ({"actor": {"ip": "300.1.1.1"}}, "actor.ip", "IPv4 or IPv6"),
        ({"actor": {"email": "kim at acme"}}, "actor.email", "e-mail"),
        ({"actor": {"type": "robot"}}, "actor.type", ""),
        ({"actor": {"extra": 1}}, "actor.extra", "unknown field"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"description": "d" * 2001}, "description", "at most 2000"),
        ({"detail": {"blob": "x" * (64 * 1024)}}, "detail", "larger than"),
        ({"detail": [1, 2]}, "detail", ""),
    ],
)
def test_contract_violations_name_the_field(overrides: dict, field: str, fragment: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_event(enc(make_event(**overrides)))
    assert exc.value.field == field
    assert fragment in exc.value.reason


def test_future_timestamps_beyond_24h_are_rejected_but_small_skew_is_fine() -> None:
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    late = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
    parse_event(enc(make_event(occurred_at=soon)))
    with pytest.raises(EventError, match="24 h in the future"):
        parse_event(enc(make_event(occurred_at=late)))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{not json", "not valid JSON"), (b"\xff\xfe\x00", "not UTF-8"), (b"[]", "object"), (b"x" * (1024 * 1024 + 1), "larger than")],
)
def test_undecodable_messages(raw: bytes, fragment: str) -> None:
    with pytest.raises(EventError) as exc:
        parse_event(raw)
    assert fragment in exc.value.reason


def test_nul_bytes_are_stripped_and_ipv6_normalised() -> None:
    ev = parse_event(enc(make_event(description="a\x00b", actor={"ip": "2001:DB8:0:0:0:0:0:1"})))
    assert ev.description == "ab"
    assert ev.actor.ip == "2001:db8::1"


def test_operator_extra_catalog_extends_without_code_change(tmp_path) -> None:
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"scopes": [{"code": "service", "label": "Service", "categories": [
        {"code": "vm", "label": "VM", "actions": [{"code": "vm.resize", "label": "Resize VM"}]},
        {"code": "kv", "label": "Key Vault", "actions": [{"code": "kv.read", "label": "Read Secret"}]}]}]}))
    cat = Catalog.load(extra)
    assert parse_event(enc(make_event(action="vm.resize")), cat).action == "vm.resize"
    assert parse_event(enc(make_event(category="kv", action="kv.read")), cat).category == "kv"
    assert cat.check("service", "vm", "vm.delete") is None  # defaults kept
    with pytest.raises(EventError):
        parse_event(enc(make_event(action="vm.resize")))  # not in the default catalog


def test_optional_fields_accept_null_and_absence() -> None:
    ev = make_event(workspace_id=None, description=None, detail=None, source=None, request_id=None,
                    actor={"email": None, "ip": None, "user_agent": None}, target={"type": None, "id": None, "name": None})
    parsed = parse_event(enc(ev))
    assert parsed.workspace_id is None and parsed.actor.email is None and parsed.target.name is None
    assert parsed.description == "Delete VM"
    minimal = {k: v for k, v in make_event().items() if k in ("event_id", "occurred_at", "org_id", "scope", "category", "action", "status")}
    minimal["actor"] = {"id": "svc-1", "type": "service"}
    assert parse_event(enc(minimal)).target.id is None


def test_empty_workspace_id_is_rejected() -> None:
    with pytest.raises(EventError) as exc:
        parse_event(enc(make_event(workspace_id="")))
    assert exc.value.field == "workspace_id"


def test_format_ts_takes_naive_values_as_utc_whatever_the_local_zone(monkeypatch) -> None:
    import time

    from auditlogkit.schemas import format_ts

    monkeypatch.setenv("TZ", "Asia/Seoul")
    time.tzset()
    try:
        assert format_ts(datetime(2026, 11, 21, 9, 14, 3, 512999)) == "2026-11-21T09:14:03.512Z"
        aware = datetime(2026, 11, 21, 18, 14, 3, 512000, tzinfo=timezone(timedelta(hours=9)))
        assert format_ts(aware) == "2026-11-21T09:14:03.512Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_escaped_nul_inside_strings_is_removed_everywhere_but_escaped_backslashes_stay() -> None:
    raw = enc(make_event(description="a\x00b", target={"name": "vm\x00-1"}, detail={"k\x00": ["x\x00y"]}))
    assert b"\\u0000" in raw
    ev = parse_event(raw)
    assert (ev.description, ev.target.name, ev.detail) == ("ab", "vm-1", {"k": ["xy"]})
    literal = enc(make_event(description="C:\\u0000dir"))  # a backslash followed by the text u0000
    assert parse_event(literal).description == "C:\\u0000dir"


def test_ipv4_fast_path_and_ipv6_normalisation_and_rejects() -> None:
    for given, stored in [("203.0.113.7", "203.0.113.7"), ("::FFFF:203.0.113.7", "::ffff:203.0.113.7"),
                          ("2001:0db8::0001", "2001:db8::1"), ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
                          ("::", "::"), ("fe80:0:0:0:0:0:0:1", "fe80::1")]:
        assert parse_event(enc(make_event(actor={"ip": given}))).actor.ip == stored
    for bad in ("203.0.113.256", "01.2.3.4", "1.2.3", "203.0.113.7 ", "fe80::1::2", "fe80::1%eth0", "12345::1",
                "1.2.3.4.5", "", "::g"):
        with pytest.raises(EventError) as exc:
            parse_event(enc(make_event(actor={"ip": bad})))
        assert exc.value.field == "actor.ip", bad


def test_detail_size_limit_applies_to_detail_inside_a_large_message() -> None:
    ok = make_event(detail={"pad": "x" * (60 * 1024)}, description="d" * 1000)
    parse_event(enc(ok))
    with pytest.raises(EventError) as exc:
        parse_event(enc(make_event(detail={"pad": "x" * (65 * 1024)})))
    assert exc.value.field == "detail"
