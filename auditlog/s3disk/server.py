"""s3disk's connections and the S3 operations Tansu's object_store 0.12 client uses.

Objects: PUT (plain, ``If-None-Match: *`` create-only, ``If-Match: <etag>``; 412 when a condition fails), GET and
HEAD (``If-None-Match`` -> 304, ``If-Match`` -> 412), DELETE. Buckets (every one exists): ListObjectsV2 (prefix,
delimiter, start-after, continuation-token, max-keys <= 1000), POST ``?delete``, PUT/HEAD. A request that cannot
be read is answered by :mod:`auditlogkit.server.s3disk.wire`'s status and its connection closed; a bad key or argument is a
400, a failing operation a 500 (logged); the server itself does not stop.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from auditlogkit.server.logs import get_logger
from auditlogkit.server.s3disk.store import TMP_DIR, DiskStore, InvalidKey, KeyConflict, check_bucket, etag_of
from auditlogkit.server.s3disk.tansu import BATCH_RE, Holes, batch_mtime
from auditlogkit.server.s3disk.wire import BadRequest, Request, Response, read_request, write_response

log = get_logger("auditlogkit.server.s3disk.server")

MAX_DELETE_KEYS = 1000
XML = {"Content-Type": "application/xml"}


def error(status: int, code: str, message: str = "") -> Response:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message or code)}</Message></Error>").encode()
    return status, dict(XML), body


def etag_matches(header: str, current: str) -> bool:
    return any(t.strip() in ("*", current) or t.strip().removeprefix("W/") == current for t in header.split(","))


@functools.lru_cache(maxsize=1 << 16)
def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KeyLocks:
    """One asyncio lock per object path, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    @asynccontextmanager
    async def hold(self, path: str) -> AsyncIterator[None]:
        held = self._held.get(path)
        if held is None:
            held = self._held[path] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._held[path]

    def __len__(self) -> int:
        return len(self._held)


