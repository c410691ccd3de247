"""A decode helper process (``python -m auditlogkit.consumers.decode.helper [niceness]``), driven by :mod:`auditlogkit.consumers.decode.pool`.

Protocol over stdin/stdout, length-prefixed pickle frames (:func:`~auditlogkit.consumers.decode.pool.write_frame`):
first ``(catalog, column type names)``; then, per request, a list of :class:`~auditlogkit.consumers.decode.decoder.Chunk` answered
by ``("ok", [DecodedChunk, ...])`` or ``("error", text)``. The process exits when stdin closes (the pool closed
or the consumer died); it writes nothing else to stdout.
"""

from __future__ import annotations

import os
import sys

from auditlogkit.consumers.decode.decoder import Decoder
from auditlogkit.consumers.decode.native import NativeEncoder
from auditlogkit.consumers.decode.pool import read_frame, write_frame


def main() -> int:
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # from here fd 1 is stderr: a stray print or log line cannot corrupt the frames
    sys.stdout = sys.stderr
    nice = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if nice:
        os.nice(nice)  # e.g. beside the API in `auditlog up`: ingest yields the CPU to whatever serves people
    try:
        catalog, type_names = read_frame(inp)
    except EOFError:
        return 0
    decoder, encoder = Decoder(catalog), NativeEncoder(type_names)
    while True:
        try:
            chunks = read_frame(inp)
        except EOFError:
            return 0
        reply: tuple[str, object]
        try:
            reply = ("ok", [decoder.decode_chunk(c, encoder) for c in chunks])
        except Exception as exc:  # a bug: decoding never raises for bad input
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            write_frame(out, reply)
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    sys.exit(main())
