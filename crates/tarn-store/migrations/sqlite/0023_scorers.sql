-- MLflow 3's registered scorers (`Scorer.register`, `mlflow.genai.scorers.get_scorer`): each
-- version of a named scorer of an experiment, its serialized form as the client sent it.
-- `scorer_id` is the same for every version of a name.

CREATE TABLE scorer_versions (
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id INTEGER NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    scorer_id     TEXT NOT NULL,
    serialized    TEXT NOT NULL,
    created       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id, name, version)
);
