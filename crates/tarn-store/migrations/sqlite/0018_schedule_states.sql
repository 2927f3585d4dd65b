-- What the scheduler has decided for each schedule (whose spec is a resource): the last due
-- time dealt with, fired or passed over, in seconds since the epoch; the rule it was decided
-- under (a digest of the trigger and whether it is enabled: a changed rule starts afresh);
-- and how the fires went.
CREATE TABLE schedule_states (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    rule         TEXT NOT NULL,
    through      INTEGER NOT NULL,
    fired        INTEGER NOT NULL,
    skipped      INTEGER NOT NULL,
    last_error   TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
