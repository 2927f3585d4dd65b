-- MLflow-compatible tracking: experiments, runs, params, tags, metrics.
-- Metric history is append-only; `latest_metrics` keeps one row per (run, key) so that reading a
-- run and searching runs never scan the history.

CREATE TABLE experiments (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id     INTEGER NOT NULL,
    name              TEXT NOT NULL,
    artifact_location TEXT NOT NULL,
    lifecycle_stage   TEXT NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_update_time  INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id),
    UNIQUE (workspace_id, name)
);

CREATE TABLE experiment_tags (
    workspace_id  TEXT NOT NULL,
    experiment_id INTEGER NOT NULL,
    key           TEXT NOT NULL,
    value         TEXT NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id, key),
    FOREIGN KEY (workspace_id, experiment_id) REFERENCES experiments(workspace_id, experiment_id) ON DELETE CASCADE
);

CREATE TABLE runs (
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    run_id          TEXT NOT NULL,
    experiment_id   INTEGER NOT NULL,
    run_name        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    status          TEXT NOT NULL,
    start_time      INTEGER,
    end_time        INTEGER,
    lifecycle_stage TEXT NOT NULL,
    artifact_uri    TEXT NOT NULL,
    PRIMARY KEY (workspace_id, run_id)
);
CREATE INDEX runs_by_experiment ON runs (workspace_id, experiment_id, start_time);

CREATE TABLE run_params (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

CREATE TABLE run_tags (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

-- `value` is NULL for NaN (SQLite has no NaN); `is_nan` says so.
CREATE TABLE metrics (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    key          TEXT NOT NULL,
    step         INTEGER NOT NULL,
    timestamp    INTEGER NOT NULL,
    value        REAL,
    is_nan       INTEGER NOT NULL,
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
CREATE INDEX metrics_history ON metrics (workspace_id, run_id, key, step, timestamp);

CREATE TABLE latest_metrics (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    key          TEXT NOT NULL,
    step         INTEGER NOT NULL,
    timestamp    INTEGER NOT NULL,
    value        REAL,
    is_nan       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
CREATE INDEX latest_metrics_by_key ON latest_metrics (workspace_id, key, value);
