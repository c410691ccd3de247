-- Keyword search (GET /v1/events?q=) compares lowerUTF8 of this haystack with LIKE '%term%': the skipping index
-- must have the same expression for ClickHouse to use it (query_api/scoping.py SEARCH_EXPR). 0001 creates it so on
-- a fresh database; this re-creates it on databases made before (their old parts simply are not pruned).
ALTER TABLE {db}.audit_events DROP INDEX IF EXISTS idx_search;
ALTER TABLE {db}.audit_events ADD INDEX IF NOT EXISTS idx_search lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), ' ', description)) TYPE ngrambf_v1(3, 65536, 3, 0) GRANULARITY 4;
