"""The stored-offsets watermarks: per Kafka partition the highest offset the consumer has stored (the
``audit_events_offsets`` table its materialized view keeps, migration 0010). One query, used by the consumer (what
is stored already), the live tail and the log streams (where the stored log ends)."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from auditlogkit.schemas.tables import OFFSETS_TABLE


def stored_watermarks(client: Client, topic: str) -> dict[int, int]:
    """partition -> the highest stored offset of ``topic`` (partitions with nothing stored are absent)."""
    res = client.query(f"SELECT kafka_partition, max(max_offset) FROM {OFFSETS_TABLE} "
                       "WHERE kafka_topic = {topic:String} GROUP BY kafka_partition", parameters={"topic": topic})
    return {int(p): int(o) for p, o in res.result_rows}
