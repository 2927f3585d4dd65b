-- Metric history in chunks: one row per (run, key) per logging call, holding that call's
-- points as a JSON array of [step, timestamp, value], the value a string that parses back to
-- the same double exactly ("1e-1", "inf"), or null for NaN. A log-batch of 1000 metrics over 10 keys writes 10 rows
-- instead of 1000 rows and 1000 index entries; reading a history reads its chunks in the
-- order they were written and sorts by step then timestamp (sqlite_tracking.rs). The latest
-- values that search uses stay in `latest_metrics`.
CREATE TABLE metric_chunks (
    id           INTEGER PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    key          TEXT NOT NULL,
    points       INTEGER NOT NULL,
    data         TEXT NOT NULL,
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
CREATE INDEX metric_chunks_by_key ON metric_chunks (workspace_id, run_id, key, id);

-- The history so far becomes one chunk per (run, key), in its reading order.
INSERT INTO metric_chunks (workspace_id, run_id, key, points, data)
SELECT workspace_id, run_id, key, COUNT(*), json_group_array(json_array(
         step, timestamp,
         CASE WHEN is_nan != 0 OR value IS NULL THEN NULL ELSE printf('%.17e', value) END))
FROM (SELECT * FROM metrics ORDER BY workspace_id, run_id, key, step, timestamp, rowid)
GROUP BY workspace_id, run_id, key;

DROP TABLE metrics;
