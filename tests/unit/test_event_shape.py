"""The read side's event spec (query_api/read/event_shape.py) and what is derived from it: its stored fields come
from the column spec (schemas/columns.py, checked against the DDL and EventOut in test_columns.py) and match
``models.EventOut``; the SELECT list, the JSON of the API, the export's CSV columns and NDJSON tuple follow from it;
labels follow one rule everywhere."""

from __future__ import annotations

import re
import types
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from auditlogkit.query_api.models import EventOut
from auditlogkit.query_api.read import event_shape as es
from auditlogkit.query_api.read import export
from auditlogkit.query_api.read.event_shape import (
    EVENT_SHAPE,
    STORED,
    catalog_labels,
    label_params,
    public_event,
    select_list,
)
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.rows import EVENT_COLUMNS, PROVENANCE_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
CATALOG = get_catalog()


def ddl_columns() -> dict[str, str]:
    """Column -> type of ``CREATE TABLE ... audit_events`` in 0001_events.sql and the columns later migrations add
    (DEFAULT and CODEC left out)."""
    sql = (ROOT / "schemas" / "migrations" / "0001_events.sql").read_text(encoding="utf-8")
    body = re.search(r"CREATE TABLE IF NOT EXISTS \{db\}\.audit_events\s*\((.*?)\n\)\s*ENGINE", sql, re.S)
    assert body is not None
    out = {}
    for line in body.group(1).splitlines():
        m = re.fullmatch(r"\s*([a-z_]+)\s+(.+?)(?:\s+DEFAULT\s+.+?)?(?:\s+CODEC\(.*\))?,?\s*", line)
        if m and m.group(1) != "INDEX":
            out[m.group(1)] = m.group(2)
    for path in sorted((ROOT / "schemas" / "migrations").glob("*.sql")):
        for m in re.finditer(r"ALTER TABLE \{db\}\.audit_events ADD COLUMN IF NOT EXISTS ([a-z_]+) (.+?)"
                             r"(?:\s+DEFAULT\s+[^;]+)?;", path.read_text(encoding="utf-8")):
            out[m.group(1)] = m.group(2)
    return out


# ----- the spec against the table ------------------------------------------------------------------------------
def test_the_ddl_parser_reads_every_column() -> None:
    cols = ddl_columns()
    assert set(cols) == set(EVENT_COLUMNS)  # in table order: a later migration's column comes last
    assert cols["schema_version"] == "UInt8" and cols["detail"] == "Nullable(String)"
    assert cols["status"] == "Enum8('SUCCESS' = 1, 'FAILED' = 2)"


def test_stored_columns_are_insert_columns_with_the_ddl_type() -> None:
    stored = [f.column for f in STORED]
    assert len(stored) == len(set(stored))
    assert set(stored) <= set(EVENT_COLUMNS)
    assert set(EVENT_COLUMNS) - set(stored) == {"kafka_topic", "kafka_partition", "kafka_offset"}
    assert set(PROVENANCE_COLUMNS) > {"kafka_topic", "kafka_partition", "kafka_offset"}
    ddl = ddl_columns()
    for f in STORED:
        assert f.ch_type == ddl[f.flat], f.path


def test_the_spec_is_well_formed() -> None:
    paths = [f.path for f in EVENT_SHAPE]
    assert len(paths) == len(set(paths))
    for f in EVENT_SHAPE:
        assert (f.column is None) == (f.ch_type == ""), f.path
        assert f.column is None or f.label_of is None, f.path
        if f.group:
            assert f.column == f"{f.group}_{f.name}", f.path
    labels = {f.label_of: f.name for f in EVENT_SHAPE if f.label_of}
    assert labels == {"scope": "scope_label", "category": "category_label", "action": "action_label"}
    assert [f.name for f in EVENT_SHAPE if not f.exported] == ["detail_omitted"]


# ----- EventOut ------------------------------------------------------------------------------------------------
def _nested(model: type[BaseModel], name: str) -> type[BaseModel]:
    ann = model.model_fields[name].annotation
    assert isinstance(ann, type) and issubclass(ann, BaseModel)
    return ann


def _allows_none(ann: Any) -> bool:
    return get_origin(ann) in (Union, types.UnionType) and type(None) in get_args(ann)


def test_event_out_has_the_spec_fields_in_order() -> None:
    top: list[str] = []
    for f in EVENT_SHAPE:
        name = f.group or f.name
        if name not in top:
            top.append(name)
    assert list(EventOut.model_fields) == top
    for group in ("actor", "target"):
        assert list(_nested(EventOut, group).model_fields) == [f.name for f in EVENT_SHAPE if f.group == group]


def test_event_out_types_follow_the_spec() -> None:
    for f in EVENT_SHAPE:
        if f.json_text or not f.exported:
            continue
        model = _nested(EventOut, f.group) if f.group else EventOut
        info = model.model_fields[f.name]
        assert _allows_none(info.annotation) == f.nullable, f.path
        assert info.is_required() == (not f.nullable and f.name != "schema_version"), f.path
        if f.ch_type.startswith("Enum"):
            ann = info.annotation
            assert get_origin(ann) is Literal and list(get_args(ann)) == re.findall(r"'([^']*)' =", f.ch_type)


# ----- derived: the read ---------------------------------------------------------------------------------------
def test_select_list_is_the_stored_columns() -> None:
    assert es.SELECT_COLUMNS.split(", ") == [f.column for f in STORED]
    capped = select_list(cap_detail=True)
    assert " detail," not in capped + "," and "{d_max:UInt32}" in capped
    assert "AS detail_capped" in capped and "AS detail_omitted" in capped
    assert es.TIME_COLUMNS == ("occurred_at", "received_at")


