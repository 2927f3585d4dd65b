-- Whether a compute instance should be running: set by `start`/`stop`, idle shutdown and
-- schedules; the instance controller makes it so. Its run-time state lives in the server.
CREATE TABLE compute_states (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    desired      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
