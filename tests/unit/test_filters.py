"""The one filter table (auditlogkit.query_api.read.filters.FILTERS) and everything derived from it: the API's query parameters,
the CLI's flags, the page's filter list (static/js/state.js, checked against the table), validation, the SQL."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from auditlogkit.query_api import cli
from auditlogkit.query_api.core import page_filters
from auditlogkit.query_api.core.errors import ApiError, install_error_handlers
from auditlogkit.query_api.read.filters import (
    BY_NAME,
    DEFAULT_RANGE,
    FILTERS,
    SEARCH_EXPR,
    EventFilters,
    FilterError,
    parse_filters,
)
from auditlogkit.query_api.routes import events, stats
from auditlogkit.query_api.routes.page import STATIC_DIR
from auditlogkit.query_api.security.principal import Principal
from auditlogkit.query_api.security.scoping import ScopedQuery
from auditlogkit.schemas.catalog import get_catalog

CATALOG = get_catalog()
STATIC_JS = STATIC_DIR / "js"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OWNER = Principal("u", "u@acme.example", "acme", "org_owner", (), frozenset({"audit:read"}))
ADMIN = Principal("u", "u@acme.example", "acme", "workspace_admin", ("w1",), frozenset({"audit:read"}))
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*):")


def parse(**raw: Any) -> EventFilters:
    return parse_filters(CATALOG, raw, now=NOW)


# ----- the table ----------------------------------------------------------------------------------------------
def test_the_table_is_well_formed() -> None:
    names = [s.name for s in FILTERS]
    assert len(names) == len(set(names)) and set(BY_NAME) == set(names)
    for s in FILTERS:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", s.name), s.name
        assert s.help and "%" not in s.help, s.name


# ----- API parameters -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    app = FastAPI()
    app.include_router(events.router)
    app.include_router(stats.router)
    return app.openapi()


@pytest.mark.parametrize(("path", "own"), [("/v1/events", ["limit", "cursor"]), ("/v1/events/export", ["format"]),
                                           ("/v1/stats", ["interval", "group_by", "top"])])
def test_api_query_parameters_are_the_table(openapi: dict[str, Any], path: str, own: list[str]) -> None:
    params = openapi["paths"][path]["get"]["parameters"]
    assert all(p["in"] == "query" for p in params)
    by_name = {p["name"]: p for p in params}
    assert len(by_name) == len(params)
    # the endpoint's own parameters, then exactly one per filter, in table order
    assert [p["name"] for p in params if p["name"] not in own] == [s.name for s in FILTERS]
    for s in FILTERS:
        p = by_name[s.name]
        assert p["required"] is False and p["description"] == s.help, s.name
        schema = {k: v for k, v in p["schema"].items() if k not in ("title", "description")}
        assert schema == TypeAdapter(s.type | None).json_schema(), s.name


def test_the_api_types_are_the_documented_ones(openapi: dict[str, Any]) -> None:
    """The parameter types of API.md (a change here is a change of the public API)."""
    schema = {p["name"]: p["schema"]["anyOf"][0] for p in openapi["paths"]["/v1/events"]["get"]["parameters"]
              if p["name"] in BY_NAME}
    assert schema["start"] == schema["end"] == {"type": "string", "format": "date-time"}
    assert schema["action"] == {"type": "array", "items": {"type": "string"}}
    assert schema["status"] == {"type": "string", "enum": ["SUCCESS", "FAILED"]}
    others = {"scope", "category", "actor_email", "actor_id", "ip", "workspace_id", "target", "q", "org_id"}
    assert all(schema[n] == {"type": "string"} for n in others)


# ----- CLI flags ----------------------------------------------------------------------------------------------
def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """(the top-level parser, the ``export`` sub-parser)."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.register(sub)
    return parser, sub.choices["export"]


NON_FILTER_FLAGS = {"-h", "--help", "--url", "--org", "--token", "--workspace", "--format", "-o", "--output"}


