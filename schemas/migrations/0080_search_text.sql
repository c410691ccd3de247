-- Keyword search (`q` of the list, exports, stats, the live tail and log streams) matches LIKE '%term%' in the
-- lower-cased text of e-mail, target id, target name and description. Computing that text at query time reads the
-- four columns of every row of the period (at 10M rows, a week of the largest org without a match: ~25 ms); one
-- column made at insert reads one (~11 ms). MATERIALIZED: ClickHouse computes it at insert, it is never inserted,
-- and it is not in SELECT *. Parts written before this migration get it by the MATERIALIZE mutation (in the
-- background on a large table; until then a read computes it for them). The text must stay the query side's
-- SEARCH_EXPR (query_api/read/filters.py) verbatim.
ALTER TABLE {db}.audit_events ADD COLUMN IF NOT EXISTS search_text String MATERIALIZED lowerUTF8(concat(ifNull(actor_email, ''), ' ', ifNull(target_id, ''), ' ', ifNull(target_name, ''), ' ', description)) CODEC(ZSTD(3));
ALTER TABLE {db}.audit_events MATERIALIZE COLUMN search_text;
-- The n-gram Bloom filter on the same text (0001, 0021) is saturated on real data (it prunes no granule) and
-- only costs its reading; the column replaces it.
ALTER TABLE {db}.audit_events DROP INDEX IF EXISTS idx_search;
