-- Tarn metadata, first schema. Portable SQL: the PostgreSQL migration differs only in types
-- (BIGINT for INTEGER, BYTEA for BLOB).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    spec         TEXT NOT NULL,
    storage_root TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Every workspace resource: computes, datastores, assets (one row per version), endpoints,
-- deployments (parent = their endpoint). Unversioned kinds use version ''.
CREATE TABLE resources (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    parent       TEXT NOT NULL,
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    spec         TEXT NOT NULL,
    archived     INTEGER NOT NULL DEFAULT 0,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind, parent, name, version)
);
CREATE INDEX resources_by_seq ON resources (workspace_id, kind, parent, name, seq);

-- Encrypted secrets. Plaintext never enters this table.
CREATE TABLE secrets (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    nonce        BLOB NOT NULL,
    ciphertext   BLOB NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    is_admin   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- Only the SHA-256 of a token is kept; the token itself is shown once.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    hash        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE role_assignments (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
