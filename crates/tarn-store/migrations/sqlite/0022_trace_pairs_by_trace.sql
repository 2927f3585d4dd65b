-- A trace's tags and metadata kept in their key's order (`WITHOUT ROWID`): a search's tag
-- filter and the page's tags and metadata each read one place, where a rowid table took a seek
-- in its key's index and another in the table for each value (`benches/traces.sh`).

CREATE TABLE trace_tags_by_trace (
    workspace_id TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO trace_tags_by_trace SELECT workspace_id, trace_id, key, value FROM trace_tags;
DROP TABLE trace_tags;
ALTER TABLE trace_tags_by_trace RENAME TO trace_tags;

CREATE TABLE trace_metadata_by_trace (
    workspace_id TEXT NOT NULL,
    trace_id     TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, trace_id, key),
    FOREIGN KEY (workspace_id, trace_id) REFERENCES traces(workspace_id, trace_id) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO trace_metadata_by_trace SELECT workspace_id, trace_id, key, value FROM trace_metadata;
DROP TABLE trace_metadata;
ALTER TABLE trace_metadata_by_trace RENAME TO trace_metadata;
