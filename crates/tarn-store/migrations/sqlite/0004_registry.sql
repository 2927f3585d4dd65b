-- The model registry's name-level facts (MLflow registered models). Versions are Tarn's model
-- assets (resources of kind `models`), so `tarn model` and MLflow see one registry.
CREATE TABLE registered_models (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL,
    tags              TEXT NOT NULL,
    aliases           TEXT NOT NULL,
    creation_time     INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