def test_cli_has_exactly_one_flag_per_filter() -> None:
    _, export = _parsers()
    actions = [a for a in export._actions if not set(a.option_strings) & NON_FILTER_FLAGS]
    assert [a.option_strings for a in actions] == [[s.flag] for s in FILTERS]
    for a, s in zip(actions, FILTERS, strict=True):
        assert a.dest == s.name and a.help == s.help and a.default is None, s.name
        assert isinstance(a, argparse._AppendAction) == s.repeatable, s.name


def test_cli_flags_become_the_api_parameters() -> None:
    args = _parsers()[0].parse_args([
        "export", "--org", "acme", "--start", "2026-01-01T00:00:00Z", "--action", "vm.create", "--action",
        "vm.delete", "--actor-email", "a@acme.example", "--workspace-id", "w1", "--org-id", "acme", "--q", "disk"])
    raw = cli._filters(args)
    assert raw == {"start": "2026-01-01T00:00:00Z", "action": ["vm.create", "vm.delete"],
                   "actor_email": "a@acme.example", "workspace_id": "w1", "org_id": "acme", "q": "disk"}
    f = parse_filters(CATALOG, raw, now=NOW)  # what store mode does; HTTP mode sends raw as the query
    assert f.start == datetime(2026, 1, 1, tzinfo=UTC) and f.get("action") == ("vm.create", "vm.delete")


# ----- the page's list ----------------------------------------------------------------------------------------
def _block(src: str, start: str) -> str:
    """The text from ``start`` to the end of its (brace- or bracket-delimited) block."""
    i = src.index(start)
    opener = next(c for c in src[i + len(start) - 1:] if c in "[{")
    closer = {"[": "]", "{": "}"}[opener]
    j = src.index(opener, i + len(start) - 1)
    depth = 0
    for k in range(j, len(src)):
        depth += {opener: 1, closer: -1}.get(src[k], 0)
        if depth == 0:
            return src[j:k + 1]
    raise AssertionError(f"unbalanced block after {start!r}")


def test_the_pages_filter_list_is_generated_from_the_table() -> None:
    """The page takes its filters (names, chip labels, widgets) from static/js/filter_table.js, which is the table
    rendered (regenerate with ``python -m auditlogkit.query_api.core.page_filters``); its own modules name no filter label."""
    assert (STATIC_JS / "filter_table.js").read_text(encoding="utf-8") == page_filters.render(), (
        "static/js/filter_table.js is stale: run python -m auditlogkit.query_api.core.page_filters")
    assert {s.name for s in FILTERS if s.label} == {s.name for s in FILTERS if s.widget}
    state = (STATIC_JS / "state.js").read_text(encoding="utf-8")
    chips_js = (STATIC_JS / "chips.js").read_text(encoding="utf-8")
    assert 'import { FILTERS } from "./filter_table.js";' in state
    for s in FILTERS:
        if s.label:
            assert f'"{s.label}"' not in state + chips_js, f"the page declares the label {s.label!r} itself"
    empty = _block(state, "export function emptyState() {")
    assert not re.findall(r'^\s*(\w+):', empty, re.M) or set(re.findall(r'^\s*(\w+):', empty, re.M)) <= {"range"}


