-- Jobs' live logs, in the store, so that whichever server a runner reaches appends to the same
-- log and any server reads it whole. A log is its chunks in `start_at` order; a chunk is what
-- one append added (an append that repeats bytes the log has skips them, so chunks never
-- overlap). `node` is 0 for the lead's log (the job's), k for node k's.
CREATE TABLE job_logs (
    workspace_id TEXT NOT NULL,
    job          TEXT NOT NULL,
    node         INTEGER NOT NULL,
    start_at     INTEGER NOT NULL,
    data         BLOB NOT NULL,
    PRIMARY KEY (workspace_id, job, node, start_at),
    FOREIGN KEY (workspace_id, job) REFERENCES jobs(workspace_id, name) ON DELETE CASCADE
);
