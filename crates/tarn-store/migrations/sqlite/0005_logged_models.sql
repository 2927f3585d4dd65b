-- MLflow 3 logged models: what `mlflow.<flavor>.log_model` creates before it uploads the files.
CREATE TABLE logged_models (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    model_id          TEXT NOT NULL,
    experiment_id     INTEGER NOT NULL,
    name              TEXT NOT NULL,
    artifact_uri      TEXT NOT NULL,
    status            TEXT NOT NULL,
    model_type        TEXT NOT NULL,
    source_run_id     TEXT NOT NULL,
    creator_id        TEXT NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    tags              TEXT NOT NULL,
    params            TEXT NOT NULL,
    deleted           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, model_id)
);
CREATE INDEX logged_models_by_experiment ON logged_models (workspace_id, experiment_id, creation_time);
