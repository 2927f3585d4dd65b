-- Identity: see migrations/sqlite/0015_identity.sql.
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN kind TEXT COLLATE "C" NOT NULL DEFAULT 'user';
ALTER TABLE tokens ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE INDEX role_assignments_by_user ON role_assignments (user_id);
CREATE TABLE role_definitions (
    name       TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE users ADD COLUMN subject TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX users_by_subject ON users (subject) WHERE subject <> '';
CREATE TABLE group_role_assignments (
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    group_name   TEXT COLLATE "C" NOT NULL,
    role         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, group_name)
);
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT '';