class S3Server:
    """The S3 operations over a :class:`DiskStore`, with the Tansu race fix of :class:`Holes`."""

    def __init__(self, store: DiskStore, holes: Holes) -> None:
        self.store = store
        self.holes = holes
        self.locks = KeyLocks()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            while True:
                try:
                    req = await read_request(reader, writer)
                except BadRequest as e:
                    log.warning("s3disk.bad_request", status=e.status, reason=e.reason)
                    write_response(writer, "GET", error(e.status, "BadRequest", e.reason), keep_alive=False)
                    await writer.drain()
                    return
                if req is None:
                    return
                resp = await self.dispatch(req)
                write_response(writer, req.method, resp, req.keep_alive)
                await writer.drain()
                if not req.keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:  # shutting down; a cancelled task here makes asyncio 3.11 log a traceback
            return
        finally:
            if task is not None:
                self.tasks.discard(task)
            writer.close()

    async def close_connections(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=0.5)

    async def dispatch(self, req: Request) -> Response:
        try:
            return await self.handle(req)
        except BadRequest as e:
            return error(e.status, "InvalidArgument", e.reason)
        except InvalidKey:
            return error(400, "InvalidArgument", "invalid bucket name or key")
        except KeyConflict:
            return error(409, "KeyConflict", "a key and a prefix of it cannot both be objects here")
        except Exception as e:
            log.exception("s3disk.request_failed", method=req.method, target=req.target[:300], error=repr(e))
            return error(500, "InternalError")

    async def handle(self, req: Request) -> Response:
        url = urllib.parse.urlsplit(req.target)
        try:
            q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True, errors="strict"))
            path = urllib.parse.unquote(url.path, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "undecodable path or query") from None
        bucket, _, key = path[1:].partition("/")
        m = req.method
        if not bucket:
            if m in ("GET", "HEAD"):
                return await asyncio.to_thread(self.list_buckets)
            return error(405, "MethodNotAllowed")
        check_bucket(bucket)
        if not key:
            if m == "GET":
                if "uploads" in q:
                    return error(501, "NotImplemented", "multipart uploads")
                return await asyncio.to_thread(self.list_v2, bucket, q)
            if m == "POST" and "delete" in q:
                return await self.bulk_delete(bucket, req.body)
            if m in ("PUT", "HEAD"):  # create bucket / head bucket: every bucket exists
                return 200, {}, b""
            return error(405, "MethodNotAllowed")
        if any(k in q for k in ("uploads", "uploadId", "partNumber", "tagging", "acl")) or \
                "x-amz-copy-source" in req.headers:
            return error(501, "NotImplemented", "only plain object operations")
        p = self.store.path(bucket, key)
        if m in ("GET", "HEAD"):
            return await self.get(p, req)
        if m == "PUT":
            return await self.put(bucket, key, p, req)
        if m == "DELETE":
            async with self.locks.hold(p):
                await asyncio.to_thread(self.store.delete, p)
            self.holes.watermark_deleted(bucket, key)
            return 204, {}, b""
        return error(405, "MethodNotAllowed")

    async def get(self, p: str, req: Request) -> Response:
        got = await asyncio.to_thread(self.store.read, p)
        if got is None:
            return error(404, "NoSuchKey")
        data, mtime = got
        tag = etag_of(data)
        headers = {"ETag": tag, "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
                   "Content-Type": "application/octet-stream"}
        if (h := req.headers.get("if-match")) is not None and not etag_matches(h, tag):
            return error(412, "PreconditionFailed")
        if (h := req.headers.get("if-none-match")) is not None and etag_matches(h, tag):
            return 304, headers, b""
        if req.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return 200, headers, b""
        return 200, headers, data

    async def put(self, bucket: str, key: str, p: str, req: Request) -> Response:
        if_match = req.headers.get("if-match")
        if_none = req.headers.get("if-none-match")
        create_only = if_none is not None and if_none.strip() == "*" and if_match is None
        tag = etag_of(req.body)
        async with self.locks.hold(p):  # read, compare and replace are one step per key
            current: bytes | None = None
            if if_match is not None or (if_none is not None and not create_only) or key.endswith("watermark.json"):
                got = await asyncio.to_thread(self.store.read, p)
                current = None if got is None else got[0]
                have = None if current is None else etag_of(current)
                if if_match is not None and (have is None or not etag_matches(if_match, have)):
                    return error(412, "PreconditionFailed")
                if if_none is not None and have is not None and etag_matches(if_none, have):
                    return error(412, "PreconditionFailed")
            undo = self.holes.watermark_put(bucket, key, current, req.body)
            try:
                when = batch_mtime(self.store) if BATCH_RE.fullmatch(key) else None
                ok = await asyncio.to_thread(self.store.write, p, req.body, create_only, when)
            except Exception:
                if undo:
                    undo()
                raise
            if not ok:
                if undo:
                    undo()
                if BATCH_RE.fullmatch(key):  # it exists: not a hole
                    got = await asyncio.to_thread(self.store.read, p)
                    self.holes.batch_put(bucket, key, got[0] if got else b"")
                return error(412, "PreconditionFailed")
        self.holes.batch_put(bucket, key, req.body)
        return 200, {"ETag": tag}, b""

    def list_v2(self, bucket: str, q: dict[str, str]) -> Response:
        prefix = q.get("prefix", "")
        delim = q.get("delimiter", "")
        after = max(q.get("continuation-token", ""), q.get("start-after", ""))
        mk = q.get("max-keys", "1000")
        if not mk.isdigit():
            raise BadRequest(400, "max-keys must be a non-negative integer")
        max_keys = min(int(mk), 1000)
        if not prefix and not delim and not after:
            self.holes.broker_started(bucket)  # Tansu's storage ping at start
        stop = self.holes.stop_key(bucket, prefix)
        contents: list[tuple[str, int, float]] = []
        prefixes: list[str] = []
        last, truncated = "", False
        for e in self.store.list_keys(bucket, prefix, after, max_keys + 1, stop):
            k = e.key
            cp = None
            if delim and delim in k[len(prefix):]:
                cp = prefix + k[len(prefix):].split(delim, 1)[0] + delim
                if cp <= after or (prefixes and prefixes[-1] == cp):
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            if cp is not None:
                prefixes.append(cp)
                last = cp
            else:
                contents.append((k, e.size, e.mtime))
                last = k
        parts = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                 f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
                 f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
                 f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
        if delim:
            parts.append(f"<Delimiter>{escape(delim)}</Delimiter>")
        if truncated:
            parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
        for k, size, mtime in contents:
            parts.append(f"<Contents><Key>{escape(k)}</Key><LastModified>{iso(mtime)}</LastModified>"
                         f"<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>")
        for cp in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(cp)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        return 200, dict(XML), "".join(parts).encode()

    def list_buckets(self) -> Response:
        names = [b for b in self.store.subdirs(self.store.root) if b != TMP_DIR]
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult><Buckets>'
                + "".join(f"<Bucket><Name>{escape(b)}</Name></Bucket>" for b in names)
                + "</Buckets></ListAllMyBucketsResult>")
        return 200, dict(XML), body.encode()

    async def bulk_delete(self, bucket: str, body: bytes) -> Response:
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return error(400, "MalformedXML")
        keys = [el.text or "" for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Key"]
        quiet = any(el.tag.rsplit("}", 1)[-1] == "Quiet" and (el.text or "").strip().lower() == "true"
                    for el in root.iter())
        if len(keys) > MAX_DELETE_KEYS:
            return error(400, "MalformedXML", f"more than {MAX_DELETE_KEYS} keys")
        out = ['<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
        for k in keys:
            try:
                p = self.store.path(bucket, k)
            except InvalidKey:
                out.append(f"<Error><Key>{escape(k)}</Key><Code>InvalidArgument</Code>"
                           "<Message>invalid key</Message></Error>")
                continue
            async with self.locks.hold(p):
                await asyncio.to_thread(self.store.delete, p)
            self.holes.watermark_deleted(bucket, k)
            if not quiet:
                out.append(f"<Deleted><Key>{escape(k)}</Key></Deleted>")
        out.append("</DeleteResult>")
        return 200, dict(XML), "".join(out).encode()
