"""What s3disk knows of Tansu 0.6's object layout: the produce/fetch race fix and the retention janitor.

Layout (``tansu-storage/src/dynostore.rs``), keys under ``clusters/<cluster>/``:
``topics/<t>/partitions/<p:010>/watermark.json`` (``{"low","high","timestamps"}``),
``topics/<t>/partitions/<p:010>/records/<base offset:020>.batch`` (one object per produced batch) and
``groups/consumers/<g>/offsets/<t>/partitions/<p:010>.json`` (``{"offset": <next offset to read>, ...}``).

Race: a produce PUTs the watermark (``If-Match``) raising ``high`` from h1 to h2, and only then the batch at h1;
a fetch lists ``records/`` and returns every batch at or after the fetch offset below ``high``, so with two
producers on a partition it can hand out the batch at h2 while the one at h1 is not written yet, and the consumer
moves past h1 for good. :class:`Holes` remembers h1 from the watermark PUT (before the new watermark is visible)
until the batch at h1 is written (or :data:`HOLE_SECONDS` pass: the producer died between its two PUTs, nothing
was acknowledged there), and a listing of that partition's ``records/`` stops below the lowest hole. Holes live in
memory; at start :meth:`Holes.recover` finds the ones a restart forgot (offsets below the watermark that no recent
batch covers, read from the batches' Kafka headers), for a Tansu that outlived s3disk and retries its batch PUT;
all are dropped when a Tansu process starts (:meth:`Holes.broker_started`: what the old one had in flight was
never acknowledged).

Retention: Tansu never deletes batches and lists them all on every fetch. :class:`Janitor` deletes, per partition,
the batches that are entirely below the lowest offset committed by the groups that committed on it (the next
batch's base offset <= that offset) and those older than the retention; never the newest batch, never one at or
above a hole. Tansu needs nothing else: its ListOffsets(earliest) answers the remaining batch with the oldest
LastModified (:func:`batch_mtime` keeps mtime order = offset order, also for batches written out of order), a
fetch below it returns the batches that remain, and ``low`` in the watermark is only reported, so it stays.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator

from auditlogkit.server.logs import get_logger
from auditlogkit.server.s3disk.store import TMP_DIR, DiskStore

log = get_logger("auditlogkit.server.s3disk.tansu")

HOLE_SECONDS = 10.0
_PART = r"(clusters/[^/]+/topics/[^/]+/partitions/[0-9]+)"
WATERMARK_RE = re.compile(_PART + r"/watermark\.json")
BATCH_RE = re.compile(_PART + r"/records/([0-9]{20})\.batch")
RECORDS_PREFIX_RE = re.compile(_PART + r"/records/")
BATCH_NAME_RE = re.compile(r"[0-9]{20}\.batch")


def _high(body: bytes | None) -> int | None:
    """``high`` of a watermark JSON (None if absent, null or unreadable)."""
    if body is None:
        return None
    try:
        high = json.loads(body).get("high")
    except (ValueError, AttributeError):
        return None
    return high if isinstance(high, int) and not isinstance(high, bool) else None


def last_offset_delta(head: bytes) -> int | None:
    """``lastOffsetDelta`` of a Kafka v2 record batch (Tansu stores batches in the wire format); None if not one."""
    if len(head) < 27 or head[16] != 2:
        return None
    return int.from_bytes(head[23:27], "big", signed=True)


def partitions(store: DiskStore) -> Iterator[tuple[str, str, str]]:
    """(bucket, ``clusters/<c>/topics/<t>/partitions/<p>``, records directory) of every partition on disk."""
    for bucket in store.subdirs(store.root):
        if bucket == TMP_DIR:
            continue
        clusters = os.path.join(store.root, bucket, "clusters")
        for cluster in store.subdirs(clusters):
            topics = os.path.join(clusters, cluster, "topics")
            for topic in store.subdirs(topics):
                pdirs = os.path.join(topics, topic, "partitions")
                for p in store.subdirs(pdirs):
                    yield bucket, f"clusters/{cluster}/topics/{topic}/partitions/{p}", os.path.join(pdirs, p, "records")


def _mtime(records: str, name: str) -> float:
    try:
        return os.stat(os.path.join(records, name)).st_mtime
    except FileNotFoundError:
        return 0.0


def _delta_of(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            return last_offset_delta(f.read(27))
    except OSError:
        return None


def batch_mtime(store: DiskStore) -> Callable[[str, str], float | None]:
    """For :meth:`DiskStore.write` of a batch: when a later batch is already there (two producers, written out of
    order), an mtime just below the later one's, so LastModified order is offset order; Tansu's ListOffsets takes
    the earliest (and latest) batch by LastModified, and a new group must not start past a batch."""

    def choose(d: str, name: str) -> float | None:
        nxt = store.next_entry(d, name)
        if nxt is None or not BATCH_NAME_RE.fullmatch(name):
            return None
        return min(time.time(), nxt.mtime - 0.001)

    return choose


class Holes:
    """Offsets whose batch a producer is about to write, per partition (``(bucket, partition key)``)."""

    def __init__(self, timeout: float = HOLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._holes: dict[tuple[str, str], dict[int, float]] = {}
        self._lock = threading.Lock()
        self._recovering: dict[tuple[str, str], tuple[int, str]] = {}  # partition -> (high at start, records dir)

    def watermark_put(self, bucket: str, key: str, old: bytes | None, new: bytes) -> Callable[[], None] | None:
        """Call before writing ``new`` over ``old`` at ``key``; returns the undo for a write that did not happen."""
        m = WATERMARK_RE.fullmatch(key)
        if m is None:
            return None
        part = (bucket, m.group(1))
        h1, h2 = _high(old) or 0, _high(new)
        with self._lock:
            holes = self._holes.get(part)
            if h2 is None or h2 < h1:  # topic created again: its old holes mean nothing
                if holes:
                    holes.clear()
                return None
            if h2 == h1:
                return None
            holes = self._holes.setdefault(part, {})
            holes[h1] = self.clock() + self.timeout

        def undo() -> None:
            with self._lock:
                self._holes.get(part, {}).pop(h1, None)

        return undo

    def watermark_deleted(self, bucket: str, key: str) -> None:
        if (m := WATERMARK_RE.fullmatch(key)) is not None:
            with self._lock:
                self._holes.pop((bucket, m.group(1)), None)

    def batch_put(self, bucket: str, key: str, body: bytes = b"") -> None:
        """Call once the batch object at ``key`` exists: its hole is filled (and, in a partition recovered at
        start, the offset after it is the next hole unless a batch is there or it reached the old watermark)."""
        if (m := BATCH_RE.fullmatch(key)) is None:
            return
        part, off = (bucket, m.group(1)), int(m.group(2))
        with self._lock:
            holes = self._holes.get(part)
            if not holes or holes.pop(off, None) is None or part not in self._recovering:
                return
            high, records = self._recovering[part]
            delta = last_offset_delta(body)
            nxt = off + delta + 1 if delta is not None else high
            if nxt >= high:
                del self._recovering[part]
            elif not os.path.exists(os.path.join(records, f"{nxt:020d}.batch")):
                holes[nxt] = self.clock() + self.timeout

    def recover(self, store: DiskStore) -> int:
        """At start: a hole at every offset below a partition's watermark where a batch of the last
        :attr:`timeout` seconds (or the watermark) begins after a gap. Returns how many."""
        found = 0
        recent = time.time() - self.timeout
        for bucket, part, records in partitions(store):
            try:
                with open(os.path.join(records, os.pardir, "watermark.json"), "rb") as f:
                    high = _high(f.read())
            except OSError:
                continue
            names = [n for n in store.leaf_names(records) or [] if BATCH_NAME_RE.fullmatch(n)]
            if not high:
                continue
            start = len(names)  # the recent batches, and the one before them
            while start > 0 and _mtime(records, names[start - 1]) >= recent:
                start -= 1
            end = None
            gaps = []
            for name in names[max(start - 1, 0):]:
                base = int(name[:20])
                if end is not None and base > end:
                    gaps.append(end)
                delta = _delta_of(os.path.join(records, name))
                end = base + delta + 1 if delta is not None else None
            if end is not None and end < high:
                gaps.append(end)
            elif not names:
                gaps.append(0)
            if gaps:
                deadline = self.clock() + self.timeout
                with self._lock:
                    self._holes.setdefault((bucket, part), {}).update(dict.fromkeys(gaps, deadline))
                    self._recovering[(bucket, part)] = (high, records)
                log.info("s3disk.holes_recovered", bucket=bucket, partition=part, offsets=gaps, high=high)
                found += len(gaps)
        return found

    def broker_started(self, bucket: str) -> None:
        """Tansu lists the whole bucket once when it starts (its storage ping): a new broker process, so what the
        previous one had in flight was never acknowledged and nobody will fill its holes."""
        with self._lock:
            dropped = {part: sorted(h) for (b, part), h in self._holes.items() if b == bucket and h}
            for key in [k for k in self._holes if k[0] == bucket]:
                del self._holes[key]
            for key in [k for k in self._recovering if k[0] == bucket]:
                del self._recovering[key]
        log.info("s3disk.broker_started", bucket=bucket, holes_dropped=dropped)

    def lowest(self, bucket: str, part: str) -> int | None:
        """The lowest open hole of a partition (expired ones are dropped here)."""
        with self._lock:
            holes = self._holes.get((bucket, part))
            if not holes:
                return None
            now = self.clock()
            for off in [o for o, deadline in holes.items() if deadline <= now]:
                del holes[off]
                log.warning("s3disk.hole_expired", bucket=bucket, partition=part, offset=off,
                            seconds=self.timeout)
            return min(holes) if holes else None

    def stop_key(self, bucket: str, prefix: str) -> str | None:
        """For a listing of a partition's ``records/``: the key it must stop before (None: no hole)."""
        m = RECORDS_PREFIX_RE.match(prefix)
        if m is None:
            return None
        low = self.lowest(bucket, m.group(1))
        return None if low is None else f"{m.group(1)}/records/{low:020d}"


