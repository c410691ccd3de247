"""s3disk's parts in-process: keys that could leave the root are refused, writes from many threads at once
(unique temp files, the listing index in step with the directory), one winner among concurrent ``If-Match``
writes, the holes of the race fix (opened by a watermark raise, closed by the batch, expired, undone), the
janitor's choice of batches, and malformed HTTP framing."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from auditlogkit.server.s3disk.server import S3Server
from auditlogkit.server.s3disk.store import DiskStore, InvalidKey, KeyConflict, etag_of
from auditlogkit.server.s3disk.tansu import Holes, Janitor
from auditlogkit.server.s3disk.wire import BadRequest, Request, read_request

PART = "clusters/c/topics/t/partitions/0000000000"


def wm(high: int | None) -> bytes:
    return json.dumps({"low": None, "high": high, "timestamps": None}).encode()


@pytest.mark.parametrize("key", ["..", "a/../b", "a//b", "a/./b", "a/", "/a", "x" * 1100, "a/" + "y" * 300, "a\x00b"])
def test_keys_that_could_leave_the_bucket_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        DiskStore(str(tmp_path)).path("tansu", key)


@pytest.mark.parametrize("bucket", ["..", ".s3disk-tmp", "A", "a", "a_b", "a..b"])
def test_bad_bucket_names_are_refused(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(InvalidKey):
        DiskStore(str(tmp_path)).path(bucket, "k")


def test_writes_from_many_threads_at_once_all_land_and_the_index_stays_exact(tmp_path: Path) -> None:
    st = DiskStore(str(tmp_path))
    d = os.path.dirname(st.path("tansu", f"{PART}/records/x"))
    st.write(st.path("tansu", f"{PART}/records/{0:020d}.batch"), b"0", True)
    assert st.leaf_names(d) == [f"{0:020d}.batch"]  # indexed from now on
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(50):
                k = f"{PART}/records/{t * 1000 + i + 1:020d}.batch"
                assert st.write(st.path("tansu", k), b"x" * i, create_only=True)
                st.write(st.path("tansu", f"shared/{t}"), b"same key from every round", create_only=False)
                if i % 5 == 0:
                    st.delete(st.path("tansu", k))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert st.leaf_names(d) == sorted(os.listdir(d))
    assert len(os.listdir(d)) == 1 + 8 * 40
    assert os.listdir(st.tmp) == []
    entries = st.list_keys("tansu", f"{PART}/records/", "", 10_000)
    assert [(e.key.rsplit("/", 1)[1], e.size) for e in entries] == [
        (n, os.path.getsize(os.path.join(d, n))) for n in sorted(os.listdir(d))]


def test_create_only_and_key_conflicts(tmp_path: Path) -> None:
    st = DiskStore(str(tmp_path))
    assert st.write(st.path("bk1", "a/k"), b"1", True)
    assert not st.write(st.path("bk1", "a/k"), b"2", True)
    assert st.read(st.path("bk1", "a/k")) is not None
    with pytest.raises(KeyConflict):
        st.write(st.path("bk1", "a/k/deeper"), b"3", False)
    with pytest.raises(KeyConflict):
        st.write(st.path("bk1", "a"), b"4", False)


def test_a_listing_stops_at_the_stop_key_and_after_the_continuation(tmp_path: Path) -> None:
    st = DiskStore(str(tmp_path))
    for i in range(10):
        st.write(st.path("tansu", f"{PART}/records/{i:020d}.batch"), b"x", True)
    pre = f"{PART}/records/"
    keys = [e.key[len(pre):][:20] for e in st.list_keys("tansu", pre, pre + f"{2:020d}.batch", 100, pre + f"{6:020d}")]
    assert keys == [f"{i:020d}" for i in (3, 4, 5)]
    assert st.list_keys("tansu", pre, "", 100, "clusters/a") == []
    assert len(st.list_keys("tansu", pre, "", 100, "clusters/z")) == 10
    assert len(st.list_keys("tansu", "clusters/", "", 100)) == 10  # a walk of a wider prefix


def test_concurrent_if_match_writes_have_one_winner() -> None:
    async def run(root: str) -> list[int]:
        srv = S3Server(DiskStore(root), Holes())
        first = Request("PUT", "/tansu/k", {}, b"v0", True)
        status, headers, _ = await srv.put("tansu", "k", srv.store.path("tansu", "k"), first)
        assert status == 200
        tag = headers["ETag"]
        reqs = [Request("PUT", "/tansu/k", {"if-match": tag}, f"v{i}".encode(), True) for i in range(1, 9)]
        out = await asyncio.gather(*(srv.put("tansu", "k", srv.store.path("tansu", "k"), r) for r in reqs))
        assert len(srv.locks) == 0  # locks are dropped once nobody holds them
        return sorted(s for s, _, _ in out)

    import tempfile

    with tempfile.TemporaryDirectory() as root:
        assert asyncio.run(run(root)) == [200] + [412] * 7


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_holes_open_on_a_watermark_raise_and_close_on_the_batch_or_a_timeout() -> None:
    clock = Clock()
    h = Holes(timeout=10, clock=clock)
    listing = f"{PART}/records/"
    assert h.watermark_put("tansu", f"{PART}/watermark.json", None, wm(None)) is None  # topic created
    h.watermark_put("tansu", f"{PART}/watermark.json", wm(None), wm(3))  # batch of 3 at 0
    h.watermark_put("tansu", f"{PART}/watermark.json", wm(3), wm(5))  # batch of 2 at 3
    assert h.stop_key("tansu", listing) == f"{PART}/records/{0:020d}"
    assert h.stop_key("tansu", "clusters/c/topics/t/") is None  # only a records/ listing is held back
    assert h.stop_key("other", listing) is None
    h.batch_put("tansu", f"{PART}/records/{3:020d}.batch")
    assert h.stop_key("tansu", listing) == f"{PART}/records/{0:020d}"
    h.batch_put("tansu", f"{PART}/records/{0:020d}.batch")
    assert h.stop_key("tansu", listing) is None
    undo = h.watermark_put("tansu", f"{PART}/watermark.json", wm(5), wm(9))
    assert undo is not None and h.lowest("tansu", PART) == 5
    undo()  # the write did not happen
    assert h.lowest("tansu", PART) is None
    assert h.watermark_put("tansu", f"{PART}/watermark.json", wm(5), wm(5)) is None  # no raise, no hole
    h.watermark_put("tansu", f"{PART}/watermark.json", wm(5), wm(6))
    clock.now += 9.9
    assert h.lowest("tansu", PART) == 5
    clock.now += 0.2
    assert h.lowest("tansu", PART) is None  # the producer died between its two writes
    h.watermark_put("tansu", f"{PART}/watermark.json", wm(6), wm(7))
    h.watermark_put("tansu", f"{PART}/watermark.json", wm(7), wm(None))  # topic created again
    assert h.lowest("tansu", PART) is None


def make_partition(st: DiskStore, topic: str, p: int, bases: list[int], mtime: float) -> str:
    for b in bases:
        path = st.path("tansu", f"clusters/c/topics/{topic}/partitions/{p:010d}/records/{b:020d}.batch")
        st.write(path, b"batch", True)
        os.utime(path, (mtime, mtime))
    return os.path.dirname(st.path("tansu", f"clusters/c/topics/{topic}/partitions/{p:010d}/records/x"))


def commit(st: DiskStore, group: str, topic: str, p: int, offset: int) -> None:
    st.write(st.path("tansu", f"clusters/c/groups/consumers/{group}/offsets/{topic}/partitions/{p:010d}.json"),
             json.dumps({"offset": offset, "leader_epoch": None, "timestamp": None, "metadata": ""}).encode(), False)


def test_the_janitor_keeps_what_a_group_still_needs_the_newest_and_what_a_hole_guards(tmp_path: Path) -> None:
    st = DiskStore(str(tmp_path))
    now = time.time()
    holes = Holes()
    day = 86400.0
    p0 = make_partition(st, "t", 0, [0, 10, 20, 30], now)  # batches of 10
    p1 = make_partition(st, "t", 1, [0, 5, 9], now)
    p2 = make_partition(st, "t", 2, [0, 1, 2, 3], now - 9 * day)  # no group, older than the retention
    p3 = make_partition(st, "u", 0, [0, 1, 2, 5, 6], now - 9 * day)  # the batch at 3 is being written
    commit(st, "g1", "t", 0, 25)  # inside the batch at 20
    commit(st, "g2", "t", 0, 31)
    commit(st, "g1", "t", 1, 100)  # past the end: all but the newest go
    holes.watermark_put("tansu", "clusters/c/topics/u/partitions/0000000000/watermark.json", wm(3), wm(5))
    Janitor(st, holes, retention_seconds=7 * day).run_once()
    assert sorted(os.listdir(p0)) == [f"{b:020d}.batch" for b in (20, 30)]  # 10 is below 25 only up to 19
    assert sorted(os.listdir(p1)) == [f"{9:020d}.batch"]
    assert sorted(os.listdir(p2)) == [f"{3:020d}.batch"]
    assert sorted(os.listdir(p3)) == [f"{b:020d}.batch" for b in (5, 6)]  # nothing at or above the hole
    assert st.leaf_names(p0) == sorted(os.listdir(p0))


async def feed(data: bytes) -> Request | None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(data)
    reader.feed_eof()

    class Sink:
        def write(self, _b: bytes) -> None:
            pass

    return await read_request(reader, Sink())  # type: ignore[arg-type]


@pytest.mark.parametrize(("data", "status"), [
    (b"NOT HTTP\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
    (b"PUT /b/k HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"PUT /b/k HTTP/1.1\r\nContent-Length: 67108865\r\n\r\n", 413),
    (b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4000001\r\n", 413),
    (b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX", 400),
    (b"PUT /b/k HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 431),
])
def test_malformed_framing_is_a_bad_request(data: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as e:
        asyncio.run(feed(data))
    assert e.value.status == status


def test_framing_reads_bodies_and_keep_alive() -> None:
    req = asyncio.run(feed(b"PUT /b/k HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
    assert req is not None and (req.method, req.target, req.body, req.keep_alive) == ("PUT", "/b/k", b"abc", True)
    req = asyncio.run(feed(b"GET /b/k HTTP/1.0\r\n\r\n"))
    assert req is not None and not req.keep_alive
    assert asyncio.run(feed(b"")) is None
    assert asyncio.run(feed(b"PUT /b/k HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc")) is None  # cut short
    assert etag_of(b"") == '"d41d8cd98f00b204e9800998ecf8427e"'


def kafka_batch(base: int, last_delta: int) -> bytes:
    """A Kafka v2 record batch head (what Tansu stores) with ``lastOffsetDelta``; the rest is padding."""
    return (base.to_bytes(8, "big") + (49).to_bytes(4, "big") + b"\xff" * 4 + b"\x02" + b"\x00" * 6
            + last_delta.to_bytes(4, "big") + b"\x00" * 34)


def test_holes_a_restart_forgot_are_found_again_and_dropped_when_tansu_starts(tmp_path: Path) -> None:
    st = DiskStore(str(tmp_path))
    records = f"{PART}/records"
    old = time.time() - 3600
    for base, delta, mtime in ((0, 4, old), (10, 4, old), (15, 0, None), (20, 0, None)):  # gaps at 5 and 16..19
        path = st.path("tansu", f"{records}/{base:020d}.batch")
        st.write(path, kafka_batch(base, delta), True)
        if mtime:
            os.utime(path, (mtime, mtime))
    st.write(st.path("tansu", f"{PART}/watermark.json"), wm(30), False)  # 21..29 reserved, not written
    h = Holes(timeout=10)
    assert h.recover(DiskStore(str(tmp_path))) == 2
    assert h.lowest("tansu", PART) == 16  # the old gap at 5 is long dead; 16 and 21 may still come
    h.batch_put("tansu", f"{records}/{16:020d}.batch", kafka_batch(16, 1))  # 16..17: next hole at 18
    assert h.lowest("tansu", PART) == 18
    h.batch_put("tansu", f"{records}/{18:020d}.batch", kafka_batch(18, 1))  # 18..19: 20 is there
    assert h.lowest("tansu", PART) == 21
    h.batch_put("tansu", f"{records}/{21:020d}.batch", kafka_batch(21, 4))  # 21..25
    assert h.lowest("tansu", PART) == 26
    h.broker_started("tansu")  # a new Tansu: the old one's writes in flight were never acknowledged
    assert h.lowest("tansu", PART) is None
    h.batch_put("tansu", f"{records}/{26:020d}.batch", kafka_batch(26, 3))
    assert h.lowest("tansu", PART) is None


def test_a_batch_written_after_a_later_one_gets_an_older_mtime(tmp_path: Path) -> None:
    from auditlogkit.server.s3disk.tansu import batch_mtime

    st = DiskStore(str(tmp_path))
    later = st.path("tansu", f"{PART}/records/{5:020d}.batch")
    st.write(later, kafka_batch(5, 0), True, batch_mtime(st))
    time.sleep(0.01)
    earlier = st.path("tansu", f"{PART}/records/{3:020d}.batch")
    st.write(earlier, kafka_batch(3, 1), True, batch_mtime(st))
    assert os.stat(earlier).st_mtime < os.stat(later).st_mtime
    newest = st.path("tansu", f"{PART}/records/{6:020d}.batch")
    st.write(newest, kafka_batch(6, 0), True, batch_mtime(st))  # in order: now
    assert os.stat(newest).st_mtime > os.stat(later).st_mtime
    entries = st.list_keys("tansu", f"{PART}/records/", "", 10)
    assert [e.mtime for e in entries] == sorted(e.mtime for e in entries)
