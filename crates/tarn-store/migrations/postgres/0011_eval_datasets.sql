-- MLflow 3 evaluation datasets (`mlflow.genai.datasets`): a dataset's facts as MLflow's JSON
-- (digest, tags, schema, profile, who made and changed it), the experiments it is linked to,
-- and its records (inputs, expectations, outputs, source, tags as MLflow's JSON), one per
-- distinct inputs (`input_hash`: a record with the same inputs is merged into it).

CREATE TABLE eval_datasets (
    workspace_id     TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    dataset_id       TEXT COLLATE "C" NOT NULL,
    name             TEXT COLLATE "C" NOT NULL,
    created_time     BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    content          TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, dataset_id)
);

CREATE TABLE eval_dataset_experiments (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    dataset_id    TEXT COLLATE "C" NOT NULL,
    experiment_id BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, dataset_id, experiment_id),
    FOREIGN KEY (workspace_id, dataset_id) REFERENCES eval_datasets(workspace_id, dataset_id) ON DELETE CASCADE
);

CREATE TABLE eval_dataset_records (
    workspace_id TEXT COLLATE "C" NOT NULL,
    dataset_id   TEXT COLLATE "C" NOT NULL,
    record_id    TEXT COLLATE "C" NOT NULL,
    input_hash   TEXT COLLATE "C" NOT NULL,
    created_time BIGINT NOT NULL,
    content      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, dataset_id, record_id),
    UNIQUE (workspace_id, dataset_id, input_hash),
    FOREIGN KEY (workspace_id, dataset_id) REFERENCES eval_datasets(workspace_id, dataset_id) ON DELETE CASCADE
);
