-- Log streams (query_api/streams): each organization's streams of its events to its own systems.
-- Updates are new rows of a higher version, read with FINAL (ReplacingMergeTree); nothing is updated in place.

-- One row per version of a stream's configuration, written by the API (create, PATCH, DELETE). The secrets of
-- its destination (webhook secret, tokens, keys) are only in `secrets`: AES-256-GCM with AUDITLOG_STREAMS_KEY,
-- which is not in the store. `state` is the owner's choice (active/paused); "failing" is the delivery's, in
-- audit_stream_positions. `start_at`: deliver what was stored from then on (NULL: from the position the stream
-- was created at).
CREATE TABLE IF NOT EXISTS {db}.audit_streams
(
    stream_id         UUID,
    org_id            String,
    name              String,
    destination_type  LowCardinality(String),
    destination       String,
    secrets           String,
    filters           String,
    state             Enum8('active' = 1, 'paused' = 2),
    start_at          Nullable(DateTime64(3, 'UTC')),
    created_at        DateTime64(3, 'UTC'),
    updated_at        DateTime64(3, 'UTC'),
    deleted           UInt8 DEFAULT 0,
    version           UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (org_id, stream_id);

-- Where each stream's delivery stands, written by the deliverer that holds its lease after every delivered batch
-- (and on a failure): the position (per Kafka partition the last offset passed), the events delivered, the last
-- error. version = (lease term << 32) + the holder's save count: a later holder's rows always win.
CREATE TABLE IF NOT EXISTS {db}.audit_stream_positions
(
    stream_id          UUID,
    position           Map(UInt32, UInt64),
    delivered          UInt64,
    last_delivered_at  Nullable(DateTime64(3, 'UTC')),
    failing            UInt8,
    last_error         Nullable(String),
    updated_at         DateTime64(3, 'UTC') DEFAULT now64(3),
    version            UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY stream_id;

-- Leases: which deliverer delivers a stream. A term is claimed once (an INSERT with the deduplication token
-- "lease:<stream>:<term>", read back: the first claim of a term wins), renewed by its holder (same key, later
-- seq), released by an expiry in the past. The rows of the nil stream id are the deliverers' roll-call.
CREATE TABLE IF NOT EXISTS {db}.audit_stream_leases
(
    stream_id   UUID,
    term        UInt64,
    holder      String,
    expires_at  DateTime64(3, 'UTC'),
    seq         UInt64
)
ENGINE = ReplacingMergeTree(seq)
ORDER BY (stream_id, term)
SETTINGS non_replicated_deduplication_window = 10000;