# ----- validation -----------------------------------------------------------------------------------------------
INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"start": "yesterday"}, "start", "RFC 3339"),
    ({"start": datetime(999, 12, 25, tzinfo=UTC)}, "start", "between"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start", "after"),
    ({"end": "1970-01-03T00:00:00Z"}, "start", "between"),  # the default start (end - 7 days) is too early
    ({"end": "9999-12-31T23:59:59+14:00"}, "end", "between"),
    ({"end": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "end", "between"),
    ({"scope": "bill"}, "scope", "valid: organization"),
    ({"scope": "service", "category": "member"}, "category", "valid: vm"),
    ({"category": "nope"}, "category", "valid:"),
    ({"action": ["vm.create", "vm.explode"]}, "action", "valid:"),
    ({"scope": "billing", "action": "vm.create"}, "action", "credit.grant"),
    ({"scope": "service", "category": "vm", "action": ["storage.create"]}, "action", "service/vm"),
    ({"status": "OK"}, "status", "SUCCESS"),
    ({"status": "failed"}, "status", "FAILED"),
    ({"actor_email": "a" * 513}, "actor_email", "512"),
    ({"actor_id": "u\x00"}, "actor_id", "NUL"),
    ({"ip": "300.1.1.1"}, "ip", "IPv4"),
    ({"workspace_id": "w" * 600}, "workspace_id", "512"),
    ({"target": "\x00"}, "target", "NUL"),
    ({"q": "nul\x00byte"}, "q", "NUL"),
    ({"org_id": "o" * 513}, "org_id", "512"),
]


@pytest.mark.parametrize(("raw", "field", "needle"), INVALID)
def test_invalid_values_name_the_filter(raw: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(FilterError) as ei:
        parse(**raw)
    assert ei.value.field == field and needle in ei.value.message and not ei.value.forbidden, ei.value.message
    assert not isinstance(ei.value, ApiError)


def test_every_filter_has_a_validation_case() -> None:
    assert {field for _, field, _ in INVALID} == set(BY_NAME)


def test_unknown_filter_name_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse(nope="x")


def test_valid_values_and_defaults() -> None:
    f = parse()
    assert f.end == NOW and f.start == NOW - DEFAULT_RANGE and dict(f.values) == {"start": f.start, "end": f.end}
    f = parse(start=datetime(2026, 3, 1, 10, 0), end="2026-03-02T10:00:00+02:00", scope="service", category="vm",
              action=["vm.create", "", "vm.create", "vm.delete"], status="FAILED", actor_email="", ip=" 2001:DB8:0::A ",
              target=None, q="Disk")
    assert f.start == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)  # no zone: UTC
    assert f.end == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert f.get("action") == ("vm.create", "vm.delete")  # empty dropped, each once, in order
    assert f.get("ip") == "2001:db8::a"  # normalised like the stored value
    assert f.get("actor_email") is None and f.get("target") is None  # empty/absent: no filter
    assert f.describe() == {"start": "2026-03-01T10:00:00Z", "end": "2026-03-02T08:00:00Z", "scope": "service",
                            "category": "vm", "action": ["vm.create", "vm.delete"], "status": "FAILED",
                            "ip": "2001:db8::a", "q": "Disk"}
    assert list(f.describe()) == [s.name for s in FILTERS if s.name in f.values]  # table order
    with pytest.raises(KeyError):
        f.get("nope")


def test_tenant_filters_outside_the_token_are_forbidden() -> None:
    for principal, raw, field in ((OWNER, {"org_id": "globex"}, "org_id"), (ADMIN, {"workspace_id": "w2"}, "workspace_id")):
        with pytest.raises(FilterError) as ei:
            ScopedQuery(principal).with_filters(parse(**raw), CATALOG)
        assert ei.value.forbidden and ei.value.field == field
    ScopedQuery(OWNER).with_filters(parse(org_id="acme", workspace_id="w9"), CATALOG)  # an owner sees every workspace
    ScopedQuery(ADMIN).with_filters(parse(workspace_id="w1"), CATALOG)


def test_the_api_answers_filter_errors_with_the_error_body() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bad")
    def bad(forbidden: bool = False) -> None:
        raise FilterError("scope", "unknown scope 'x'", forbidden=forbidden)

    with TestClient(app) as c:
        r = c.get("/bad")
        assert r.status_code == 422 and r.json() == {"error": {"code": "invalid_parameter", "field": "scope",
                                                              "message": "unknown scope 'x'"}}
        r = c.get("/bad", params={"forbidden": True})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


# ----- SQL ------------------------------------------------------------------------------------------------------
HOSTILE = "x') OR 1=1 --'\\"
TS = "DateTime64(3, 'UTC')"
EXPECTED_SQL: dict[str, tuple[Any, str]] = {
    "start": (datetime(2026, 1, 1, tzinfo=UTC), f"occurred_at >= {{f_start:{TS}}}"),
    "end": (datetime(2026, 1, 2, tzinfo=UTC), f"occurred_at <= {{f_end:{TS}}}"),
    "scope": (HOSTILE, "scope = {f_scope:String}"),
    "category": (HOSTILE, "category = {f_category:String}"),
    "action": ((HOSTILE, "vm.create"), "action IN {f_action:Array(String)}"),
    "status": (HOSTILE, "status = {f_status:String}"),
    "actor_email": (HOSTILE, "actor_email = {f_actor_email:String}"),
    "actor_id": (HOSTILE, "actor_id = {f_actor_id:String}"),
    "ip": (HOSTILE, "actor_ip = {f_ip:String}"),
    "workspace_id": (HOSTILE, "workspace_id = {f_workspace_id:String}"),
    "target": (HOSTILE, "(target_id = {f_target:String} OR target_name = {f_target2:String})"),
    "q": (HOSTILE, f"{SEARCH_EXPR} LIKE {{f_q:String}}"),
    "org_id": (HOSTILE, "org_id = {f_org_id:String}"),
}


@pytest.mark.parametrize("spec", FILTERS, ids=lambda s: s.name)
def test_each_condition_binds_its_value(spec: Any) -> None:
    value, expected = EXPECTED_SQL[spec.name]
    sql, params = spec.condition(value, CATALOG)
    assert sql == expected
    assert set(PLACEHOLDER.findall(sql)) == set(params) and all(k.startswith("f_") for k in params)
    assert "1=1" not in sql and "x'" not in sql  # the value is a parameter, never SQL text
    if spec.name == "q":
        assert params == {"f_q": "%x') or 1=1 --'\\\\%"}  # lower-cased, LIKE-escaped
    elif spec.name == "action":
        assert params == {"f_action": list(value)}
    else:
        assert set(params.values()) == {value}


def test_every_filter_has_an_expected_condition() -> None:
    assert set(EXPECTED_SQL) == set(BY_NAME)


def test_keyword_also_matches_catalog_labels() -> None:
    sql, params = BY_NAME["q"].condition("vm.cre", CATALOG)
    assert sql == f"({SEARCH_EXPR} LIKE {{f_q:String}} OR (scope, action) IN {{f_q_pairs:Array(Tuple(String, String))}})"
    assert params == {"f_q": "%vm.cre%", "f_q_pairs": [("service", "vm.create")]}


def test_all_filters_together_narrow_the_tenant_scope() -> None:
    f = parse(start="2026-03-01T00:00:00Z", scope="service", category="vm", action=["vm.create"], status="SUCCESS",
              actor_email=HOSTILE, actor_id=HOSTILE, ip="10.0.0.1", workspace_id="w1", target=HOSTILE, q=HOSTILE,
              org_id="acme")
    sq = ScopedQuery(ADMIN).with_filters(f, CATALOG)
    where = sq.where()
    assert where.startswith("(org_id = {s_org:String}) AND (workspace_id IN {s_ws:Array(String)}) AND ")
    assert "1=1" not in where and "x'" not in where
    assert set(PLACEHOLDER.findall(where)) == set(sq.params)
    assert sq.params["s_org"] == "acme" and sq.params["s_ws"] == ["w1"]
    assert sq.params["f_actor_email"] == sq.params["f_target"] == sq.params["f_target2"] == HOSTILE
    assert len(f.conditions(CATALOG)) == len(f.values) == len(FILTERS)


def test_the_keyword_haystack_is_the_search_index_expression() -> None:
    """ClickHouse uses ``idx_search`` for a keyword only when the query's text is the index's expression: the last
    migration that defines the index must carry SEARCH_EXPR verbatim."""
    from pathlib import Path

    migrations = sorted((Path(__file__).resolve().parents[2] / "schemas" / "migrations").glob("*.sql"))
    defined = [m.group(1) for f in migrations
               for m in re.finditer(r"INDEX (?:IF NOT EXISTS )?idx_search (.+?)\s+TYPE\b", f.read_text(), re.S)]
    assert defined and defined[-1] == SEARCH_EXPR
