-- What the scheduler has decided for each schedule (whose spec is a resource): the last due
-- time dealt with, fired or passed over, in seconds since the epoch; the rule it was decided
-- under (a digest of the trigger and whether it is enabled: a changed rule starts afresh);
-- and how the fires went.
CREATE TABLE schedule_states (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    rule         TEXT COLLATE "C" NOT NULL,
    through      BIGINT NOT NULL,
    fired        BIGINT NOT NULL,
    skipped      BIGINT NOT NULL,
    last_error   TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