ROW: dict[str, Any] = {
    "org_id": "acme", "occurred_at": datetime(2026, 3, 1, 9, 14, 3, 512_999, tzinfo=UTC),
    "event_id": uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100"), "schema_version": 1, "workspace_id": None,
    "scope": "service", "category": "vm", "action": "vm.delete", "status": "FAILED",
    "actor_id": "u-1", "actor_email": "kim@acme.example", "actor_type": "user", "actor_ip": None,
    "actor_user_agent": "ua", "target_type": "vm", "target_id": "vm-1", "target_name": None,
    "description": "", "detail": '{"a": [1, null]}', "source": None, "request_id": "r-1",
    "received_at": datetime(2026, 3, 1, 9, 14, 4),  # naive: taken as UTC
    "publisher_via": "http", "publisher_id": "svc-compute",
}


def test_public_event_is_the_api_shape() -> None:
    assert public_event(dict(ROW), CATALOG) == {
        "schema_version": 1, "event_id": "0f0e0d0c-0b0a-4908-8706-050403020100",
        "occurred_at": "2026-03-01T09:14:03.512Z", "org_id": "acme", "workspace_id": None,
        "scope": "service", "scope_label": "Service", "category": "vm", "category_label": "VM",
        "action": "vm.delete", "action_label": "Delete VM", "status": "FAILED",
        "actor": {"id": "u-1", "email": "kim@acme.example", "type": "user", "ip": None, "user_agent": "ua"},
        "target": {"type": "vm", "id": "vm-1", "name": None},
        "description": "", "detail": {"a": [1, None]}, "source": None, "request_id": "r-1",
        "received_at": "2026-03-01T09:14:04.000Z", "publisher": {"via": "http", "id": "svc-compute"},
    }
    assert list(public_event(dict(ROW), CATALOG)) == [k for k in EventOut.model_fields if k != "detail_omitted"]
    assert public_event({**ROW, "detail": None}, CATALOG)["detail"] is None
    assert public_event({**ROW, "detail": ""}, CATALOG)["detail"] is None
    EventOut.model_validate(public_event(dict(ROW), CATALOG))


# ----- labels: one rule ----------------------------------------------------------------------------------------
def test_labels_are_the_catalogs_else_the_codes() -> None:
    assert catalog_labels(CATALOG, "service", "vm", "vm.delete") == ("Service", "VM", "Delete VM")
    # out of the catalog (a row an older catalog allowed): the codes, all three, keyed by (scope, action)
    assert catalog_labels(CATALOG, "service", "vm", "vm.explode") == ("service", "vm", "vm.explode")
    assert catalog_labels(CATALOG, "service", "other", "vm.delete") == ("Service", "VM", "Delete VM")
    out = public_event({**ROW, "action": "vm.explode"}, CATALOG)
    assert (out["scope_label"], out["category_label"], out["action_label"]) == ("service", "vm", "vm.explode")


def test_label_params_are_the_rule_for_every_action() -> None:
    p = label_params(CATALOG)
    assert set(p) == {"x_label_key", "x_scope_label", "x_category_label", "x_action_label"}
    triples = CATALOG.all_actions()
    assert p["x_label_key"] == [f"{s}/{a}" for s, _, a in triples]
    for i, (s, c, a) in enumerate(triples):
        assert (p["x_scope_label"][i], p["x_category_label"][i], p["x_action_label"][i]) == catalog_labels(
            CATALOG, s, c, a)


@pytest.mark.parametrize("label", [f for f in EVENT_SHAPE if f.label_of])
def test_export_label_sql_falls_back_to_the_code(label: es.EventField) -> None:
    sql = es.value_sql(label)
    assert sql.startswith("transform(concat(scope, '/', action), {x_label_key:Array(String)}, ")
    assert sql.endswith(f"{{x_{label.label_of}_label:Array(String)}}, toString({label.label_of}))")


# ----- derived: the exports (their formats are pinned: a change here changes every export file) ----------------
def test_csv_columns() -> None:
    assert export.CSV_COLUMNS == (
        "event_id", "occurred_at", "received_at", "org_id", "workspace_id", "scope", "scope_label", "category",
        "category_label", "action", "action_label", "status", "actor_id", "actor_email", "actor_type", "actor_ip",
        "actor_user_agent", "target_type", "target_id", "target_name", "description", "source", "request_id",
        "detail", "publisher_via", "publisher_id")
    assert export.CSV_LINE_SQL.count("concat('\"', replaceAll(") == len(export.CSV_COLUMNS)


def test_ndjson_tuple() -> None:
    assert export._JSON_TYPE == (
        "Tuple(schema_version UInt8, event_id String, occurred_at String, org_id String, "
        "workspace_id Nullable(String), scope String, scope_label String, category String, category_label String, "
        "action String, action_label String, status String, actor Tuple(id String, email Nullable(String), "
        "type String, ip Nullable(String), user_agent Nullable(String)), target Tuple(type Nullable(String), "
        "id Nullable(String), name Nullable(String)), description String, source Nullable(String), "
        "request_id Nullable(String), received_at String, publisher Tuple(via String, id Nullable(String)))")
    assert export.NDJSON_LINE_SQL.endswith("',\"detail\":', ifNull(detail, 'null'), '}')")
    # the NDJSON object has the keys of the API's event, detail last (spliced in as stored)
    keys = [f.group or f.name for f in es.NDJSON_FIELDS]
    assert list(dict.fromkeys(keys)) == [k for k in EventOut.model_fields if k not in ("detail", "detail_omitted")
                                         ] + ["detail"]
