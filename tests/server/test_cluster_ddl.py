"""The cluster schema (deploy/cluster: Keeper, 2 shards x 2 replicas): the migrations rendered ON CLUSTER.

Offline (always): every rendered statement parses with ClickHouse's parser (formatQuery on chDB); sharded
tables become Replicated*MergeTree `<name>_local` (one replication group per shard) + a Distributed table
sharded by cityHash64(org_id); tables without org_id are replicated to every node; materialized views read
and write local tables. With Docker (testcontainers compose on deploy/cluster/compose.yaml): migrate on the
real cluster, insert through the Distributed table, rows spread over both shards and present on both
replicas of each shard, analysts' flat view reads them all once.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.event import parse_event
from auditlogkit.schemas.rows import EVENT_COLUMNS, EVENTS_TABLE, event_row
from auditlogkit.server.db.migration_sql import SHARD_KEY, cluster_statements, sharded_tables
from auditlogkit.server.db.migrations import migrate
from auditlogkit.server.store import Store
from tests.factories import random_events

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "deploy" / "cluster"


def test_sharded_tables_are_the_org_tables() -> None:
    assert {EVENTS_TABLE, "audit_daily_counts"} <= sharded_tables()
    assert "catalog_actions" not in sharded_tables()


def test_cluster_statements_parse_and_have_the_cluster_layout(store: Store) -> None:
    stmts = cluster_statements("auditlog", "auditlog", 400)
    c = store.client()
    for s in stmts:
        assert " ON CLUSTER auditlog" in s or s.startswith("INSERT INTO"), s[:100]
        assert c.query("SELECT formatQuery({q:String})", parameters={"q": s}).result_rows[0][0]
    text = "\n".join(stmts)
    for t in sharded_tables():
        assert re.search(rf"CREATE TABLE IF NOT EXISTS auditlog\.{t}_local ON CLUSTER auditlog .*?ENGINE = "
                         rf"Replicated\w*MergeTree\('/clickhouse/tables/{{shard}}/auditlog/{t}_local', '{{replica}}'",
                         text, re.S), t
        assert (f"CREATE TABLE IF NOT EXISTS auditlog.{t} ON CLUSTER auditlog AS auditlog.{t}_local "
                f"ENGINE = Distributed(auditlog, auditlog, {t}_local, {SHARD_KEY})") in text
    assert "Replicated" in next(s for s in stmts if "auditlog.catalog_actions ON CLUSTER" in s)
    for mv in (s for s in stmts if s.startswith("CREATE MATERIALIZED VIEW")):
        assert "FROM auditlog.audit_events_local" in mv
        assert re.search(r"TO auditlog\.\w+", mv)
    # the Distributed table is only ever given the columns added to its local table (it reads them by name)
    on_distributed = [s for s in stmts if re.search(r"ALTER TABLE auditlog\.audit_events ON", s)]
    assert on_distributed and all(" ADD COLUMN " in s for s in on_distributed)
    added = {s.replace("audit_events_local", "audit_events") for s in stmts
             if s.startswith("ALTER TABLE auditlog.audit_events_local ON") and " ADD COLUMN " in s}
    assert added == set(on_distributed)


def test_cluster_config_matches_compose() -> None:
    import xml.etree.ElementTree as ET

    compose = (CLUSTER_DIR / "compose.yaml").read_text()
    cfg = ET.parse(CLUSTER_DIR / "clickhouse" / "config.d" / "cluster.xml").getroot()
    hosts = [h.text for h in cfg.iter("host")]
    nodes = re.findall(r"^  (ch-s\dr\d):$", compose, re.M)
    assert sorted(h for h in hosts if h != "keeper") == sorted(nodes) and len(nodes) == 4
    for n in nodes:
        macros = ET.parse(CLUSTER_DIR / "clickhouse" / "macros" / f"{n[3:]}.xml").getroot()
        assert macros.findtext("macros/replica") == n and macros.findtext("macros/shard") == n[4]


@pytest.mark.server
def test_cluster_end_to_end(docker_engine: None, tmp_path: Path) -> None:
    from testcontainers.compose import DockerCompose

    pw = "admin-" + uuid.uuid4().hex[:8]
    env = tmp_path / ".env"
    env.write_text(f"CLICKHOUSE_ADMIN_PASSWORD={pw}\nAUDITLOG_CONSUMER_PASSWORD=x\nAUDITLOG_API_PASSWORD=x\n"
                   f"AUDITLOG_JWT_SECRET={uuid.uuid4().hex}{uuid.uuid4().hex}\n"
                   f"AUDITLOG_SERVER_SECRET={uuid.uuid4().hex}{uuid.uuid4().hex}\n")
    nodes = ["ch-s1r1", "ch-s1r2", "ch-s2r1", "ch-s2r2"]
    with DockerCompose(str(CLUSTER_DIR), compose_file_name="compose.yaml", env_file=str(env),
                       services=["keeper", *nodes], wait=True) as compose:
        host, port = compose.get_service_host("ch-s1r1", 8123), compose.get_service_port("ch-s1r1", 8123)
        store = Store(f"http://admin:{pw}@{host}:{port}", "auditlog")
        deadline = time.monotonic() + 120
        while not store.ping() and time.monotonic() < deadline:
            time.sleep(1)
        assert migrate(store, cluster="auditlog")
        assert migrate(store, cluster="auditlog") == []
        cat = get_catalog()
        events = random_events(400, seed=3, orgs=tuple(f"org{i}" for i in range(20)))
        rows = [event_row(parse_event(e, cat), datetime.now(UTC), "t", 0, i) for i, e in enumerate(events)]
        c = store.client()
        c.insert(EVENTS_TABLE, rows, column_names=list(EVENT_COLUMNS), settings={"insert_distributed_sync": 1})
        c.command("SYSTEM SYNC REPLICA ON CLUSTER auditlog auditlog.audit_events_local")
        per_replica = dict(c.query(
            "SELECT hostName(), count() FROM clusterAllReplicas(auditlog, auditlog.audit_events_local) "
            "GROUP BY hostName()").result_rows)
        assert set(per_replica) == set(nodes)
        assert per_replica["ch-s1r1"] == per_replica["ch-s1r2"] > 0
        assert per_replica["ch-s2r1"] == per_replica["ch-s2r2"] > 0
        assert per_replica["ch-s1r1"] + per_replica["ch-s2r1"] == len(events)
        assert c.query("SELECT count() FROM audit_events_flat").result_rows[0][0] == len(events)
        assert c.query("SELECT sum(events) FROM audit_daily_counts").result_rows[0][0] == len(events)
