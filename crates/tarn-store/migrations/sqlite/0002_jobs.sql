-- Jobs and job-scoped tokens.

-- A token's scope: '' for a user's own token; 'job:<workspace id>:<job name>' for the token a
-- job's runner holds, which acts only in that job's workspace and dies with the job.
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT '';
CREATE INDEX tokens_by_scope ON tokens (scope);

-- One row per job. `status` is the lifecycle state the scheduler reads; `state` (JSON) holds
-- what the lifecycle recorded: timestamps per status, nodes, exit code, error, log tail, the run
-- plan the runner executes. `seq` orders jobs first-in-first-out across workspaces.
CREATE TABLE jobs (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    parent       TEXT NOT NULL,
    job_type     TEXT NOT NULL,
    experiment   TEXT NOT NULL,
    compute      TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    spec         TEXT NOT NULL,
    state        TEXT NOT NULL,
    archived     INTEGER NOT NULL DEFAULT 0,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
CREATE INDEX jobs_by_seq ON jobs (workspace_id, seq);
CREATE INDEX jobs_active ON jobs (status, seq);
