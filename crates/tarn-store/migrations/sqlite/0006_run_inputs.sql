-- Datasets a run used (MLflow `log_inputs`): one row per (run, dataset name, digest).
CREATE TABLE run_inputs (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    tags         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, name, digest),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
