-- MLflow 3: the logged models a run used (`log_inputs` models, direction 'input') and produced
-- (`log_outputs`, direction 'output', at a step).
CREATE TABLE run_models (
    workspace_id TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    direction    TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    step         INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, run_id, direction, model_id),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

-- MLflow 3: a metric logged with a model_id is also that logged model's metric, with the run
-- and dataset it was measured on. The value is an exact round-trip string, NULL for NaN (as in
-- metric_chunks).
CREATE TABLE logged_model_metrics (
    workspace_id   TEXT NOT NULL,
    model_id       TEXT NOT NULL,
    run_id         TEXT NOT NULL,
    key            TEXT NOT NULL,
    value          TEXT,
    timestamp      INTEGER NOT NULL,
    step           INTEGER NOT NULL,
    dataset_name   TEXT NOT NULL,
    dataset_digest TEXT NOT NULL
);
CREATE INDEX logged_model_metrics_by_model ON logged_model_metrics (workspace_id, model_id);
