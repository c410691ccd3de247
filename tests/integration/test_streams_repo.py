"""The streams' repository on a real chDB store: one org's streams only, changes as new versions, secrets sealed
at rest (the raw table holds no secret), configurations refused before they are stored (SSRF included), a
stream's reads (start "now" / backfill, another org's events never, filters), lag, and lease claims of which
exactly one wins."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from auditlogkit.query_api.streams import reader
from auditlogkit.query_api.streams.config import StreamConfigError
from auditlogkit.query_api.streams.keys import SecretBox, new_key_text, streams_key
from auditlogkit.query_api.streams.model import Lease, Stream
from auditlogkit.query_api.streams.shared_read import SharedRead
from auditlogkit.query_api.streams.store import StreamStore
from auditlogkit.schemas.catalog import get_catalog
from auditlogkit.schemas.tables import STREAM_LEASES_TABLE, STREAM_POSITIONS_TABLE, STREAMS_TABLE
from auditlogkit.server.store import Store
from tests.factories import make_event
from tests.integration.streams_helpers import TOPIC, put_events, repo_for, settings_for

SECRET = "whsec-0123456789-abcdef"
HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": SECRET}


@pytest.fixture
def repo(store: Store, tmp_path: Path) -> StreamStore:
    return repo_for(store, settings_for(store, tmp_path))


def test_each_org_sees_and_changes_its_own_streams_only(repo: StreamStore) -> None:
    s = repo.create("acme", "SIEM", HOOK, {"action": "vm.delete"})
    assert repo.get("globex", s.id) is None and repo.list("globex") == []
    assert repo.update("globex", s.id, name="x") is None and not repo.delete("globex", s.id)
    assert repo.get("acme", "not-a-uuid") is None
    shown = repo.get("acme", s.id)
    assert shown is not None and shown.public()["destination"] == {"type": "webhook", "url": HOOK["url"],
                                                                    "secret": "••••cdef"}
    assert shown.public()["state"] == "active" and shown.public()["filters"] == {"action": ["vm.delete"]}
    changed = repo.update("acme", s.id, name="SIEM 2", state="paused", destination={"url": "http://127.0.0.1:10/h"})
    assert changed is not None and changed.status == "paused"
    again = repo.get("acme", s.id)
    assert again is not None and (again.name, again.destination.fields["url"]) == ("SIEM 2", "http://127.0.0.1:10/h")
    assert again.destination.secrets == {"secret": SECRET}  # a secret left out keeps its value
    assert [x.id for x in repo.list("acme")] == [s.id] and [x.id for x in repo.list_all()] == [s.id]
    assert repo.delete("acme", s.id) and repo.get("acme", s.id) is None and repo.list("acme") == []


def test_secrets_are_sealed_at_rest(repo: StreamStore, store: Store) -> None:
    s = repo.create("acme", "hec", {"type": "splunk_hec", "url": "http://127.0.0.1:9", "token": "tok-ZQXJ-first-one"})
    repo.update("acme", s.id, destination={"token": "tok-ZQXJ-second-one"})
    for table in (STREAMS_TABLE, STREAM_POSITIONS_TABLE, STREAM_LEASES_TABLE):
        raw = repr(store.client().query(f"SELECT * FROM {table}").result_rows)
        assert "ZQXJ" not in raw
    blob = store.client().query(f"SELECT secrets FROM {STREAMS_TABLE} FINAL").result_rows[0][0]
    assert repo.box.open(blob, s.id, "acme") == {"token": "tok-ZQXJ-second-one"}
    other = StreamStore(store, SecretBox(streams_key(new_key_text())), get_catalog(), topic=TOPIC)
    unreadable = other.get("acme", s.id)
    assert unreadable is not None and unreadable.destination.secrets == {} and unreadable.secrets_error


@pytest.mark.parametrize(("destination", "filters", "start", "field"), [
    ({"type": "pager"}, None, "now", "destination.type"),
    ({"type": "webhook", "url": "http://127.0.0.1:9/"}, None, "now", "destination.secret"),
    ({**HOOK, "extra": "1"}, None, "now", "destination.extra"),
    ({**HOOK, "url": "http://hooks.example.com/in"}, None, "now", "destination.url"),  # http, not listed
    ({**HOOK, "url": "https://ten.test/in"}, None, "now", "destination.url"),  # resolves to 10.1.2.3
    ({**HOOK, "url": "https://meta.test/in"}, None, "now", "destination.url"),  # resolves to 169.254.169.254
    ({**HOOK, "url": "https://[::1]/in"}, None, "now", "destination.url"),
    (HOOK, {"action": "vm.explode"}, "now", "filters.action"),
    (HOOK, {"actor_email": "x@y"}, "now", "filters.actor_email"),
    (HOOK, None, "2999-01-01T00:00:00Z", "start"),
    (HOOK, None, "2001-01-01T00:00:00Z", "start"),
])
def test_configurations_are_refused_before_they_are_stored(store: Store, tmp_path: Path, destination: dict,
                                                           filters: dict | None, start: str, field: str) -> None:
    names = {"hooks.example.com": ["93.184.215.14"], "ten.test": ["10.1.2.3"], "meta.test": ["169.254.169.254"]}
    repo = repo_for(store, settings_for(store, tmp_path), resolver=lambda h, p: names.get(h, []))
    with pytest.raises(StreamConfigError) as err:
        repo.create("acme", "x", destination, filters, start)
    assert err.value.field == field
    assert repo.list("acme") == []


def test_a_stream_reads_its_org_from_its_start_with_its_filters(repo: StreamStore, store: Store) -> None:
    old = put_events(store, [make_event(), make_event(org_id="globex")])
    now_stream = repo.create("acme", "now", HOOK)
    backfill = repo.create("acme", "back", HOOK, start=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
    failed_only = repo.create("acme", "failed", HOOK, {"status": "FAILED", "workspace_id": "ws-a"})
    new = put_events(store, [make_event(status="FAILED", workspace_id="ws-a"), make_event(org_id="globex"),
                             make_event(status="FAILED", workspace_id="ws-b"), make_event()], partition=1)

    def ids(stream_id: str) -> list[str]:
        s = repo.get("acme", stream_id)
        assert s is not None and s.delivery is not None
        batch = reader.next_batch(store, TOPIC, s, s.delivery.position, repo.catalog, limit=100, detail_max=8192)
        assert not batch.more
        return [e["event_id"] for e in batch.events]

    assert ids(now_stream.id) == [new[0][2], new[2][2], new[3][2]]
    assert ids(backfill.id) == [old[0][2], new[0][2], new[2][2], new[3][2]]
    assert ids(failed_only.id) == [new[0][2]]
    s = repo.get("acme", now_stream.id)
    assert s is not None and 0 < repo.lag_seconds(s) < 60


def test_reads_step_through_small_windows_and_batches_skipping_nothing(repo: StreamStore, store: Store,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "WINDOW", 7)
    stream = repo.create("acme", "x", HOOK, start=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    want: dict[int, list[str]] = {}
    for p in (0, 1, 2):
        events = [make_event(org_id="acme" if i % 4 else "globex") for i in range(30)]
        want[p] = [eid for (_, _, eid), e in zip(put_events(store, events, p), events, strict=True)
                   if e["org_id"] == "acme"]
    s = repo.get("acme", stream.id)
    assert s is not None and s.delivery is not None
    position, got, reads = dict(s.delivery.position), [], 0
    while True:
        batch = reader.next_batch(store, TOPIC, s, position, repo.catalog, limit=4, detail_max=8192)
        reads += 1
        assert len(batch.events) <= 4
        got += [(p, e["event_id"]) for (p, _), e in zip(batch.places, batch.events, strict=True)]
        position = batch.after
        if not batch.more and not batch.events:
            break
    assert reads > 10 and position == reader.stored_position(store, TOPIC)
    for p in (0, 1, 2):
        assert [eid for q, eid in got if q == p] == want[p]
    assert len(got) == sum(len(v) for v in want.values())


def test_exactly_one_concurrent_claim_of_a_lease_wins(repo: StreamStore) -> None:
    s = repo.create("acme", "x", HOOK)
    won: list[str] = []
    barrier = threading.Barrier(6)

    def claim(holder: str) -> None:
        barrier.wait()
        if repo.leases.try_lease(s.id, holder) is not None:
            won.append(holder)

    threads = [threading.Thread(target=claim, args=(f"h{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    current = repo.leases.current([s.id])[s.id]
    assert current.holder == won[0] and current.live and current.term == 1
    assert repo.leases.try_lease(s.id, "late") is None
    lease = repo.leases.renew_all([lease_of(repo, s.id, won[0])])[s.id]
    assert lease is not None
    repo.leases.release(lease)
    taken = repo.leases.try_lease(s.id, "late")
    assert taken is not None and taken.term == 2
    assert repo.leases.renew_all([lease])[s.id] is None  # the old holder's term is over


def lease_of(repo: StreamStore, stream_id: str, holder: str) -> Lease:
    term = repo.leases.current([stream_id])[stream_id].term
    return Lease(stream_id, term, holder, time.monotonic() + 5)


def test_the_shared_stored_end_is_read_again_after_an_insert_or_its_age(store: Store) -> None:
    now = [1000.0]
    end = reader.StoredEnd(store, TOPIC, max_age=0.3, clock=lambda: now[0])
    put_events(store, [make_event()], 0)
    first = end.get()
    put_events(store, [make_event()], 0)  # stored, but no one said so: the reading is reused within its age
    now[0] += 0.3
    assert end.get() == first
    end.stored()
    second = end.get()
    assert second[0] == first[0] + 1
    put_events(store, [make_event()], 0)
    now[0] += 0.31  # past its age: read again (``auditlog stream`` hears of no insert)
    assert end.get()[0] == second[0] + 1


def test_streams_reading_together_share_one_query_of_the_stored_end(repo: StreamStore, store: Store,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    put_events(store, [make_event(org_id="acme")], 0)
    streams = [repo.create("acme", f"s{i}", HOOK, start=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
               for i in range(3)]
    calls = []
    real = reader.stored_position
    monkeypatch.setattr(reader, "stored_position", lambda st, t: calls.append(t) or real(st, t))
    shared = reader.StoredEnd(store, TOPIC, max_age=60)
    for stream in streams:
        s = repo.get("acme", stream.id)
        assert s is not None and s.delivery is not None
        batch = reader.next_batch(store, TOPIC, s, s.delivery.position, repo.catalog, limit=10, detail_max=8192,
                                  stored_end=shared)
        assert len(batch.events) == 1
    assert len(calls) == 1
    put_events(store, [make_event(org_id="acme")], 0)
    shared.stored()
    assert shared.get()[0] == real(store, TOPIC)[0] and len(calls) == 2


def _acme_streams(repo: StreamStore, store: Store, names: tuple[str, ...], *, events: int,
                  partition: int) -> list[Stream]:
    """Streams of acme from 5 minutes ago (as read back, with their positions), then ``events`` of acme stored."""
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    made = [repo.create("acme", name, HOOK, start=past) for name in names]
    put_events(store, [make_event(org_id="acme") for _ in range(events)], partition)
    out = [repo.get("acme", m.id) for m in made]
    assert all(s is not None for s in out)
    return [s for s in out if s is not None]


def test_a_shared_read_gives_each_stream_what_its_own_read_gives_with_one_query(repo: StreamStore,
                                                                                 store: Store) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    streams = [repo.create("acme", "all", HOOK, start=past),
               repo.create("acme", "failed", HOOK, {"status": "FAILED"}, start=past),
               repo.create("globex", "all", HOOK, start=past),
               repo.create("acme", "ws-b", HOOK, {"workspace_id": "ws-b"}, start=past)]
    sent = [make_event(org_id=("acme", "globex", "initech")[i % 3], workspace_id=("ws-a", "ws-b")[i % 2],
                       status=("SUCCESS", "FAILED")[i % 5 == 0]) for i in range(120)]
    for p in (0, 1, 2):
        put_events(store, sent[p * 40:(p + 1) * 40], p)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, rejoin_seconds=3600)
    end = reader.StoredEnd(store, TOPIC, max_age=600)
    alone: dict[str, list[tuple[int, str]]] = {}
    together: dict[str, list[tuple[int, str]]] = {s.id: [] for s in streams}
    for stream in streams:
        s = repo.get(stream.org_id, stream.id)
        assert s is not None and s.delivery is not None
        pos, got = dict(s.delivery.position), []
        while True:  # small batches: the per-partition limit and the cap as the stream's own read applies them
            b = reader.next_batch(store, TOPIC, s, pos, repo.catalog, limit=7, detail_max=8192, stored_end=end)
            got += [(p, e["event_id"]) for (p, _), e in zip(b.places, b.events, strict=True)]
            pos = b.after
            if not b.more:
                break
        alone[s.id] = got
    positions = {s.id: dict(s.delivery.position) for s in (repo.get(x.org_id, x.id) for x in streams) if s and s.delivery}
    for _ in range(40):  # the streams in turns, as the deliverer's workers ask
        for stream in streams:
            s = repo.get(stream.org_id, stream.id)
            assert s is not None
            b = reader.next_batch(store, TOPIC, s, positions[s.id], repo.catalog, limit=7, detail_max=8192,
                                  stored_end=end, shared=shared)
            together[s.id] += [(p, e["event_id"]) for (p, _), e in zip(b.places, b.events, strict=True)]
            positions[s.id] = b.after
    assert together == alone
    def ids(**match: str) -> set[str]:
        return {str(e["event_id"]) for e in sent if all(e[k] == v for k, v in match.items())}

    assert {e for _, e in alone[streams[0].id]} == ids(org_id="acme")  # each org's own events only
    assert {e for _, e in alone[streams[1].id]} == ids(org_id="acme", status="FAILED")
    assert {e for _, e in alone[streams[2].id]} == ids(org_id="globex")
    assert {e for _, e in alone[streams[3].id]} == ids(org_id="acme", workspace_id="ws-b")
    assert shared.queries == 1  # the first to ask reads; the others read alone until the next stored end
    more = [make_event(org_id="acme") for _ in range(5)]
    put_events(store, more, 1)
    end.stored()
    before = shared.queries
    for stream in streams:  # once all have asked: one read for all of them per stored end
        s = repo.get(stream.org_id, stream.id)
        assert s is not None
        b = reader.next_batch(store, TOPIC, s, positions[s.id], repo.catalog, limit=7, detail_max=8192,
                              stored_end=end, shared=shared)
        assert [e["event_id"] for e in b.events] == ([str(e["event_id"]) for e in more]
                                                     if s.id in (streams[0].id,) else [])
    assert shared.queries == before + 1


def test_a_shared_read_is_not_used_for_a_stream_whose_filters_changed_since(repo: StreamStore, store: Store) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    stream = repo.create("acme", "x", HOOK, start=past)
    put_events(store, [make_event(org_id="acme", status="FAILED"), make_event(org_id="acme")], 0)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, rejoin_seconds=3600)
    s = repo.get("acme", stream.id)
    assert s is not None and s.delivery is not None
    end = reader.stored_position(store, TOPIC)
    assert len(shared.rows(s, s.delivery.position, end, 100, 400) or []) == 2
    changed = repo.update("acme", stream.id, filters={"status": "FAILED"})
    assert changed is not None
    assert shared.rows(changed, s.delivery.position, end, 100, 400) is None  # read alone: the read had its old filters
    put_events(store, [make_event(org_id="acme", status="FAILED")], 0)
    end = reader.stored_position(store, TOPIC)
    rows = shared.rows(changed, s.delivery.position, end, 100, 400)
    assert rows is not None and [r["status"] for r in rows] == ["FAILED", "FAILED"] and shared.queries == 2


def test_a_stream_far_behind_reads_alone_and_does_not_drag_the_shared_read_back(repo: StreamStore,
                                                                                  store: Store) -> None:
    s_old, s_fresh = _acme_streams(repo, store, ("behind", "caught-up"), events=30, partition=2)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, near=10)
    end = reader.stored_position(store, TOPIC)
    assert shared.rows(s_old, {**end, 2: end[2] - 30}, end, 100, 400) is None  # 30 behind > near: alone
    assert shared.queries == 0
    rows = shared.rows(s_fresh, {**end, 2: end[2] - 5}, end, 100, 400)
    assert rows is not None and len(rows) == 5 and shared.queries == 1


def test_a_shared_read_over_its_row_cap_is_not_made_again_for_the_same_end(repo: StreamStore, store: Store) -> None:
    stream = repo.create("acme", "x", HOOK, start=(datetime.now(UTC) - timedelta(minutes=5)).isoformat())
    put_events(store, [make_event(org_id="acme") for _ in range(5)], 3)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, max_rows=2)
    shared.near = 100  # (near is at most half the cap, so one stream alone never overflows: force it here)
    s = repo.get("acme", stream.id)
    assert s is not None
    end = reader.stored_position(store, TOPIC)
    below = {**end, 3: end[3] - 5}
    assert shared.rows(s, below, end, 100, 400) is None and shared.queries == 1  # 5 rows > 2: the stream reads alone
    assert shared.rows(s, below, end, 100, 400) is None and shared.queries == 1  # and no second try at this end


def test_many_streams_share_in_bounded_groups_and_a_failed_read_leaves_each_to_read_alone(
        repo: StreamStore, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    streams = [repo.create(("acme", "globex")[i % 2], f"s{i}", HOOK, {"status": "FAILED"} if i % 3 else None,
                           start=past) for i in range(12)]
    put_events(store, [make_event(org_id=("acme", "globex")[i % 2], status=("SUCCESS", "FAILED")[i % 2])
                       for i in range(20)], 4)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, group_size=4, rejoin_seconds=3600)
    got = {}
    for stream in streams:  # everyone asks once (the first of each group reads), then a new end: one read a group
        s = repo.get(stream.org_id, stream.id)
        assert s is not None and s.delivery is not None
        shared.rows(s, s.delivery.position, reader.stored_position(store, TOPIC), 100, 400)
    put_events(store, [make_event(org_id="acme", status="FAILED")], 4)
    end = reader.stored_position(store, TOPIC)
    before = shared.queries
    for stream in streams:
        s = repo.get(stream.org_id, stream.id)
        assert s is not None and s.delivery is not None
        got[s.id] = shared.rows(s, s.delivery.position, end, 100, 400)
        own = reader.next_batch(store, TOPIC, s, s.delivery.position, repo.catalog, limit=100, detail_max=8192)
        assert got[s.id] is not None and [str(r["event_id"]) for r in got[s.id]] == [e["event_id"] for e in own.events]
    groups = {shared._group(x.id) for x in streams}  # 12 streams in groups of about 4: 4 groups (16 >= 12 > 8)
    assert 1 < len(groups) <= 4 and shared.queries - before == len(groups)  # one read per group, not per stream

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("Max query size exceeded")

    put_events(store, [make_event(org_id="acme")], 4)
    end = reader.stored_position(store, TOPIC)
    s = repo.get("acme", streams[0].id)
    assert s is not None and s.delivery is not None
    monkeypatch.setattr(store, "client", lambda: type("C", (), {"query": broken})())
    assert shared.rows(s, s.delivery.position, end, 100, 400) is None  # the stream reads alone; nothing raised


def test_a_newcomer_joins_the_shared_read_after_rejoin_seconds_without_a_new_end(repo: StreamStore,
                                                                                  store: Store) -> None:
    sa, sb = _acme_streams(repo, store, ("a", "b"), events=3, partition=5)
    shared = SharedRead(store, TOPIC, repo.catalog, reader.scoped, detail_max=8192, rejoin_seconds=0.3)
    end = reader.stored_position(store, TOPIC)
    here = {**end, 5: end[5] - 3}
    assert shared.rows(sa, here, end, 100, 400) is not None and shared.queries == 1
    assert shared.rows(sb, here, end, 100, 400) is None and shared.queries == 1  # a newcomer reads alone at first
    time.sleep(0.35)  # nothing new is stored (an idle stream), yet it joins the read
    rows = shared.rows(sb, here, end, 100, 400)
    assert rows is not None and len(rows) == 3 and shared.queries == 2
    assert len(shared.rows(sa, here, end, 100, 400) or []) == 3 and shared.queries == 2  # both now share it