class Janitor:
    """One pass over every partition of every bucket deletes the batches nobody needs (see the module doc)."""

    def __init__(self, store: DiskStore, holes: Holes, retention_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.holes = holes
        self.retention = retention_seconds
        self.clock = clock
        self.stopping = False

    def committed(self, cluster_dir: str) -> dict[tuple[str, str], int]:
        """Lowest committed offset per (topic, partition dir name) over the groups of a cluster."""
        low: dict[tuple[str, str], int] = {}
        groups = os.path.join(cluster_dir, "groups", "consumers")
        for g in self.store.subdirs(groups):
            offsets = os.path.join(groups, g, "offsets")
            for t in self.store.subdirs(offsets):
                pdir = os.path.join(offsets, t, "partitions")
                try:
                    names = os.listdir(pdir)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for name in names:
                    if not name.endswith(".json"):
                        continue
                    try:
                        with open(os.path.join(pdir, name), "rb") as f:
                            off = json.loads(f.read()).get("offset")
                    except (OSError, ValueError, AttributeError):
                        continue
                    if isinstance(off, int) and not isinstance(off, bool) and off >= 0:
                        k = (t, name.removesuffix(".json"))
                        low[k] = min(off, low.get(k, off))
        return low

    def doomed(self, records: str, names: list[str], committed: int | None, hole: int | None) -> list[str]:
        """The batch names of one partition (sorted ``names``) to delete."""
        cutoff = self.clock() - self.retention
        out = []
        for i, name in enumerate(names[:-1]):  # never the newest
            if hole is not None and int(name[:20]) >= hole:
                break
            if committed is not None and int(names[i + 1][:20]) <= committed:
                out.append(name)
                continue
            try:
                mtime = os.stat(os.path.join(records, name)).st_mtime
            except FileNotFoundError:
                continue
            if mtime >= cutoff:
                break  # batches are written in offset order, near enough: the rest are younger
            out.append(name)
        return out

    def run_once(self) -> int:
        """Delete what is due; returns how many batch objects went."""
        t0 = time.monotonic()
        deleted = parts = 0
        committed: dict[str, dict[tuple[str, str], int]] = {}  # by cluster directory
        for bucket, part, records in partitions(self.store):
            if self.stopping:
                break
            names = [n for n in self.store.leaf_names(records) or [] if BATCH_NAME_RE.fullmatch(n)]
            if len(names) < 2:
                continue
            _, cluster, _, topic, _, p = part.split("/")
            cdir = os.path.join(self.store.root, bucket, "clusters", cluster)
            if cdir not in committed:
                committed[cdir] = self.committed(cdir)
            low = committed[cdir].get((topic, p))
            doomed = self.doomed(records, names, low, self.holes.lowest(bucket, part))
            if doomed:
                deleted += self.store.delete_many(records, doomed)
                parts += 1
        if deleted:
            log.info("s3disk.janitor.deleted", batches=deleted, partitions=parts,
                     seconds=round(time.monotonic() - t0, 3))
        return deleted
