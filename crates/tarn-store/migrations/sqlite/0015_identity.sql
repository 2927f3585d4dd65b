-- Identity: users may be disabled (their tokens and sessions stop working at once) and are
-- people or service principals; tokens may expire (ms since the epoch, 0: never) and say when
-- they were last used (kept to the minute: see tarn-core's users.rs).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';
ALTER TABLE tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE INDEX role_assignments_by_user ON role_assignments (user_id);
-- Custom roles (`tarn role create -f role.yml`): Azure's role definition, as JSON (`actions`,
-- `not_actions`, `description`), by name. Assignments name a role by its name.
CREATE TABLE role_definitions (
    name       TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- Single sign-on: a user signed in through an OpenID provider is known by `subject` (the
-- issuer and its `sub`), with the groups its last sign-in claimed (JSON list); workspaces may
-- give a role to everyone in a group.
ALTER TABLE users ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN groups TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX users_by_subject ON users (subject) WHERE subject <> '';
CREATE TABLE group_role_assignments (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    group_name   TEXT NOT NULL,
    role         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, group_name)
);
-- How a studio session signed in: '' with a token, else the provider's name.
ALTER TABLE sessions ADD COLUMN via TEXT NOT NULL DEFAULT '';
