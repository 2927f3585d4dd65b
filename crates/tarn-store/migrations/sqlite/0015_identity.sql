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
