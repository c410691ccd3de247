"""s3disk: a small durable S3-compatible server on loopback, the storage of the embedded Tansu broker (``s3://``).

Contract:
- ``python -m auditlogkit.server.s3disk --root DIR --port PORT [--retention-hours H] [--janitor-seconds S]`` serves the
  objects under ``DIR`` on 127.0.0.1:PORT (every bucket exists; ready once the port accepts connections), logs
  JSON lines to stderr, stops on SIGTERM/SIGINT with exit code 0, exits 2 if the port is taken.
- It implements what Tansu 0.6's object_store client uses: conditional PUT (``If-Match`` / ``If-None-Match: *``,
  412), GET/HEAD (304 on a matching ``If-None-Match``), DELETE, ListObjectsV2, bulk delete; ETags are content
  MD5s, stable across restarts.
- Durability: a PUT or DELETE is answered only after the data and the directory entries are fsynced, so what it
  acknowledged survives SIGKILL and a machine crash (if the disk honours flushes).
- Tansu-specific: a fetch cannot skip a batch still being written (:mod:`auditlogkit.server.s3disk.tansu`), and a janitor
  deletes batches below every group's committed offset or older than the retention.
- It is not a general S3: no authentication (bind loopback only), no multipart, copy, versioning or ranges; one
  process owns a root directory.
"""
