-- Tarn metadata on PostgreSQL: the schema SQLite reaches through migrations/sqlite/0001-0010,
-- in one step. The tables, keys and indexes are the same; only types differ: BIGINT for
-- INTEGER, DOUBLE PRECISION for REAL, BYTEA for BLOB, and text compares byte by byte
-- (COLLATE "C") as it does in SQLite, so names sort and LIKE alike on both. A later change
-- to the schema is a migration in each folder.

CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);

CREATE TABLE workspaces (
    id           TEXT COLLATE "C" PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    spec         TEXT COLLATE "C" NOT NULL,
    storage_root TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE resources (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    kind         TEXT COLLATE "C" NOT NULL,
    parent       TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    version      TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    spec         TEXT COLLATE "C" NOT NULL,
    archived     BIGINT NOT NULL DEFAULT 0,
    created_by   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, kind, parent, name, version)
);
CREATE INDEX resources_by_seq ON resources (workspace_id, kind, parent, name, seq);

CREATE TABLE secrets (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    nonce        BYTEA NOT NULL,
    ciphertext   BYTEA NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE users (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    is_admin   BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash        TEXT COLLATE "C" NOT NULL UNIQUE,
    description TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    scope       TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX tokens_by_scope ON tokens (scope);

CREATE TABLE role_assignments (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE jobs (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    seq          BIGINT NOT NULL,
    parent       TEXT COLLATE "C" NOT NULL,
    job_type     TEXT COLLATE "C" NOT NULL,
    experiment   TEXT COLLATE "C" NOT NULL,
    compute      TEXT COLLATE "C" NOT NULL,
    priority     BIGINT NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    spec         TEXT COLLATE "C" NOT NULL,
    state        TEXT COLLATE "C" NOT NULL,
    archived     BIGINT NOT NULL DEFAULT 0,
    created_by   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);
CREATE INDEX jobs_by_seq ON jobs (workspace_id, seq);
CREATE INDEX jobs_active ON jobs (status, seq);
CREATE INDEX jobs_by_parent ON jobs (workspace_id, parent, seq);

CREATE TABLE experiments (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    experiment_id     BIGINT NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    artifact_location TEXT COLLATE "C" NOT NULL,
    lifecycle_stage   TEXT COLLATE "C" NOT NULL,
    creation_time     BIGINT NOT NULL,
    last_update_time  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id),
    UNIQUE (workspace_id, name)
);

CREATE TABLE experiment_tags (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    experiment_id BIGINT NOT NULL,
    key           TEXT COLLATE "C" NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, experiment_id, key),
    FOREIGN KEY (workspace_id, experiment_id) REFERENCES experiments(workspace_id, experiment_id) ON DELETE CASCADE
);

CREATE TABLE runs (
    workspace_id    TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    run_id          TEXT COLLATE "C" NOT NULL,
    experiment_id   BIGINT NOT NULL,
    run_name        TEXT COLLATE "C" NOT NULL,
    user_id         TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    start_time      BIGINT,
    end_time        BIGINT,
    lifecycle_stage TEXT COLLATE "C" NOT NULL,
    artifact_uri    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, run_id)
);
CREATE INDEX runs_by_experiment ON runs (workspace_id, experiment_id, start_time);

CREATE TABLE run_params (
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    value        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

CREATE TABLE run_tags (
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    value        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

CREATE TABLE latest_metrics (
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    step         BIGINT NOT NULL,
    timestamp    BIGINT NOT NULL,
    value        DOUBLE PRECISION,
    is_nan       BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, key),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
CREATE INDEX latest_metrics_by_key ON latest_metrics (workspace_id, key, value);

CREATE TABLE metric_chunks (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    points       BIGINT NOT NULL,
    data         TEXT COLLATE "C" NOT NULL,
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);
CREATE INDEX metric_chunks_by_key ON metric_chunks (workspace_id, run_id, key, id);

CREATE TABLE registered_models (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name              TEXT COLLATE "C" NOT NULL,
    description       TEXT COLLATE "C" NOT NULL,
    tags              TEXT COLLATE "C" NOT NULL,
    aliases           TEXT COLLATE "C" NOT NULL,
    creation_time     BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE logged_models (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    model_id          TEXT COLLATE "C" NOT NULL,
    experiment_id     BIGINT NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    artifact_uri      TEXT COLLATE "C" NOT NULL,
    status            TEXT COLLATE "C" NOT NULL,
    model_type        TEXT COLLATE "C" NOT NULL,
    source_run_id     TEXT COLLATE "C" NOT NULL,
    creator_id        TEXT COLLATE "C" NOT NULL,
    creation_time     BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    tags              TEXT COLLATE "C" NOT NULL,
    params            TEXT COLLATE "C" NOT NULL,
    deleted           BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (workspace_id, model_id)
);
CREATE INDEX logged_models_by_experiment ON logged_models (workspace_id, experiment_id, creation_time);

CREATE TABLE run_inputs (
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    digest       TEXT COLLATE "C" NOT NULL,
    dataset      TEXT COLLATE "C" NOT NULL,
    tags         TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (workspace_id, run_id, name, digest),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

CREATE TABLE compute_states (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT COLLATE "C" NOT NULL,
    desired      TEXT COLLATE "C" NOT NULL,
    reason       TEXT COLLATE "C" NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE run_models (
    workspace_id TEXT COLLATE "C" NOT NULL,
    run_id       TEXT COLLATE "C" NOT NULL,
    direction    TEXT COLLATE "C" NOT NULL,
    model_id     TEXT COLLATE "C" NOT NULL,
    step         BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, run_id, direction, model_id),
    FOREIGN KEY (workspace_id, run_id) REFERENCES runs(workspace_id, run_id) ON DELETE CASCADE
);

-- `rowid` is SQLite's implicit row number made explicit: metrics read back in logging order
-- with the same ORDER BY on both backends.
CREATE TABLE logged_model_metrics (
    rowid          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id   TEXT COLLATE "C" NOT NULL,
    model_id       TEXT COLLATE "C" NOT NULL,
    run_id         TEXT COLLATE "C" NOT NULL,
    key            TEXT COLLATE "C" NOT NULL,
    value          TEXT COLLATE "C",
    timestamp      BIGINT NOT NULL,
    step           BIGINT NOT NULL,
    dataset_name   TEXT COLLATE "C" NOT NULL,
    dataset_digest TEXT COLLATE "C" NOT NULL
);
CREATE INDEX logged_model_metrics_by_model ON logged_model_metrics (workspace_id, model_id);
