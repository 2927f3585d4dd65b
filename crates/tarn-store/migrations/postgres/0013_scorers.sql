-- MLflow 3's registered scorers (`Scorer.register`, `mlflow.genai.scorers.get_scorer`): each
-- version of a named scorer of an experiment, its serialized form as the client sent it.
-- `scorer_id` is the same for every version of a name.

CREATE TABLE scorer_versions (
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id BIGINT NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL,
    scorer_id     TEXT COLLATE "C" NOT NULL,
    serialized    TEXT COLLATE "C" NOT NULL,
    created       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id, name, version)
);
