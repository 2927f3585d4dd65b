-- Jobs' live logs: see migrations/sqlite/0013_job_logs.sql.
CREATE TABLE job_logs (
    workspace_id TEXT COLLATE "C" NOT NULL,
    job          TEXT COLLATE "C" NOT NULL,
    node         BIGINT NOT NULL,
    start_at     BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, job, node, start_at),
    FOREIGN KEY (workspace_id, job) REFERENCES jobs(workspace_id, name) ON DELETE CASCADE
);
