"""HTTP/1.1 framing for s3disk: read one request from a stream, write one response.

A malformed request raises :class:`BadRequest` (400; 431 for a head over :data:`MAX_HEAD`, 413 for a body over
:data:`MAX_BODY`): the caller answers it and closes the connection. Bodies come with ``Content-Length`` or
chunked; ``Expect: 100-continue`` is honoured; HTTP/1.1 connections are kept alive unless ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
REASONS = {100: "Continue", 200: "OK", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
           404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           501: "Not Implemented"}
_METHOD_RE = re.compile(r"[A-Z]{1,16}")
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX_RE = re.compile(r"[0-9A-Fa-f]{1,16}")


class BadRequest(Exception):
    """The request cannot be read: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    """The next request on a connection; None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head over 64 KiB") from None
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD_RE.fullmatch(parts[0]) or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not target.startswith("/"):
        raise BadRequest(400, "request target must be a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise BadRequest(400, "malformed header line")
        name, value = name.lower(), value.strip(" \t")
        if name in headers:
            if name in ("content-length", "transfer-encoding", "host") and headers[name] != value:
                raise BadRequest(400, f"conflicting {name} headers")
            value = headers[name] if name in ("content-length", "host") else f"{headers[name]}, {value}"
        headers[name] = value
    conn = headers.get("connection", "").lower()
    keep_alive = "close" not in conn and (version == "HTTP/1.1" or "keep-alive" in conn)
    te = headers.get("transfer-encoding", "").lower()
    length = headers.get("content-length")
    if te and length is not None:
        raise BadRequest(400, "both Transfer-Encoding and Content-Length")
    if te and te != "chunked":
        raise BadRequest(400, f"unsupported Transfer-Encoding {te!r}")
    if length is not None:
        if not length.isdigit() or len(length) > 18:
            raise BadRequest(400, "malformed Content-Length")
        if int(length) > MAX_BODY:
            raise BadRequest(413, "body over 64 MiB")
    if headers.get("expect", "").lower() == "100-continue" and (te or length):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        body = await (_read_chunked(reader) if te else reader.readexactly(int(length or 0)))
    except asyncio.IncompleteReadError:
        return None
    return Request(method, target, headers, body, keep_alive)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise BadRequest(400, "chunk size line too long") from None
        size_s = line[:-2].split(b";", 1)[0].strip().decode("latin-1")
        if not _HEX_RE.fullmatch(size_s):
            raise BadRequest(400, "malformed chunk size")
        size = int(size_s, 16)
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise BadRequest(413, "body over 64 MiB")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "chunk not followed by CRLF")
    while True:  # trailer fields, up to the empty line
        try:
            if await reader.readuntil(b"\r\n") == b"\r\n":
                return b"".join(chunks)
        except asyncio.LimitOverrunError:
            raise BadRequest(400, "trailer line too long") from None


Response = tuple[int, dict[str, str], bytes]


def write_response(writer: asyncio.StreamWriter, method: str, resp: Response, keep_alive: bool) -> None:
    """Queue ``resp`` on ``writer`` (no body for HEAD; ``Content-Length`` unless the handler set it)."""
    status, headers, payload = resp
    headers.setdefault("Content-Length", str(len(payload)))
    headers["Date"] = email.utils.formatdate(usegmt=True)
    if not keep_alive:
        headers["Connection"] = "close"
    out = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
    if payload and method != "HEAD":
        writer.write(payload)
