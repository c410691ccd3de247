-- Catalog labels for analysts: one row per (scope, action) with the category and the display labels of
-- scope, category and action (CATALOG.md). Loaded from schemas/catalog.json (+ the operator's extra file)
-- by `auditlog migrate` on every run (a repeatable step that inserts only what changed), so relabelling
-- or extending the catalog never needs a code edit. ReplacingMergeTree(loaded_at): read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.catalog_actions
(
    scope           LowCardinality(String),
    action          LowCardinality(String),
    category        LowCardinality(String),
    scope_label     String,
    category_label  String,
    action_label    String,
    loaded_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (scope, action)
SETTINGS non_replicated_deduplication_window = 100;
